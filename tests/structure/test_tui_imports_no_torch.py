"""The app's import stays free of torch, so a GGUF model never loads it."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers.paths import ROOT  # noqa: E402


def test_importing_the_app_and_reading_history_imports_no_torch():
    code = (
        "import sys; import chatapp.tui.app, chatapp.history, chatapp.settings, chatapp.models.discovery; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
