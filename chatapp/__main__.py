"""`python -m chatapp`: the `chatapp` command.

`python -m` puts the current folder first on sys.path, so a folder holding a `model.py` or a `quant/`
would stand in for chatapp's own top-level packages `model` and `quant`. The current folder leaves
sys.path before anything imports them, unless chatapp itself comes from it (a clone's root, where
`model` and `quant` are the real ones).
"""

import os
import sys
from pathlib import Path


def drop_current_folder_from_path() -> None:
    if not sys.path or os.path.abspath(sys.path[0] or os.curdir) != os.getcwd():
        return
    chatapp_root = Path(__file__).resolve().parent.parent
    if Path(os.getcwd()).resolve() != chatapp_root:
        del sys.path[0]


drop_current_folder_from_path()

from chatapp.launch import main  # noqa: E402 - after the path is fixed

raise SystemExit(main())
