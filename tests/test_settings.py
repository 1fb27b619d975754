"""The settings TOML: created with comments, read with tomllib, bad values refused."""

from __future__ import annotations

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package
    import tomli as tomllib

from chatapp.settings import ChatDefaults, Settings, check_field, load_settings, render_settings, save_value, settings_path


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
    path.write_text('[chat]\ntemperature = 0.3\ntop_p = 2.0\nmax_tokens = "many"\nseed = 42\nsystem_prompt = "Be brief."\n'
                    '[model]\nbackend = "onnx"\n')
    settings = load_settings()
    assert (settings.chat.temperature, settings.chat.seed, settings.chat.system_prompt) == (0.3, 42, "Be brief.")
    assert settings.chat.top_p == 0.95 and settings.chat.max_tokens == 256
    assert any("top_p must be in (0, 1]" in n for n in settings.notices)
    assert any("max_tokens must be an integer" in n for n in settings.notices)
    assert any("model.backend must be one of auto, torch, llama.cpp, got 'onnx'" in n for n in settings.notices)


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
    assert "top_k must be an integer >= 0" in check_field("top_k", "-1")[1]
    assert "temperature must be a number" in check_field("temperature", "hot")[1]


def test_chat_defaults_are_the_sampling_defaults():
    from model.inference.sampling import SamplingParams

    assert ChatDefaults().sampling_params() == SamplingParams()


def test_rendered_defaults_round_trip():
    text = render_settings(Settings(chat=ChatDefaults(system_prompt='say "hi"\nthen stop')))
    assert tomllib.loads(text)["chat"]["system_prompt"] == 'say "hi"\nthen stop'
