"""The desktop bundle's entry point: the `chatapp` command, frozen by PyInstaller."""

import sys

from chatapp.cli import main

if __name__ == "__main__":
    sys.exit(main())
