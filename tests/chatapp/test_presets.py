"""Chat presets (chatapp/presets.py) and `chatapp preset`, `chatapp run --preset / --thinking`:
the built-in personas, files checked key by key (a broken one is one notice, never a crash),
flags on the command line winning over the preset's values."""

from __future__ import annotations

import pytest

from chatapp import cli, commands
from chatapp.models.opening import OpenedModel
from chatapp.presets import (
    Preset,
    PresetError,
    find_preset,
    load_presets,
    presets_dir,
    remove_preset,
    save_preset,
)
from chatapp.settings import ChatDefaults
from model.inference.sampling import SamplingParams
from tests.helpers.fake_backend import FakeBackend


def write_preset(name: str, text: str):
    path = presets_dir() / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_the_built_in_personas_are_listed_read_only():
    presets = load_presets()
    assert presets.notices == []
    assert {"hamlet", "fool", "sonneteer"} <= set(presets.names())
    hamlet = find_preset("hamlet")
    assert hamlet.builtin and "Hamlet" in hamlet.chat.system_prompt
    with pytest.raises(PresetError, match="built-in preset"):
        save_preset(Preset("hamlet", ChatDefaults(temperature=0.1)))
    with pytest.raises(PresetError, match="built-in preset: it cannot be removed"):
        remove_preset("hamlet")


def test_a_saved_preset_reads_back_with_every_value_and_is_shown_with_the_built_ins():
    chat = ChatDefaults(system_prompt='Say "hi"\nthen stop.', temperature=0.3, top_k=7, seed=None, thinking="off")
    path = save_preset(Preset("mine", chat, model="shakespeare-chat", description="a test"))
    assert path == presets_dir() / "mine.toml"
    read = find_preset("mine")
    assert (read.chat, read.model, read.description, read.builtin) == (chat, "shakespeare-chat", "a test", False)
    assert "mine" in load_presets().names() and "hamlet" in load_presets().names()
    with pytest.raises(PresetError, match="exists"):
        save_preset(Preset("mine", chat), replace=False)
    remove_preset("mine")
    assert "mine" not in load_presets().names()


@pytest.mark.parametrize("name", ["", "../evil", "a b", "-x", "x" * 65])
def test_names_that_cannot_be_a_file_name_are_refused(name):
    with pytest.raises(PresetError, match="cannot be a preset's name"):
        save_preset(Preset(name))


@pytest.mark.parametrize(
    "text, named",
    [
        ("temperature = -1\n", "temperature = -1, but temperature must be"),
        ('top_k = "40"\n', 'top_k = "40", but it must be a number, without quotes'),
        ('thinking = "maybe"\n', 'thinking = "maybe", but it must be one of on, off, default'),
        ("system_prompt = 3\n", "system_prompt = 3, but it must be a string"),
        ("temprature = 0.5\n", "temprature is not a preset key"),
        ("temperature = \n", "is not valid TOML"),
    ],
)
def test_a_broken_preset_file_is_one_notice_naming_the_file_the_key_and_the_reason(text, named):
    write_preset("broken", text)
    presets = load_presets()
    assert "broken" not in presets.names()
    assert len(presets.notices) == 1
    notice = presets.notices[0]
    assert notice.startswith("presets/broken.toml: ") and named in notice and notice.endswith("left out")
    with pytest.raises(PresetError, match="presets/broken.toml"):
        find_preset("broken")


# --- the command line ---


@pytest.fixture
def fake_model(monkeypatch):
    """`chatapp run` on a fake backend; the backend and the model spec it was opened with are kept."""
    opened: dict = {}

    def open_model(spec, *args, **kwargs):
        opened["spec"] = spec
        opened["backend"] = FakeBackend(replies=[["Aye."]])
        return OpenedModel(opened["backend"], "fake")

    monkeypatch.setattr(commands, "open_model", open_model)
    return opened


def sent(fake_model) -> tuple[list, SamplingParams]:
    call = fake_model["backend"].calls[0]
    return [(m.role, m.content) for m in call["messages"]], call["params"]


