"""The Textual chat app: the only package that imports textual (pyproject.toml's import-linter
contracts check it). chatapp/cli.py starts it through commands.command_chat."""
