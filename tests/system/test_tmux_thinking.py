"""The real `chatapp` in tmux on a reasoning model's file: a small GGUF with Qwen3's real template and
tokens (tests/helpers/foreign_gguf.py). Its random weights never close a think block, so this checks
what a person sees around it: the settings panel (F2) offers the template's thinking switch, and a
reply streams and finishes with thinking off. Needs tmux (see test_tmux_session.py)."""

from __future__ import annotations

import shutil
import time

import pytest

from tests.helpers.foreign_gguf import write_foreign_gguf
from tests.system.test_tmux_session import LAUNCH, Tmux

SWITCH = "the template switch enable_thinking"


def switch_shown(screen: str) -> bool:
    """The thinking row and its value (the settings file's "off") below it."""
    return SWITCH in screen and "off" in screen.split(SWITCH, 1)[1]


def tab_until_the_switch_shows(tmux: Tmux, tabs: int = 30) -> str:
    """Tab through the settings panel (it scrolls to the focused field) until the switch shows."""
    for _ in range(tabs):
        screen = tmux.screen()
        if switch_shown(screen):
            return screen
        tmux.keys("Tab")
        time.sleep(0.3)
    raise AssertionError(f"the thinking switch never showed:\n{tmux.screen()}")


@pytest.mark.slow
def test_a_qwen3_file_offers_the_thinking_switch_and_replies(tmp_path):
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed: this test needs Debian's tmux (`apt-get install tmux`)")
    model = write_foreign_gguf(tmp_path / "toy-qwen3.gguf", "qwen3")
    home = tmp_path / "home"
    (home / "config").mkdir(parents=True)
    settings = '[chat]\nmax_tokens = 12\nseed = 1\nthinking = "off"\n'
    (home / "config" / "settings.toml").write_text(settings)
    tmux = Tmux(home)
    try:
        tmux.start(LAUNCH + [str(model)])
        tmux.wait_for("context", timeout=120)  # the model has loaded when the context bar shows it
        tmux.keys("F2")
        tmux.wait_for("Conversation settings")
        tab_until_the_switch_shows(tmux)
        tmux.keys("C-s")  # saved as it was (Escape alone waits on tmux's escape-time)
        deadline = time.monotonic() + 20
        while "Conversation settings" in tmux.screen():
            assert time.monotonic() < deadline, "the settings panel did not close"
            time.sleep(0.1)
        tmux.keys("-l", "Hello from tmux")
        tmux.keys("Enter")
        screen = tmux.wait_for("finish:", timeout=120)  # the reply streamed and finished
        assert "Hello from tmux" in screen
        tmux.keys("C-q")
        tmux.wait_exit()
    finally:
        tmux.kill_server()
