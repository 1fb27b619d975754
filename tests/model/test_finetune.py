"""Fine-tuning: the loss mask, the JSONL reader, and `chatapp finetune` end to
end on the tiny model (kept to a few steps on a few conversations)."""

import json
import subprocess
import sys

import pytest
import torch

from chatapp.cli import main
from model.network.gpt import GPT, GPTConfig
from model.network.lora import ADAPTERS_FILE, load_adapters
from model.network.model_folder import load_model
from model.text.chat_format import Message, render_ids
from model.text.tokenizer import Tokenizer
from model.training.dataset import BUILTIN_TOKENIZER
from model.training.finetune_data import (
    ChatDataError,
    encode_conversation,
    fit_example,
    hold_out_last,
    make_batch,
    read_jsonl,
)


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.load(BUILTIN_TOKENIZER)


def test_the_mask_counts_only_assistant_text_and_its_end(tokenizer):
    messages = [
        Message("system", "You are Hamlet."),
        Message("user", "Who's there?"),
        Message("assistant", "Nay, answer me."),
        Message("user", "Long live the king!"),
        Message("assistant", "Bernardo?"),
    ]
    example = encode_conversation(messages, tokenizer)
    assert example.ids == render_ids(messages, tokenizer, add_generation_prompt=False)  # the one chat format
    special = tokenizer.special_ids
    learned = [t for t, m in zip(example.ids, example.mask) if m]
    expected = (
        tokenizer.encode("Nay, answer me.")
        + [tokenizer.end_of_turn_id]
        + tokenizer.encode("Bernardo?")
        + [tokenizer.end_of_turn_id]
    )
    assert learned == expected
    # written out by hand: marker, text, end for each message
    lengths = [len(tokenizer.encode(m.content)) for m in messages]
    hand_made = []
    for message, n in zip(messages, lengths):
        learn = int(message.role == "assistant")
        hand_made += [0] + [learn] * n + [learn]
    assert example.mask == hand_made
    assert sum(example.mask) == lengths[2] + 1 + lengths[4] + 1
    assert special["<|assistant|>"] in example.ids and all(
        m == 0 for t, m in zip(example.ids, example.mask) if t == special["<|assistant|>"]
    )


def test_the_masked_loss_is_the_mean_over_learned_targets(tokenizer):
    examples = [
        encode_conversation([Message("user", "Hail!"), Message("assistant", "Well met.")], tokenizer),
        encode_conversation(
            [Message("user", "What news?"), Message("assistant", "None, my lord, but that the world's grown honest.")],
            tokenizer,
        ),
    ]
    x, y, mask = make_batch(examples, pad_id=tokenizer.end_of_text_id)
    assert x.shape == y.shape == mask.shape == (2, max(len(e) for e in examples) - 1)
    assert mask[0, len(examples[0]) - 1 :].sum() == 0  # padding never counts
    assert torch.equal(mask[1], torch.tensor(examples[1].mask[1:], dtype=torch.float32))  # the mask of each target
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=64, n_layer=1, n_head=2, n_embd=16)).eval()
    logits, loss = model(x, y, loss_mask=mask)
    losses = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
    expected = losses[mask.flatten() == 1].mean()
    torch.testing.assert_close(loss, expected)


def test_fitting_a_conversation_to_the_context(tokenizer):
    long_prompt = " ".join(["word"] * 300)
    messages = [Message("user", long_prompt), Message("assistant", "Short.")]
    example = fit_example(messages, tokenizer, max_tokens=64, max_reply_tokens=32)
    assert len(example) <= 64 and example.ids[-1] == tokenizer.end_of_turn_id  # the prompt was cut from the front
    assert fit_example([Message("user", "Hi"), Message("assistant", long_prompt)], tokenizer, 512, 32) is None
    turns = [
        Message("user", "first " * 30),
        Message("assistant", "one " * 30),
        Message("user", "Second?"),
        Message("assistant", "Two."),
    ]
    kept = fit_example(turns, tokenizer, max_tokens=40, max_reply_tokens=64)
    assert kept.ids == encode_conversation(turns[2:], tokenizer).ids  # the oldest exchange dropped


