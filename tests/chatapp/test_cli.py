import json
import subprocess
import sys

import pytest

from chatapp import __version__
from chatapp.cli import build_parser, main
from tests.helpers.fake_backend import FakeBackend


def chatapp(*args, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", "chatapp", *args], capture_output=True, text=True, input=stdin, timeout=600
    )


def test_version_and_help():
    assert chatapp("--version").stdout.strip() == f"chatapp {__version__}"
    assert "run" in chatapp("--help").stdout


def test_every_subcommand_has_help():
    choices = build_parser()._subparsers._group_actions[0].choices
    for name in choices:
        result = chatapp(name, "--help")
        assert result.returncode == 0 and "usage: chatapp " + name in result.stdout


def test_options_and_their_help_come_from_where_the_facts_live():
    from chatapp.commands import sampling_from_args
    from chatapp.models.opening import BACKEND_CHOICES
    from model.inference.sampling import SamplingParams
    from model.training.presets import PRESETS
    from quant.gguf_layout import DEFAULT_TYPE, EXPORT_TYPES
    from quant.llama_load import FOREIGN_MAX_CONTEXT

    parser = build_parser()
    assert sampling_from_args(parser.parse_args(["run", "hi"])) == SamplingParams()
    given = sampling_from_args(
        parser.parse_args(["run", "hi", "--repeat-penalty", "1.3", "--top-k", "5", "--seed", "7"])
    )
    assert given == SamplingParams(repetition_penalty=1.3, top_k=5, seed=7)
    commands = parser._subparsers._group_actions[0].choices
    run_help = commands["run"].format_help()
    assert f"0 is greedy (default {SamplingParams.temperature})" in run_help
    assert f"longest reply in tokens (default {SamplingParams.max_tokens})" in run_help
    assert f"at most {FOREIGN_MAX_CONTEXT})" in " ".join(run_help.split())
    for name in ("chat", "run", "bench"):
        assert f"{{{','.join(BACKEND_CHOICES)}}}" in commands[name].format_help()
    train_help = " ".join(commands["train"].format_help().split())
    assert all(
        f"{name}: {preset.n_layer} layers x {preset.n_embd} wide" in train_help for name, preset in PRESETS.items()
    )
    from chatapp.training_flags import FINETUNE_OPTIONS, TRAIN_OPTIONS, option_values
    from model.training.options import FinetuneOptions, TrainOptions

    assert TrainOptions(**option_values(parser.parse_args(["train", "--out", "x"]), TRAIN_OPTIONS)) == TrainOptions("x")
    given = parser.parse_args(["finetune", "base", "--out", "x", "--lr", "0.01", "--full", "--lora-rank", "4"])
    assert FinetuneOptions("base", **option_values(given, FINETUNE_OPTIONS)) == FinetuneOptions(
        "base", "x", learning_rate=0.01, full=True, lora_rank=4
    )
    assert f"; default {TrainOptions.preset})" in train_help
    finetune_help = " ".join(commands["finetune"].format_help().split())
    assert f"rank r of the adapters (default {FinetuneOptions.lora_rank})" in finetune_help
    assert f"conversations per step (default {FinetuneOptions.batch_size})" in finetune_help
    export_help = " ".join(commands["export"].format_help().split())
    assert f"{', '.join(EXPORT_TYPES)} (default {DEFAULT_TYPE})" in export_help


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["train", "--out", "x", "--preset", "huge"],
            "argument --preset: invalid choice: 'huge' (choose from 'tiny', 'cpu', 'gpu')",
        ),
        (["export", "--type", "q3_k"], "argument --type: invalid choice: 'q3_k'"),
        (["run", "--backend", "onnx", "hi"], "argument --backend: invalid choice: 'onnx'"),
    ],
)
def test_bad_choices_are_refused_by_the_parser(args, message, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(args)
    assert message in capsys.readouterr().err


def test_run_streams_a_reply_from_stdin_with_json_stats(tiny_model_dir):
    result = chatapp(
        "run", "--model", str(tiny_model_dir), "--seed", "1", "--max-tokens", "12", "--json", stdin="What is love?\n"
    )
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["reason"] in ("stop", "length") and stats["completion_tokens"] <= 12 and stats["prompt_tokens"] == 7


def test_run_raw_continues_text(tiny_model_dir):
    result = chatapp("run", "--model", str(tiny_model_dir), "--raw", "--seed", "1", "--max-tokens", "8", "ROMEO.")
    assert result.returncode == 0 and result.stdout.strip()


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--model", "no-such-model", "hi"], "no model named 'no-such-model'"),
        (["run", "--temperature", "-1", "hi"], "temperature must be a finite number >= 0"),
        (["run", "--top-p", "0", "hi"], "top_p must be in (0, 1]"),
        (["eval", "/"], "not a model folder"),
    ],
)
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


def test_run_ends_the_reply_line_before_its_notes_which_go_to_stderr(monkeypatch, capsys):
    from chatapp import commands
    from chatapp.models.opening import OpenedModel
    from model.inference.backend import Finished, TextPiece

    class NotingBackend(FakeBackend):
        def chat(self, messages, params, reserve=None, inspect=None, continue_last=False):
            yield TextPiece("Good morrow.", [1])
            yield Finished("length", 3, 1, 0.01, 100.0, notices=["2 earlier messages no longer fit"])

    monkeypatch.setattr(commands, "open_model", lambda *args, **kwargs: OpenedModel(NotingBackend(), "noting"))
    assert main(["run", "Hail"]) == 0
    out, err = capsys.readouterr()
    assert out == "Good morrow.\n" and err == "note: 2 earlier messages no longer fit\n"
