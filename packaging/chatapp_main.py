"""The desktop bundle's entry point: the `chatapp` command, frozen by PyInstaller."""

import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()  # the llama.cpp worker process starts this program again
    from chatapp.launch import main

    sys.exit(main())