def write_lines(path, lines):
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def conversation(number: int) -> dict:
    return {
        "messages": [
            {"role": "system", "content": "You are Horatio."},
            {"role": "user", "content": f"What hour now? ({number})"},
            {"role": "assistant", "content": "I think it lacks of twelve."},
        ]
    }


def test_jsonl_problems_name_their_line(tmp_path):
    path = write_lines(
        tmp_path / "chats.jsonl",
        [
            conversation(1),
            "{not json",
            {"messages": [{"role": "bot", "content": "hi"}]},
            "",
            {"messages": [{"role": "user", "content": "hi"}]},
            {
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "system", "content": "late"},
                    {"role": "assistant", "content": "x"},
                ]
            },
            {"messages": [{"role": "assistant", "content": 5}]},
            ["not", "an", "object"],
        ],
    )
    with pytest.raises(ChatDataError) as error:
        read_jsonl(path)
    message = str(error.value)
    assert message.startswith(f"{path}:2: not valid JSON")
    assert "(and 5 more problem(s))" in message
    problems = {
        3: "\"role\" must be one of system, user, assistant, not 'bot'",
        5: "no assistant message",
        6: "message 2: a system message may only come first",
        7: '"content" must be a string',
        8: 'expected an object with a "messages" list',
    }
    for line, problem in problems.items():
        lines = path.read_text().splitlines()
        single = write_lines(tmp_path / f"line{line}.jsonl", [lines[0]] * (line - 1) + [lines[line - 1]])
        with pytest.raises(ChatDataError, match=f":{line}: .*{problem[:20]}"):
            read_jsonl(single)


def test_jsonl_reads_conversations_and_holds_out_the_last_five_percent(tmp_path):
    with pytest.raises(ChatDataError, match="no conversations"):
        read_jsonl(write_lines(tmp_path / "empty.jsonl", [""]))
    with pytest.raises(ChatDataError, match="no such file"):
        read_jsonl(tmp_path / "missing.jsonl")
    conversations = read_jsonl(write_lines(tmp_path / "chats.jsonl", [conversation(i) for i in range(40)]))
    assert conversations[0][1] == Message("user", "What hour now? (0)")
    train, validation = hold_out_last(conversations)
    assert len(train) == 38 and validation == conversations[38:]
    assert hold_out_last(conversations[:19]) == (conversations[:19], [])


# --- `chatapp finetune` end to end on the tiny model ---


@pytest.fixture(scope="module")
def chats(tmp_path_factory):
    return write_lines(tmp_path_factory.mktemp("data") / "chats.jsonl", [conversation(i) for i in range(24)])


def finetune(capsys, *args) -> tuple[int, str]:
    code = main(["finetune", *map(str, args), "--device", "cpu", "--batch-size", "2"])
    return code, capsys.readouterr().err


def test_finetune_lora_end_to_end(tiny_model_dir, chats, tmp_path, capsys):
    out = tmp_path / "chat"
    code, err = finetune(
        capsys,
        tiny_model_dir,
        "--out",
        out,
        "--data",
        chats,
        "--steps",
        3,
        "--lora-rank",
        4,
        "--lora-targets",
        "qkv,down",
    )
    assert code == 0, err
    # 2 blocks x rank 4 x ((64 in + 192 out) + (256 in + 64 out)), and 4 chat tokens x 64
    assert "trainable parameters: 4,864 of" in err
    model, tokenizer, config = load_model(out)
    training = config["training"]
    assert training["method"] == "lora" and training["lora"]["targets"] == ["qkv", "down"]
    assert training["data"]["train_conversations"] == 23 and training["data"]["validation_conversations"] == 1
    assert 0.01 < training["trainable_fraction"] < 0.02 and training["validation"]["loss"] > 0
    assert (out / "history.csv").is_file() and (out / ADAPTERS_FILE).is_file()
    # the merged model is the base model with the saved adapters on top
    base, _, _ = load_model(tiny_model_dir)
    load_adapters(base, out / ADAPTERS_FILE)
    x = torch.tensor([render_ids([Message("user", "What hour now?")], tokenizer)])
    torch.testing.assert_close(model(x)[0], base.eval()(x)[0], atol=1e-5, rtol=0)
    assert not torch.allclose(model(x)[0], load_model(tiny_model_dir)[0](x)[0])  # it learned something


