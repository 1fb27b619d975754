"""`chatapp bench --parallel N[,N...]` (chatapp/bench.py): the built-in model on N slots for each N, N
replies at once, on both engines (its Q8_0 GGUF on llama.cpp, its folder on torch); the table lists
each N, --json has the numbers, and bad input is one line.

The model is named, not given by path, so that no spare llama.cpp worker starts beside the slots."""

from __future__ import annotations

import json

import pytest

from chatapp.bench import parse_parallel_counts
from chatapp.cli import main

MODEL = "shakespeare-chat-q8_0"  # chatapp/builtin/shakespeare-chat-q8_0.gguf
MODEL_NAME = "shakespeare-chat"  # the name the file gives itself, and the model folder's
ON_ENGINE = {"llama.cpp": MODEL, "torch": MODEL_NAME}  # the model each engine runs
GEN_TOKENS = 4
SMALL = ["--prompt-tokens", "8", "--gen-tokens", str(GEN_TOKENS), "--runs", "1"]


@pytest.mark.parametrize("engine", ON_ENGINE)
def test_the_table_lists_each_n(capsys, engine):
    assert main(["bench", ON_ENGINE[engine], "--parallel", "1,2,4", *SMALL]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{engine} slots on {MODEL_NAME}: prompt 8 tokens, generate {GEN_TOKENS} per reply")
    assert "aggregate tok/s" in lines[1] and "per reply tok/s" in lines[1] and "first token" in lines[1]
    assert [int(line.split()[0]) for line in lines[2:]] == [1, 2, 4]
    for line in lines[2:]:
        assert float(line.split()[1]) > 0 and line.endswith("ms")


@pytest.mark.parametrize("engine", ON_ENGINE)
def test_the_json_has_every_replys_tokens(capsys, engine):
    assert main(["bench", ON_ENGINE[engine], "--parallel", "1,3", "--json", *SMALL]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == MODEL_NAME and result["backend"] == f"{engine} slots"
    assert result["prompt_tokens"] == 8 and result["gen_tokens"] == GEN_TOKENS
    assert [run["slots"] for run in result["parallel"]] == [1, 3]
    for run in result["parallel"]:
        count = run["slots"]
        assert run["reply_tokens"] == [GEN_TOKENS] * count  # no end token stops a bench reply
        assert run["completion_tokens"] == count * GEN_TOKENS
        assert run["aggregate_tokens_per_s"] == pytest.approx(run["completion_tokens"] / run["wall_s"])
        assert run["reply_tokens_per_s"] > 0
        assert 0 < run["first_token_s"]["median"] <= run["first_token_s"]["max"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["shakespeare-chat", "--parallel", "2", "--backend", "llama.cpp"], "a model folder, on the torch engine"),
        (["endpoint:http://127.0.0.1:9#m", "--parallel", "2"], "--parallel benches a local model"),
        ([MODEL, "--parallel", "2", "--backend", "torch"], "--parallel runs a GGUF file on the llama.cpp engine"),
        ([MODEL, "--parallel", "1,x"], "--parallel takes whole numbers from 1 to 64"),
        ([MODEL, "--parallel", "0"], "--parallel takes whole numbers from 1 to 64"),
        ([MODEL, "--parallel", "2", "--prompt-tokens", "4000"], "exceed a slot's context"),
        ([MODEL, "--parallel", "2", "--gen-tokens", "0"], "must be at least 1 with --parallel"),
    ],
)
def test_bad_input_is_one_line(capsys, arguments, message):
    assert main(["bench", *arguments]) != 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("chatapp: error: ")
    assert message in captured.err


def test_parallel_counts_keep_their_order_once_each():
    assert parse_parallel_counts("1, 2,8,2") == [1, 2, 8]
    with pytest.raises(ValueError, match="got '65'"):
        parse_parallel_counts("65")
