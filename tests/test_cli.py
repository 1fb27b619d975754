import json
import subprocess
import sys

import pytest

from chatapp import __version__
from chatapp.cli import build_parser




def chatapp(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "chatapp", *args], capture_output=True, text=True, input=stdin, timeout=600)


def test_version_and_help():
    assert chatapp("--version").stdout.strip() == f"chatapp {__version__}"
    assert "run" in chatapp("--help").stdout


def test_every_subcommand_has_help():
    choices = build_parser()._subparsers._group_actions[0].choices
    for name in choices:
        result = chatapp(name, "--help")
        assert result.returncode == 0 and "usage: chatapp " + name in result.stdout


def test_run_streams_a_reply_from_stdin_with_json_stats(tiny_model_dir):
    result = chatapp("run", "--model", str(tiny_model_dir), "--seed", "1", "--max-tokens", "12", "--json", stdin="What is love?\n")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["reason"] in ("stop", "length") and stats["completion_tokens"] <= 12 and stats["prompt_tokens"] == 7


def test_run_raw_continues_text(tiny_model_dir):
    result = chatapp("run", "--model", str(tiny_model_dir), "--raw", "--seed", "1", "--max-tokens", "8", "ROMEO.")
    assert result.returncode == 0 and result.stdout.strip()


@pytest.mark.parametrize("args, message", [
    (["run", "--model", "no-such-model", "hi"], "no model named 'no-such-model'"),
    (["run", "--temperature", "-1", "hi"], "temperature must be a finite number >= 0"),
    (["run", "--top-p", "0", "hi"], "top_p must be in (0, 1]"),
    (["eval", "/"], "not a model folder"),
])
def test_errors_are_one_line_without_traceback(args, message):
    result = chatapp(*args)
    assert result.returncode == 1
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_models_lists_the_built_in_models_and_marks_the_default():
    models = json.loads(chatapp("models", "--json").stdout)
    assert {"shakespeare-base", "shakespeare-chat", "shakespeare-chat-q8_0"} <= {m["name"] for m in models}
    assert [m["name"] for m in models if m["default"]] == ["shakespeare-chat"]
    table = chatapp("models").stdout.splitlines()
    assert [line.split()[1] for line in table if line.startswith("* shakespeare")] == ["shakespeare-chat"]