def test_run_with_a_preset_takes_its_system_prompt_sampling_and_thinking(fake_model, capsys):
    save_preset(Preset("terse", ChatDefaults(system_prompt="Be terse.", temperature=0.2, top_k=9, thinking="on")))
    assert cli.main(["run", "hi", "--preset", "terse"]) == 0
    messages, params = sent(fake_model)
    assert messages == [("system", "Be terse."), ("user", "hi")]
    assert (params.temperature, params.top_k, params.thinking) == (0.2, 9, True)
    assert fake_model["spec"] is None  # the preset names no model
    assert capsys.readouterr().out == "Aye.\n"


def test_the_command_line_wins_over_the_preset(fake_model):
    save_preset(Preset("p", ChatDefaults(system_prompt="Be terse.", temperature=0.2, thinking="on"), model="m.gguf"))
    argv = ["run", "hi", "--preset", "p", "--system", "Be long.", "--temperature", "0.9", "--thinking", "default"]
    assert cli.main([*argv, "-m", "other"]) == 0
    messages, params = sent(fake_model)
    assert messages[0] == ("system", "Be long.")
    assert (params.temperature, params.thinking) == (0.9, None)
    assert fake_model["spec"] == "other"


def test_the_presets_model_is_opened_when_no_model_is_given(fake_model):
    save_preset(Preset("p", ChatDefaults(), model="shakespeare-chat"))
    assert cli.main(["run", "hi", "--preset", "p"]) == 0
    assert fake_model["spec"] == "shakespeare-chat"


@pytest.mark.parametrize("choice, expected", [("on", True), ("off", False), ("default", None)])
def test_run_thinking_reaches_the_sampling_parameters(fake_model, choice, expected):
    assert cli.main(["run", "hi", "--thinking", choice]) == 0
    assert sent(fake_model)[1].thinking is expected


def test_a_missing_or_broken_preset_is_a_one_line_error(fake_model, capsys):
    assert cli.main(["run", "hi", "--preset", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("chatapp: error: no preset named 'nope' (presets: ") and err.count("\n") == 1
    write_preset("bad", "top_p = 2\n")
    assert cli.main(["run", "hi", "--preset", "bad"]) == 1
    err = capsys.readouterr().err
    assert "presets/bad.toml: top_p = 2, but top_p must be in (0, 1]" in err and "Traceback" not in err
    assert "backend" not in fake_model  # nothing was opened


def test_preset_list_show_and_rm(capsys):
    save_preset(Preset("mine", ChatDefaults(temperature=0.4), description="my own"))
    write_preset("broken", "temperature = 'hot'\n")
    assert cli.main(["preset", "list"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert any(line.startswith("hamlet ") and "built-in" in line for line in lines)
    assert any(line.startswith("mine ") and "yours" in line and "temperature 0.4" in line for line in lines)
    assert err.startswith('note: presets/broken.toml: temperature = "hot"')
    assert cli.main(["preset", "show", "mine"]) == 0
    assert "temperature = 0.4" in capsys.readouterr().out
    assert cli.main(["preset", "rm", "mine"]) == 0
    assert cli.main(["preset", "show", "mine"]) == 1
    assert "no preset named 'mine'" in capsys.readouterr().err


def test_backend_and_the_new_options_have_help():
    subcommands = cli.build_parser()._subparsers._group_actions[0].choices
    for name in ("chat", "run", "bench", "serve"):
        help_text = " ".join(subcommands[name].format_help().split())
        assert "torch runs a model folder, llama.cpp a GGUF file" in help_text
    run_help = " ".join(subcommands["run"].format_help().split())
    assert "--preset NAME a chat preset" in run_help and "--thinking {on,off,default}" in run_help
    train_help = " ".join(subcommands["train"].format_help().split())
    assert "model size and schedule" in train_help  # train's --preset is still a model size


def test_chat_with_an_unknown_preset_is_one_line(capsys):
    assert cli.main(["chat", "--preset", "no-such-preset"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no-such-preset" in err
