"""The real `chatapp` in a real terminal (tmux): type, read the streamed reply, quit, start again.

Needs Debian's tmux (apt package `tmux`), installed by the test set-up. A
missing tmux fails this test with a clear message: it is never skipped.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers.paths import ROOT  # noqa: E402

LAUNCH = [sys.executable, "-m", "chatapp", "chat"]


class Tmux:
    def __init__(self, home: Path):
        self.socket = f"chatapp-test-{uuid.uuid4().hex[:8]}"
        self.home = home

    def run(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True).stdout

    def start(self, command: list[str]) -> float:
        env = f"CHATAPP_HOME={shlex.quote(str(self.home))} TERM=xterm-256color COLORTERM=truecolor"
        self.run(
            "new-session",
            "-d",
            "-s",
            "app",
            "-x",
            "140",
            "-y",
            "40",
            "-c",
            str(ROOT),
            f"env {env} {shlex.join(command)}",
        )
        return time.monotonic()

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "app")

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared on the screen:\n{self.screen()}")

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "app", *keys)

    def wait_exit(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if subprocess.run(["tmux", "-L", self.socket, "has-session", "-t", "app"], capture_output=True).returncode:
                return
            time.sleep(0.1)
        raise AssertionError(f"the app did not quit:\n{self.screen()}")

    def kill_server(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


@pytest.mark.slow
def test_chat_in_tmux_then_find_the_conversation_after_a_restart(tmp_path, tiny_model_dir):
    if shutil.which("tmux") is None:
        pytest.fail(
            "tmux is not installed: this smoke test needs Debian's tmux (`apt-get install tmux`, "
            "done by the test set-up); it is never skipped"
        )
    home = tmp_path / "home"
    (home / "config").mkdir(parents=True)
    (home / "config" / "settings.toml").write_text("[chat]\nmax_tokens = 24\nseed = 1\n")  # a short reply
    tmux = Tmux(home)
    command = LAUNCH + [str(tiny_model_dir), "--device", "cpu"]
    try:
        started = tmux.start(command)
        tmux.wait_for("Conversations")
        first_frame_s = time.monotonic() - started
        tmux.wait_for("context")  # the model has loaded when the context bar shows it
        tmux.keys("-l", "Good morrow from tmux")
        tmux.keys("Enter")
        screen = tmux.wait_for("finish:", timeout=120)  # the reply streamed and finished
        assert "Good morrow from tmux" in screen
        assert "tokens" in screen
        tmux.keys("C-q")
        tmux.wait_exit()

        tmux.start(command)
        screen = tmux.wait_for("Good morrow from tmux")
        assert "finish:" in tmux.wait_for("finish:")
        tmux.keys("C-q")
        tmux.wait_exit()
    finally:
        tmux.kill_server()
    print(f"launch to first frame: {first_frame_s:.2f} s")
