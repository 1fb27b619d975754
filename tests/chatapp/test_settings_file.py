"""The settings TOML: created with comments, read with tomllib, bad values refused."""

from __future__ import annotations

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package
    import tomli as tomllib

import pytest

from chatapp.settings import (
    SAMPLING_FIELDS,
    ChatDefaults,
    Settings,
    SettingsError,
    allowed_values,
    check_field,
    load_settings,
    parse_settings,
    render_settings,
    save_chat_defaults,
    save_value,
    settings_path,
)


def test_the_file_is_created_with_comments_and_the_defaults(tmp_path):
    settings = load_settings()
    path = settings_path()
    assert str(path).startswith(str(tmp_path)) and path.exists()
    text = path.read_text()
    assert text.count("#") > 10 and "0 is greedy" in text
    assert settings.chat == ChatDefaults() and settings.notices == []
    assert tomllib.loads(text)["chat"]["seed"] == -1


def test_values_are_read_and_bad_ones_fall_back_with_a_notice():
    path = settings_path()
    path.parent.mkdir(parents=True)
    path.write_text(
        '[chat]\ntemperature = 0.3\ntop_p = 2.0\nmax_tokens = "many"\nseed = 42\nsystem_prompt = "Be brief."\n'
        '[model]\nbackend = "onnx"\n'
    )
    settings = load_settings()
    assert (settings.chat.temperature, settings.chat.seed, settings.chat.system_prompt) == (0.3, 42, "Be brief.")
    assert settings.chat.top_p == 0.95 and settings.chat.max_tokens == 256
    assert "settings.toml: chat.top_p = 2.0, but top_p must be in (0, 1] (1 is off); using 0.95" in settings.notices
    assert any(
        n.startswith('settings.toml: chat.max_tokens = "many", but max_tokens must be an integer')
        and n.endswith("; using 256")
        for n in settings.notices
    )
    assert (
        'settings.toml: model.backend = "onnx", but it must be one of auto, torch, llama.cpp; using "auto"'
        in settings.notices
    )


def test_a_broken_file_gives_the_defaults_and_a_notice():
    path = settings_path()
    path.parent.mkdir(parents=True)
    path.write_text("[chat\n")
    settings = load_settings()
    assert settings.chat == ChatDefaults() and "not valid TOML" in settings.notices[0]


def test_save_value_replaces_one_line_and_keeps_the_users_comments():
    load_settings()
    path = settings_path()
    path.write_text(path.read_text().replace("[app]", "[app]\n# my own note"))
    save_value(path, "app", "theme", "nord")
    save_value(path, "model", "extra_paths", ["/models/a b.gguf"])
    text = path.read_text()
    assert "# my own note" in text
    data = tomllib.loads(text)
    assert data["app"]["theme"] == "nord" and data["model"]["extra_paths"] == ["/models/a b.gguf"]
    assert load_settings().theme == "nord"


def test_check_field_names_the_allowed_range():
    assert check_field("temperature", "0.5") == (0.5, None)
    assert check_field("seed", "") == (None, None)
    assert check_field("seed", "-1") == (None, None) and check_field("seed", -1) == (None, None)
    assert check_field("top_k", "-1") == (None, "top_k must be an integer >= 0 and at most 1,000,000,000 (0 is off)")
    assert check_field("temperature", "hot")[1].startswith("temperature must be a finite number >= 0")
    assert check_field("top_k", "2.5")[1] == check_field("top_k", 2.5)[1] == allowed_values("top_k")


def test_chat_defaults_are_the_sampling_defaults():
    from model.inference.sampling import SamplingParams

    assert ChatDefaults().sampling_params() == SamplingParams()


def test_rendered_defaults_round_trip():
    text = render_settings(Settings(chat=ChatDefaults(system_prompt='say "hi"\nthen stop')))
    assert tomllib.loads(text)["chat"]["system_prompt"] == 'say "hi"\nthen stop'


def test_allowed_values_are_the_samplers_own_rules():
    from model.inference.sampling import SamplingError, SamplingParams

    for name in SAMPLING_FIELDS:
        with pytest.raises(SamplingError) as refused:
            SamplingParams(**{name: -5}).validate()
        assert str(refused.value).startswith(allowed_values(name).split(";")[0] + ", got")


