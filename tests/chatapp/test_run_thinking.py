"""`chatapp run` with a reasoning model: the thinking is printed dimmed before the answer on a
terminal, on stderr when stdout is piped (stdout is then the answer alone), and `--json` has it
apart as "thinking"."""

from __future__ import annotations

import io
import json

import pytest

from chatapp import commands
from chatapp.cli import build_parser
from chatapp.models.opening import OpenedModel
from model.inference.backend import THINKING
from tests.helpers.fake_backend import FakeBackend

THOUGHT = [(THINKING, "Two and"), (THINKING, " two."), "It is", " 4."]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def fake_model(monkeypatch):
    def opened(*args, **kwargs):
        return OpenedModel(FakeBackend(replies=[THOUGHT]), "fake")

    monkeypatch.setattr(commands, "open_model", opened)


def run(*argv: str) -> int:
    return commands.command_run(build_parser().parse_args(["run", *argv]))


def test_piped_stdout_gets_the_answer_alone_and_stderr_the_thinking(fake_model, monkeypatch):
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.stderr", err)
    assert run("2+2?") == 0
    assert out.getvalue() == "It is 4.\n"
    assert err.getvalue() == "Two and two.\n"


def test_a_terminal_shows_the_thinking_dimmed_before_the_answer(fake_model, monkeypatch):
    out = Terminal()
    monkeypatch.setattr("sys.stdout", out)
    assert run("2+2?") == 0
    dim, reset = commands.ThinkingPrinter.DIM, commands.ThinkingPrinter.RESET
    assert out.getvalue() == f"{dim}Two and{reset}{dim} two.{reset}\n\nIt is 4.\n"


def test_json_has_the_thinking_apart(fake_model, monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    assert run("2+2?", "--json") == 0
    data = json.loads(out.getvalue())
    assert (data["text"], data["thinking"], data["thinking_tokens"]) == ("It is 4.", "Two and two.", 2)
