"""The app's terminal closes and no SIGHUP reaches the app (it runs under `make chat`, whose make got
the signal; here: the terminal is not its controlling one): it quits within seconds instead of reading
an endless end of file at full speed (chatapp/tui/terminal_watch.py)."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time

from tests.helpers.paths import BUILTIN_DIR, ROOT

GGUF = BUILTIN_DIR / "shakespeare-chat-q8_0.gguf"


def read_until(fd: int, wanted: bytes, seconds: float) -> bytes:
    """What the app draws on the terminal, until `wanted` is among it (at most `seconds`)."""
    drawn, deadline = b"", time.monotonic() + seconds
    while wanted not in drawn and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                drawn += os.read(fd, 65536)
            except OSError:
                break
    return drawn


def test_the_app_quits_when_its_terminal_closes_without_a_sighup(tmp_path):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    env = dict(os.environ, CHATAPP_HOME=str(tmp_path), TERM="xterm-256color", CHATAPP_COMPILE="off")
    app = subprocess.Popen(
        [sys.executable, "-m", "chatapp", "chat", str(GGUF)],
        stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, env=env, start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    try:
        assert b"shakespeare-chat" in read_until(master, b"shakespeare-chat", 60)  # its header: the app runs
        os.close(master)  # the terminal hangs up; a new session has no controlling terminal to send SIGHUP
        app.wait(timeout=30)  # a liveness bound: the app looks once a second
        assert app.returncode == 0
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