def test_values_that_used_to_stop_the_app_give_a_notice():
    cases = {
        "[chat]\ntop_k = inf\n": (
            "settings.toml: chat.top_k = inf, but top_k must be an integer >= 0 and at most 1,000,000,000 "
            "(0 is off); using 0"
        ),
        "chat = 5\n": "settings.toml: chat = 5, but it must be a table ([chat]); using the defaults for it",
        "[model]\nextra_paths = 5\n": (
            'settings.toml: model.extra_paths = 5, but it must be a list of paths, like ["a", "b"]; using []'
        ),
        "app = [1, 2]\n": "settings.toml: app = [1, 2], but it must be a table ([app]); using the defaults for it",
    }
    for text, notice in cases.items():
        path = settings_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        settings = load_settings()
        assert settings.notices == [notice], text
        assert settings.chat == ChatDefaults() and settings.extra_paths == [] and settings.theme == "textual-dark"


def test_values_that_used_to_be_coerced_silently_give_a_notice():
    settings = parse_settings({"chat": {"top_k": 2.9}, "model": {"extra_paths": "abc"}})
    assert settings.chat.top_k == 0 and settings.extra_paths == []
    assert settings.notices == [
        'settings.toml: model.extra_paths = "abc", but it must be a list of paths, like ["a", "b"]; using []',
        "settings.toml: chat.top_k = 2.9, but top_k must be an integer >= 0 and at most 1,000,000,000 (0 is off); "
        "using 0",
    ]


BAD_VALUES = [
    # (section, key, value, what the notice says, the value used)
    ("app", "theme", 5, "it must be a string", '"textual-dark"'),
    ("model", "name", ["a"], "it must be a string", '""'),
    ("model", "backend", "onnx", "it must be one of auto, torch, llama.cpp", '"auto"'),
    ("model", "backend", 1, "it must be one of auto, torch, llama.cpp", '"auto"'),
    ("model", "endpoints", "http://x", 'it must be a list of URLs, like ["a", "b"]', "[]"),
    ("model", "extra_paths", {"a": 1}, 'it must be a list of paths, like ["a", "b"]', "[]"),
    ("chat", "system_prompt", 3, "it must be a string", '""'),
    ("chat", "system_prompt", ["Be brief."], "it must be a string", '""'),
    ("chat", "temperature", True, "temperature must be a finite number", "0.8"),
    ("chat", "temperature", float("nan"), "temperature must be a finite number", "0.8"),
    ("chat", "temperature", 101, "at most 100", "0.8"),
    ("chat", "temperature", "0.5", "(a number, without quotes)", "0.8"),
    ("chat", "top_p", 0, "top_p must be in (0, 1]", "0.95"),
    ("chat", "top_p", float("inf"), "top_p must be in (0, 1]", "0.95"),
    ("chat", "top_k", -1, "top_k must be an integer >= 0", "0"),
    ("chat", "top_k", 10**10, "at most 1,000,000,000", "0"),
    ("chat", "min_p", 1.5, "min_p must be in [0, 1]", "0.0"),
    ("chat", "repetition_penalty", 0, "repetition_penalty must be a number in [0.001, 1000]", "1.0"),
    ("chat", "repetition_penalty", [1], "repetition_penalty must be a number", "1.0"),
    ("chat", "max_tokens", 0, "max_tokens must be an integer >= 1", "256"),
    ("chat", "max_tokens", 12.5, "max_tokens must be an integer >= 1", "256"),
    ("chat", "max_tokens", {"a": 1}, "max_tokens must be an integer", "256"),
    ("chat", "seed", -2, "seed must be an integer in [0, 2^63); -1 or empty: a fresh seed per reply", "-1"),
    ("chat", "seed", 2**63, "seed must be an integer in [0, 2^63)", "-1"),
    ("chat", "seed", 1.5, "seed must be an integer in [0, 2^63)", "-1"),
]


@pytest.mark.parametrize("section,key,value,why,default", BAD_VALUES)
def test_every_bad_value_names_the_key_the_rule_and_the_default(section, key, value, why, default):
    settings = parse_settings({section: {key: value}})
    assert len(settings.notices) == 1, settings.notices
    notice = settings.notices[0]
    assert (
        notice.startswith(f"settings.toml: {section}.{key} = ")
        and why in notice
        and notice.endswith(f"; using {default}")
    )
    fresh = Settings()
    assert (settings.theme, settings.model, settings.backend, settings.chat) == (
        fresh.theme,
        fresh.model,
        fresh.backend,
        fresh.chat,
    )
    assert settings.extra_paths == settings.endpoints == []


