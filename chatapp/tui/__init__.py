"""The Textual chat app. The only package, with chatapp/cli.py, that imports textual."""
