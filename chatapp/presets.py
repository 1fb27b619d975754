"""Chat presets: a system prompt, sampling, an optional model and the thinking switch, by name.

A preset is one TOML file, CONFIG/presets/NAME.toml, whose keys are those of
settings.toml's [chat] table plus `model` and `description`. A few built-in
ones (chatapp/builtin/presets/, personas for the Shakespeare models) are
listed with the user's and cannot be changed. A file that is not a valid
preset is left out with one notice naming the file, the key and the reason:
reading presets never raises. The commands (`chatapp preset ...`, `run
--preset`) are chatapp/preset_commands.py, Ollama's Modelfiles
chatapp/modelfile.py; the app's settings panel and command palette
(chatapp/tui/preset_palette.py) apply presets too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package
    import tomli as tomllib

from chatapp.paths import config_dir
from chatapp.settings import SAMPLING_FIELDS, THINKING_CHOICES, ChatDefaults, check_field, toml_shown, toml_value

BUILTIN_PRESETS_DIR = Path(__file__).parent / "builtin" / "presets"
PRESET_SUFFIX = ".toml"
PRESET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NAME_RULE = "a preset name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
CHAT_KEYS = ("system_prompt", *SAMPLING_FIELDS, "thinking")
PRESET_KEYS = ("description", "model", *CHAT_KEYS)


class PresetError(ValueError):
    """A preset that cannot be found, saved or read; the message is one line."""


@dataclass
class Preset:
    name: str
    chat: ChatDefaults = field(default_factory=ChatDefaults)
    model: str = ""  # a model spec; "" keeps the conversation's model
    description: str = ""
    builtin: bool = False
    path: Path | None = None

    @property
    def source(self) -> str:
        return "built-in" if self.builtin else "yours"


@dataclass
class PresetList:
    presets: list[Preset]
    notices: list[str]  # one per file left out

    def names(self) -> list[str]:
        return [preset.name for preset in self.presets]

    def get(self, name: str) -> Preset | None:
        return next((preset for preset in self.presets if preset.name == name), None)


def presets_dir() -> Path:
    return config_dir() / "presets"


def check_name(name: str) -> str:
    if not PRESET_NAME.fullmatch(name):
        raise PresetError(f"{name!r} cannot be a preset's name: {NAME_RULE}")
    return name


# --- reading ---


def _problems(data: dict) -> list[str]:
    """What is wrong with a parsed preset file, one phrase per key."""
    problems = [f"{key} is not a preset key" for key in data if key not in PRESET_KEYS]
    for key in ("description", "model", "system_prompt"):
        if key in data and not isinstance(data[key], str):
            problems.append(f"{key} = {toml_shown(data[key])}, but it must be a string")
    for key in SAMPLING_FIELDS:
        if key not in data:
            continue
        _, error = check_field(key, data[key])
        if isinstance(data[key], str):  # a number in quotes is a TOML string
            error = "it must be a number, without quotes"
        if error:
            problems.append(f"{key} = {toml_shown(data[key])}, but {error}")
    thinking = data.get("thinking", "default")
    if not (isinstance(thinking, str) and thinking in THINKING_CHOICES):
        problems.append(f"thinking = {toml_shown(thinking)}, but it must be one of {', '.join(THINKING_CHOICES)}")
    return problems


def parse_preset(name: str, data: dict, builtin: bool = False, path: Path | None = None) -> Preset:
    """A preset from a parsed file; PresetError names every key that is wrong."""
    problems = _problems(data)
    if problems:
        raise PresetError("; ".join(problems))
    chat = ChatDefaults()
    for key in CHAT_KEYS:
        if key in data:
            value = data[key] if key in ("system_prompt", "thinking") else check_field(key, data[key])[0]
            setattr(chat, key, value)
    return Preset(name, chat, data.get("model", ""), data.get("description", ""), builtin, path)


def read_preset_file(path: Path, builtin: bool = False) -> Preset:
    """One preset file; PresetError (naming the file) when it cannot be used."""
    where = path.name if builtin else f"presets/{path.name}"
    try:
        check_name(path.stem)
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return parse_preset(path.stem, data, builtin, path)
    except OSError as error:
        raise PresetError(f"{where}: cannot be read ({error.strerror or error}); left out") from error
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise PresetError(f"{where}: is not valid TOML ({error}); left out") from error
    except PresetError as error:
        raise PresetError(f"{where}: {error}; left out") from error


def _files(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.suffix == PRESET_SUFFIX and p.is_file())
    except OSError:
        return []


def load_presets() -> PresetList:
    """The user's presets and the built-in ones, by name; a user's file shadows a built-in of its name.
    Never raises: a file that cannot be used is left out, with one notice."""
    found: dict[str, Preset] = {}
    notices = []
    for folder, builtin in ((BUILTIN_PRESETS_DIR, True), (presets_dir(), False)):
        for path in _files(folder):
            try:
                preset = read_preset_file(path, builtin)
            except PresetError as error:
                notices.append(str(error))
                continue
            found[preset.name] = preset
    return PresetList(sorted(found.values(), key=lambda p: p.name.lower()), notices)


def find_preset(name: str) -> Preset:
    """The preset called `name`; PresetError says why there is none (its file's problem, if it has one)."""
    presets = load_presets()
    preset = presets.get(name)
    if preset is not None:
        return preset
    broken = next((n for n in presets.notices if n.startswith((f"presets/{name}.toml:", f"{name}.toml:"))), None)
    if broken:
        raise PresetError(broken)
    known = ", ".join(presets.names()) or "none"
    raise PresetError(f"no preset named {name!r} (presets: {known})")


# --- writing ---


def render_preset(preset: Preset) -> str:
    lines = [
        '# A chatapp preset: `chatapp run --preset NAME`, or Ctrl+P "Preset: NAME" in the app.',
        "# The keys are settings.toml's [chat] ones; model \"\" keeps the chat's model.",
        f"description = {toml_value(preset.description)}",
        f"model = {toml_value(preset.model)}",
    ]
    lines += [f"{key} = {toml_value(getattr(preset.chat, key))}" for key in CHAT_KEYS]
    return "\n".join(lines) + "\n"


def save_preset(preset: Preset, replace: bool = True) -> Path:
    """Write the user's preset file (atomically). A built-in's name is refused, and an existing
    preset's unless `replace`."""
    check_name(preset.name)
    builtin = BUILTIN_PRESETS_DIR / f"{preset.name}{PRESET_SUFFIX}"
    if builtin.is_file():
        raise PresetError(f"{preset.name!r} is a built-in preset: choose another name")
    path = presets_dir() / f"{preset.name}{PRESET_SUFFIX}"
    if path.exists() and not replace:
        raise PresetError(f"a preset named {preset.name!r} exists: --force replaces it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(render_preset(preset), encoding="utf-8")
        temporary.replace(path)
    except OSError as error:
        raise PresetError(f"{path} could not be written: {error.strerror or error}") from error
    return path


def remove_preset(name: str) -> Path:
    check_name(name)
    path = presets_dir() / f"{name}{PRESET_SUFFIX}"
    if not path.is_file():
        if (BUILTIN_PRESETS_DIR / f"{name}{PRESET_SUFFIX}").is_file():
            raise PresetError(f"{name!r} is a built-in preset: it cannot be removed")
        raise PresetError(f"no preset named {name!r} in {presets_dir()}")
    try:
        path.unlink()
    except OSError as error:
        raise PresetError(f"{path} could not be removed: {error.strerror or error}") from error
    return path


# --- shown ---


def sampling_summary(chat: ChatDefaults) -> str:
    """Like "temperature 0.8, top_p 0.95, max_tokens 256": the values that are not the defaults."""
    defaults = ChatDefaults()
    keys = (*SAMPLING_FIELDS, "thinking")
    changed = [f"{key} {getattr(chat, key)}" for key in keys if getattr(chat, key) != getattr(defaults, key)]
    return ", ".join(changed) or "default sampling"


def one_line_summary(preset: Preset) -> str:
    parts = [preset.description or _shortened(preset.chat.system_prompt) or "no system prompt"]
    if preset.model:
        parts.append(f"model {preset.model}")
    parts.append(sampling_summary(preset.chat))
    return " · ".join(parts)


def _shortened(text: str, width: int = 50) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