def test_good_values_of_every_type_are_taken_as_written():
    settings = parse_settings(
        {
            "app": {"theme": "nord"},
            "model": {"name": "m", "backend": "torch", "extra_paths": ["/a.gguf"], "endpoints": ["http://h:1/v1"]},
            "chat": {
                "system_prompt": "Hi",
                "temperature": 0,
                "top_p": 1,
                "top_k": 40.0,
                "min_p": 0.1,
                "repetition_penalty": 1.1,
                "max_tokens": 12,
                "seed": -1,
            },
        }
    )
    assert settings.notices == []
    assert (settings.theme, settings.model, settings.backend, settings.extra_paths, settings.endpoints) == (
        "nord",
        "m",
        "torch",
        ["/a.gguf"],
        ["http://h:1/v1"],
    )
    assert settings.chat == ChatDefaults("Hi", 0, 1, 40, 0.1, 1.1, 12, None)
    assert isinstance(settings.chat.top_k, int)


def test_list_items_of_the_wrong_type_are_left_out_with_a_notice():
    settings = parse_settings({"model": {"extra_paths": ["/a.gguf", 3, "/b.gguf"]}})
    assert settings.extra_paths == ["/a.gguf", "/b.gguf"]
    assert settings.notices == ["settings.toml: model.extra_paths: 3 left out (each must be a path, in quotes)"]


def test_unknown_keys_are_named_and_ignored():
    settings = parse_settings({"theme": "nord", "chat": {"temprature": 0.2}})
    assert settings.notices == [
        "settings.toml: theme is not a setting here (it belongs under [app]); ignored",
        "settings.toml: chat.temprature is not a setting; ignored",
    ]
    assert settings.theme == "textual-dark"


def test_an_unreadable_file_gives_the_defaults_and_is_left_alone(tmp_path):
    folder = tmp_path / "settings.toml"
    folder.mkdir()  # a folder where the file should be
    settings = load_settings(folder)
    assert settings.chat == ChatDefaults() and settings.path is None
    assert "cannot be read" in settings.notices[0]
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[app]\ntheme = "\xe9"\n')
    settings = load_settings(path)
    assert settings.path is None and "is not valid TOML" in settings.notices[0]


def test_save_chat_defaults_writes_the_chat_table_and_keeps_the_rest():
    load_settings()
    path = settings_path()
    path.write_text(
        path.read_text().replace("[chat]", "[chat]\n# my own note").replace('theme = "textual-dark"', 'theme = "nord"')
    )
    chat = ChatDefaults(system_prompt='Be "brief".\nVery.', temperature=0.3, top_k=40, seed=None, max_tokens=99)
    save_chat_defaults(path, chat)
    text = path.read_text()
    assert "# my own note" in text and "# Nucleus sampling" in text
    settings = load_settings()
    assert settings.chat == chat and settings.theme == "nord" and settings.notices == []
    assert tomllib.loads(text)["chat"]["seed"] == -1
    save_chat_defaults(path, ChatDefaults(seed=7))
    assert load_settings().chat == ChatDefaults(seed=7)


def test_save_chat_defaults_adds_the_table_and_missing_keys():
    path = settings_path()
    path.parent.mkdir(parents=True)
    path.write_text('[app]\ntheme = "nord"\n')
    save_chat_defaults(path, ChatDefaults(temperature=0.1))
    assert load_settings().chat == ChatDefaults(temperature=0.1)
    path.write_text('[chat]\ntemperature = 0.5\n\n[app]\ntheme = "nord"\n')
    save_chat_defaults(path, ChatDefaults(top_p=0.5))
    settings = load_settings()
    assert settings.chat == ChatDefaults(top_p=0.5) and settings.theme == "nord" and settings.notices == []


def test_saving_into_a_broken_file_changes_nothing_and_says_why():
    path = settings_path()
    path.parent.mkdir(parents=True)
    path.write_text("[chat\n")
    with pytest.raises(SettingsError, match="was not changed"):
        save_chat_defaults(path, ChatDefaults())
    with pytest.raises(SettingsError):
        save_value(path, "app", "theme", "nord")
    assert path.read_text() == "[chat\n"
    path.write_text("chat = { temperature = 0.5 }\n")  # an inline table: not a [chat] section this app can edit
    with pytest.raises(SettingsError, match="edit it by hand"):
        save_chat_defaults(path, ChatDefaults())
    assert path.read_text() == "chat = { temperature = 0.5 }\n"