def test_finetune_resumes_exactly(tiny_model_dir, chats, tmp_path, capsys):
    from safetensors.torch import load_file

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert finetune(capsys, tiny_model_dir, "--out", straight, "--data", chats, "--steps", 4, "--lora-rank", 2)[0] == 0
    assert finetune(capsys, tiny_model_dir, "--out", resumed, "--data", chats, "--steps", 2, "--lora-rank", 2)[0] == 0
    code, err = finetune(
        capsys, tiny_model_dir, "--out", resumed, "--resume", "--steps", 4
    )  # the rest from the checkpoint
    assert code == 0, err
    a, b = load_file(str(straight / ADAPTERS_FILE)), load_file(str(resumed / ADAPTERS_FILE))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_full_finetune(tiny_model_dir, chats, tmp_path, capsys):
    code, err = finetune(capsys, tiny_model_dir, "--out", tmp_path / "full", "--data", chats, "--steps", 2, "--full")
    assert code == 0, err
    assert "full fine-tuning" in err and "(100.00%)" in err
    assert not (tmp_path / "full" / ADAPTERS_FILE).exists()


@pytest.mark.slow
def test_saved_adapters_load_as_the_merged_model(tiny_model_dir, chats, tmp_path, capsys):
    run = ["--data", chats, "--steps", 3, "--lora-rank", 4]
    assert finetune(capsys, tiny_model_dir, "--out", tmp_path / "merged", *run)[0] == 0
    code, err = finetune(capsys, tiny_model_dir, "--out", tmp_path / "adapters", *run, "--save-adapters-only")
    assert code == 0, err
    assert f"adapters written to {tmp_path / 'adapters'}" in err
    written = {p.name for p in (tmp_path / "adapters").iterdir()}
    assert {ADAPTERS_FILE, "config.json", "history.csv"} <= written and not {
        "model.safetensors",
        "tokenizer.tiktoken",
    } & written
    adapted, tokenizer, config = load_model(tmp_path / "adapters")
    merged, _, merged_config = load_model(tmp_path / "merged")
    assert config["adapters"]["base"] == str(tiny_model_dir.resolve())
    assert config["training"]["validation"] == merged_config["training"]["validation"]
    x = torch.tensor([render_ids([Message("user", "What hour now?")], tokenizer)])
    torch.testing.assert_close(adapted(x)[0], merged(x)[0], atol=1e-5, rtol=0)
    assert not torch.allclose(adapted(x)[0], load_model(tiny_model_dir)[0](x)[0])  # not the base model

    ran = subprocess.run(
        [
            sys.executable,
            "-m",
            "chatapp",
            "run",
            "--model",
            str(tmp_path / "adapters"),
            "--device",
            "cpu",
            "--max-tokens",
            "4",
            "--seed",
            "1",
            "--json",
            "Hail!",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ran.returncode == 0 and json.loads(ran.stdout)["model"] == "adapters", ran.stderr
    assert main(["eval", str(tmp_path / "adapters"), "--device", "cpu", "--json"]) == 0
    adapted_loss = json.loads(capsys.readouterr().out)
    assert main(["eval", str(tmp_path / "merged"), "--device", "cpu", "--json"]) == 0
    merged_loss = json.loads(capsys.readouterr().out)
    assert adapted_loss["nats_per_token"] == pytest.approx(merged_loss["nats_per_token"], abs=1e-5)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--lora-targets", "qkv,lm_head"], "LoRA targets must be some of"),
        (["--full", "--save-adapters-only"], "needs LoRA"),
        (["--resume"], "no checkpoint"),
    ],
)
def test_finetune_refuses_bad_options(tiny_model_dir, chats, tmp_path, capsys, extra, message):
    code, err = finetune(capsys, tiny_model_dir, "--out", tmp_path / "out", "--data", chats, "--steps", 1, *extra)
    assert code == 1 and message in err and "Traceback" not in err


def test_finetune_reports_the_bad_line(tiny_model_dir, tmp_path, capsys):
    bad = write_lines(tmp_path / "bad.jsonl", [conversation(0), {"messages": [{"role": "user"}]}])
    code, err = finetune(capsys, tiny_model_dir, "--out", tmp_path / "out", "--data", bad)
    assert code == 1 and f'{bad}:2: message 1: "content" must be a string' in err
