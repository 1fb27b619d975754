"""A Ctrl+C in the first milliseconds of any command ends it quietly: no traceback, however early
(issue 25, item 11: imports ran before cli.main's handling was in place)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from tests.helpers.paths import ROOT

INTERRUPTED_WHILE_IMPORTING = """
import sys

class Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == "chatapp.cli":
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, Interrupt())
from chatapp.launch import main
sys.exit(main(["--version"]))
"""


def test_an_interrupt_while_the_command_line_imports_exits_130_in_one_line():
    result = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_WHILE_IMPORTING], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 130
    assert result.stderr.strip() == "interrupted"


def test_ctrl_c_while_a_command_starts_prints_no_traceback(tmp_path):
    """Sent once the entry point is imported (before it, CPython's own start and the console script's
    one import line, a Ctrl+C is CPython's to report: "Fatal Python error: init_import_site" during
    its `site` import), then at several points while chatapp imports the rest and loads the model."""
    env = {"CHATAPP_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "CHATAPP_COMPILE": "off"}
    command = [sys.executable, "-c", "import sys; from chatapp.launch import main; print(flush=True); sys.exit(main())"]
    for after_ms in (0, 5, 15, 30, 60, 120, 250):
        child = subprocess.Popen(
            command + ["run", "--max-tokens", "50", "Good morrow"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        assert child.stdout.readline() == "\n"  # chatapp.launch is imported
        time.sleep(after_ms / 1000)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=120)
        assert "Traceback" not in err, (after_ms, err)
        assert child.returncode in (130, 0), (after_ms, child.returncode, err)  # 0: the reply was already done


def test_ctrl_c_between_importing_the_entry_point_and_calling_it_exits_130_quietly():
    """The console script's `sys.exit(main())` comes a moment after its import: CI once sent the
    Ctrl+C exactly there. The pause below holds that moment open."""
    script = "import sys, time; from chatapp.launch import main; print(flush=True); time.sleep(30); sys.exit(main())"
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert child.stdout.readline() == "\n"
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130
    assert err.strip() == "interrupted"
