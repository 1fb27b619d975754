"""Settings: a TOML file under the user config dir, created with comments.

Read with tomllib. The app writes back only single values it owns (the theme,
GGUF paths the user added) by replacing their line, so a user's edits and
comments survive. A bad value is replaced by its default, with a notice.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package
    import tomli as tomllib

from chatapp.backends import BACKEND_CHOICES
from chatapp.paths import config_dir
from model.inference.sampling import SamplingError, SamplingParams

SETTINGS_FILE = "settings.toml"

TEMPLATE = """\
# chatapp settings. Edit freely: the app reads this file at start.
# A value that is not valid falls back to its default, with a notice in the app.

[app]
# The Textual theme; the app remembers the last one picked (Ctrl+P, "Theme").
theme = {theme}

[model]
# A model name from `chatapp models`, a model folder or a GGUF file; "" is the built-in model.
name = {model}
# "auto" (torch for model folders, llama.cpp for GGUF files), "torch" or "llama.cpp".
backend = {backend}
# GGUF files added in the model picker.
extra_paths = {extra_paths}
# OpenAI-compatible servers whose models the model picker (F4) lists; `chatapp chat --endpoint URL` adds one.
endpoints = {endpoints}

[chat]
# Defaults for new conversations; each conversation can change them in its settings panel (F2).
system_prompt = {system_prompt}
# 0 is greedy; higher is more random.
temperature = {temperature}
# Nucleus sampling, in (0, 1]; 1 is off.
top_p = {top_p}
# Keep only the k most likely tokens; 0 is off.
top_k = {top_k}
# Drop tokens below min_p times the top probability, in [0, 1]; 0 is off.
min_p = {min_p}
# Penalise recently used tokens, > 0; 1 is off.
repetition_penalty = {repetition_penalty}
# The longest reply, in tokens.
max_tokens = {max_tokens}
# A fixed seed reproduces a reply; -1 draws a fresh one per reply.
seed = {seed}
"""

@dataclass
class ChatDefaults:
    """What a conversation starts with: a system prompt and sampling parameters
    (SAMPLING_FIELDS, whose defaults are SamplingParams's)."""

    system_prompt: str = ""
    temperature: float = SamplingParams.temperature
    top_p: float = SamplingParams.top_p
    top_k: int = SamplingParams.top_k
    min_p: float = SamplingParams.min_p
    repetition_penalty: float = SamplingParams.repetition_penalty
    max_tokens: int = SamplingParams.max_tokens
    seed: int | None = SamplingParams.seed

    def sampling_params(self) -> SamplingParams:
        return SamplingParams(**{name: getattr(self, name) for name in SAMPLING_FIELDS})

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, values: dict) -> "ChatDefaults":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


SAMPLING_FIELDS = tuple(f.name for f in fields(ChatDefaults) if f.name != "system_prompt")


@dataclass
class Settings:
    theme: str = "textual-dark"
    model: str = ""
    backend: str = "auto"
    extra_paths: list[str] = field(default_factory=list)
    endpoints: list[str] = field(default_factory=list)
    chat: ChatDefaults = field(default_factory=ChatDefaults)
    notices: list[str] = field(default_factory=list)  # what was wrong with the file
    path: Path | None = None


def settings_path() -> Path:
    return config_dir() / SETTINGS_FILE


def toml_value(value) -> str:
    if value is None:
        return "-1"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a valid TOML basic string


def render_settings(settings: Settings) -> str:
    chat = settings.chat
    values = {name: toml_value(getattr(chat, name)) for name in ("system_prompt", *SAMPLING_FIELDS)}
    return TEMPLATE.format(
        theme=toml_value(settings.theme), model=toml_value(settings.model), backend=toml_value(settings.backend),
        extra_paths=toml_value(settings.extra_paths), endpoints=toml_value(settings.endpoints), **values,
    )


def check_field(name: str, raw) -> tuple[object, str | None]:
    """A sampling value parsed and checked alone: (value, None) or (None, error naming the allowed range)."""
    try:
        if name == "seed":
            value = None if raw in (None, "", -1, "-1") else int(raw)
        elif name in ("top_k", "max_tokens"):
            value = int(raw)
        else:
            value = float(raw)
    except (TypeError, ValueError):
        kind = "an integer" if name in ("seed", "top_k", "max_tokens") else "a number"
        return None, f"{name} must be {kind}, got {raw!r}"
    try:
        SamplingParams(**{name: value}).validate()
    except SamplingError as error:
        return None, str(error)
    return value, None


def parse_settings(data: dict, path: Path | None = None) -> Settings:
    settings, defaults = Settings(path=path), ChatDefaults()
    app, model, chat = data.get("app", {}), data.get("model", {}), data.get("chat", {})
    settings.theme = str(app.get("theme", settings.theme))
    settings.model = str(model.get("name", ""))
    backend = model.get("backend", "auto")
    if backend in BACKEND_CHOICES:
        settings.backend = backend
    else:
        settings.notices.append(f"settings: model.backend must be one of {', '.join(BACKEND_CHOICES)}, got {backend!r}; using auto")
    settings.extra_paths = [str(p) for p in model.get("extra_paths", []) if isinstance(p, str)]
    endpoints = model.get("endpoints", [])
    settings.endpoints = [url for url in endpoints if isinstance(url, str)] if isinstance(endpoints, list) else []
    settings.chat.system_prompt = str(chat.get("system_prompt", ""))
    for name in SAMPLING_FIELDS:
        if name not in chat:
            continue
        value, error = check_field(name, chat[name])
        if error:
            settings.notices.append(f"settings: {error}; using {getattr(defaults, name)!r}")
        else:
            setattr(settings.chat, name, value)
    return settings


def load_settings(path: Path | None = None) -> Settings:
    """The settings, creating the file with comments when there is none."""
    path = path or settings_path()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_settings(Settings()), encoding="utf-8")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        settings = Settings(path=path)
        settings.notices.append(f"settings: {path} is not valid TOML ({error}); using the defaults")
        return settings
    return parse_settings(data, path)


def save_value(path: Path, section: str, key: str, value) -> None:
    """Replace one `key = value` line in a section, keeping everything else as the user wrote it."""
    text = path.read_text(encoding="utf-8") if path.exists() else render_settings(Settings())
    line = f"{key} = {toml_value(value)}"
    section_match = re.search(rf"^\[{re.escape(section)}\]\s*$", text, flags=re.M)
    if section_match is None:
        text = text.rstrip("\n") + f"\n\n[{section}]\n{line}\n"
    else:
        next_section = re.search(r"^\[", text[section_match.end():], flags=re.M)
        end = section_match.end() + (next_section.start() if next_section else len(text) - section_match.end())
        body = text[section_match.end():end]
        key_pattern = re.compile(rf"^{re.escape(key)}\s*=.*$", flags=re.M)
        if key_pattern.search(body):
            body = key_pattern.sub(lambda _: line, body, count=1)
        else:
            body = body.rstrip("\n") + f"\n{line}\n\n" if body.strip() else f"\n{line}\n\n"
        text = text[:section_match.end()] + body + text[end:]
    tomllib.loads(text)  # never write a file we could not read back
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)
