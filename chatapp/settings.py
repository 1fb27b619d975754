"""Settings: a TOML file under the user config dir, created with comments.

Read with tomllib. The app writes back only values it owns (the theme, GGUF
paths the user added, the [chat] defaults when the user asks) by replacing
their lines, so a user's edits and comments survive. A value of the wrong type
or out of range is replaced by its default, with a notice naming the key, the
rule and the default: reading the file never raises.
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

from chatapp.models.opening import BACKEND_CHOICES, MAX_CACHE_MB, MAX_THREADS, CacheLimits
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
# CPU threads that generate tokens; 0 picks by the model's size and the cores (--threads overrides it).
threads = {threads}

[cache]
# Recent conversations' computed prompts, kept so that coming back to one computes only its new tokens:
# MB in memory (both engines) and on disk under the user cache dir (llama.cpp); 0 keeps none there.
memory_mb = {cache_memory_mb}
disk_mb = {cache_disk_mb}

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
# A reasoning model's thinking: "on", "off" or "default" (the model's own); ignored without a switch.
thinking = {thinking}
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
    thinking: str = "default"  # THINKING_CHOICES: a reasoning model's thinking switch

    def sampling_params(self) -> SamplingParams:
        return SamplingParams(
            **{name: getattr(self, name) for name in SAMPLING_FIELDS}, thinking=THINKING_CHOICES.get(self.thinking)
        )

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, values: dict) -> ChatDefaults:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


SAMPLING_FIELDS = tuple(f.name for f in fields(ChatDefaults) if f.name not in ("system_prompt", "thinking"))
THINKING_CHOICES: dict[str, bool | None] = {"on": True, "off": False, "default": None}  # -> SamplingParams.thinking


@dataclass
class Settings:
    theme: str = "textual-dark"
    model: str = ""
    backend: str = "auto"
    extra_paths: list[str] = field(default_factory=list)
    endpoints: list[str] = field(default_factory=list)
    threads: int = 0  # 0: automatic (model.inference.threads)
    cache: CacheLimits = field(default_factory=CacheLimits)  # [cache]: what recent prompts may keep
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
    values = {name: toml_value(getattr(chat, name)) for name in ("system_prompt", *SAMPLING_FIELDS, "thinking")}
    return TEMPLATE.format(
        theme=toml_value(settings.theme),
        model=toml_value(settings.model),
        backend=toml_value(settings.backend),
        extra_paths=toml_value(settings.extra_paths),
        endpoints=toml_value(settings.endpoints),
        threads=toml_value(settings.threads),
        cache_memory_mb=toml_value(settings.cache.memory_mb),
        cache_disk_mb=toml_value(settings.cache.disk_mb),
        **values,
    )


INTEGER_FIELDS = ("top_k", "max_tokens", "seed")
FRESH_SEED = "-1 or empty: a fresh seed per reply"


def allowed_values(name: str) -> str:
    """What a sampling field accepts, in SamplingParams.validate's own words ("top_p must be in (0, 1] (1 is off)"):
    the file, the settings panel and the engines refuse a value for the same reason, said the same way."""
    try:
        SamplingParams(**{name: "?"}).validate()  # type: ignore[arg-type]  # a string is wrong for every field: validate names the rule
    except SamplingError as error:
        text = str(error)
        rule = text[: text.rindex(", got ")]
    else:  # pragma: no cover - every field refuses a string
        raise AssertionError(f"SamplingParams.validate accepted {name} = '?'")
    return f"{rule}; {FRESH_SEED}" if name == "seed" else rule


def _number_from_text(name: str, text: str):
    text = text.strip()
    if name == "seed" and text in ("", "-1"):
        return None
    return int(text) if name in INTEGER_FIELDS else float(text)


def _number_from_toml(name: str, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(value)
    if name in INTEGER_FIELDS:
        if isinstance(value, float):  # 40.0 is 40; 2.9 and inf are refused, never rounded
            if not value.is_integer():
                raise ValueError(value)
            value = int(value)
        if name == "seed" and value == -1:
            return None
    return value


def check_field(name: str, raw) -> tuple[object, str | None]:
    """A sampling value checked alone: text typed in the settings panel (a str), or a TOML number read from the
    file (parse_settings refuses a str there). (value, None), or (None, what the field accepts)."""
    try:
        value = _number_from_text(name, raw) if isinstance(raw, str) else _number_from_toml(name, raw)
        SamplingParams(**{name: value}).validate()
    except (TypeError, ValueError, OverflowError):  # SamplingError is a ValueError
        return None, allowed_values(name)
    return value, None


def check_threads(text: str) -> tuple[int | None, str | None]:
    """CPU threads typed in the settings panel: (n, None), or (None, what [model] threads accepts)."""
    digits = text.strip()
    value = int(digits) if re.fullmatch(r"[0-9]{1,5}", digits) else -1
    if 0 <= value <= MAX_THREADS:
        return value, None
    return None, f"threads must be a whole number from 0 (automatic) to {MAX_THREADS}"


CACHE_RULE = f"it must be a whole number of MB from 0 (none kept) to {MAX_CACHE_MB}"


def check_cache_mb(text: str) -> tuple[int | None, str | None]:
    """A cache limit typed in the settings panel: (MB, None), or (None, what [cache] accepts)."""
    digits = text.strip()
    value = int(digits) if re.fullmatch(r"[0-9]{1,8}", digits) else -1
    if 0 <= value <= MAX_CACHE_MB:
        return value, None
    return None, f"a cache limit must be a whole number of MB from 0 (none kept) to {MAX_CACHE_MB}"


def toml_shown(value) -> str:
    """A value as the user wrote it in the file, shortened for a one-line notice."""
    text = "a table" if isinstance(value, dict) else toml_value(value)
    return text if len(text) <= 40 else text[:37] + "..."


class _Reader:
    """Reads the parsed file into Settings; every value of the wrong type or out of range is replaced by its
    default and named in a notice. Never raises: the app must start whatever the file holds."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def notice(self, key: str, value, why: str, default) -> None:
        self.settings.notices.append(
            f"{SETTINGS_FILE}: {key} = {toml_shown(value)}, but {why}; using {toml_shown(default)}"
        )

    def table(self, data: dict, name: str, known: tuple[str, ...]) -> dict:
        table = data.get(name, {})
        if not isinstance(table, dict):
            self.settings.notices.append(
                f"{SETTINGS_FILE}: {name} = {toml_shown(table)}, but it must be a table "
                f"([{name}]); using the defaults for it"
            )
            return {}
        for key in table:
            if key not in known:
                self.settings.notices.append(f"{SETTINGS_FILE}: {name}.{key} is not a setting; ignored")
        return table

    def text(self, table: dict, section: str, key: str, default: str) -> str:
        value = table.get(key, default)
        if isinstance(value, str):
            return value
        self.notice(f"{section}.{key}", value, "it must be a string", default)
        return default

    def strings(self, table: dict, section: str, key: str, what: str) -> list[str]:
        value = table.get(key, [])
        if not isinstance(value, list):
            self.notice(f"{section}.{key}", value, f'it must be a list of {what}s, like ["a", "b"]', [])
            return []
        kept = [item for item in value if isinstance(item, str)]
        if len(kept) < len(value):
            left_out = ", ".join(toml_shown(item) for item in value if not isinstance(item, str))
            self.settings.notices.append(
                f"{SETTINGS_FILE}: {section}.{key}: {left_out} left out (each must be a {what}, in quotes)"
            )
        return kept


SECTIONS = {
    "app": ("theme",),
    "model": ("name", "backend", "extra_paths", "endpoints", "threads"),
    "chat": ("system_prompt", *SAMPLING_FIELDS, "thinking"),
    "cache": ("memory_mb", "disk_mb"),
}


def parse_settings(data: dict, path: Path | None = None) -> Settings:
    settings, defaults = Settings(path=path), Settings()
    reader = _Reader(settings)
    for key in data:
        if key not in SECTIONS:
            home = next((f" (it belongs under [{name}])" for name, known in SECTIONS.items() if key in known), "")
            settings.notices.append(f"{SETTINGS_FILE}: {key} is not a setting here{home}; ignored")
    app, model, chat, cache = (reader.table(data, name, known) for name, known in SECTIONS.items())

    settings.theme = reader.text(app, "app", "theme", defaults.theme)
    settings.model = reader.text(model, "model", "name", defaults.model)
    backend = model.get("backend", defaults.backend)
    if isinstance(backend, str) and backend in BACKEND_CHOICES:
        settings.backend = backend
    else:
        reader.notice("model.backend", backend, f"it must be one of {', '.join(BACKEND_CHOICES)}", defaults.backend)
    settings.extra_paths = reader.strings(model, "model", "extra_paths", "path")
    settings.endpoints = reader.strings(model, "model", "endpoints", "URL")
    threads = model.get("threads", defaults.threads)
    if isinstance(threads, int) and not isinstance(threads, bool) and 0 <= threads <= MAX_THREADS:
        settings.threads = threads
    else:
        reader.notice(
            "model.threads", threads, f"it must be a whole number from 0 (automatic) to {MAX_THREADS}", defaults.threads
        )

    limits = {}
    for key in SECTIONS["cache"]:
        value, default = cache.get(key, getattr(defaults.cache, key)), getattr(defaults.cache, key)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_CACHE_MB:
            limits[key] = value
        else:
            reader.notice(f"cache.{key}", value, CACHE_RULE, default)
            limits[key] = default
    settings.cache = CacheLimits(**limits)

    settings.chat.system_prompt = reader.text(chat, "chat", "system_prompt", defaults.chat.system_prompt)
    for name in SAMPLING_FIELDS:
        if name not in chat:
            continue
        value, error = check_field(name, chat[name])
        if isinstance(chat[name], str):  # a number in quotes: a TOML string, not a number
            value, error = None, allowed_values(name) + " (a number, without quotes)"
        if error:
            reader.notice(f"chat.{name}", chat[name], error, getattr(defaults.chat, name))
        else:
            setattr(settings.chat, name, value)
    thinking = chat.get("thinking", defaults.chat.thinking)
    if isinstance(thinking, str) and thinking in THINKING_CHOICES:
        settings.chat.thinking = thinking
    else:
        reader.notice(
            "chat.thinking", thinking, f"it must be one of {', '.join(THINKING_CHOICES)}", defaults.chat.thinking
        )
    return settings


def load_settings(path: Path | None = None) -> Settings:
    """The settings, creating the file with comments when there is none. Never raises: a file that cannot
    be read gives the defaults and a notice, and no path (the app then leaves the file alone)."""
    path = path or settings_path()
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(render_settings(Settings()), encoding="utf-8")
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        why = (
            "is not valid TOML"
            if isinstance(error, (UnicodeDecodeError, tomllib.TOMLDecodeError))
            else "cannot be read"
        )
        return Settings(
            notices=[
                f"{SETTINGS_FILE}: {path} {why} ({error}); using the defaults, and the app will not change the file"
            ]
        )
    return parse_settings(data, path)


class SettingsError(OSError):
    """The settings file could not be written; the message says why, for a notice."""


def save_value(path: Path, section: str, key: str, value) -> None:
    """Replace one `key = value` line in a section, keeping everything else as the user wrote it."""
    save_values(path, section, {key: value})


def save_chat_defaults(path: Path, chat: ChatDefaults) -> None:
    """Write what new conversations start with to the [chat] table, keeping the rest of the file as it is."""
    save_values(path, "chat", chat.to_dict())


def save_values(path: Path, section: str, values: dict) -> None:
    """Replace (or add) `key = value` lines in one section, keeping everything else as the user wrote it.

    Raises SettingsError when the file is not valid TOML (writing would lose what the user meant) or
    cannot be written."""
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else render_settings(Settings())
        tomllib.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise SettingsError(f"{path} was not changed: it could not be read as TOML ({error})") from error
    for key, value in values.items():
        text = _with_value(text, section, key, value)
    try:
        tomllib.loads(text)  # never write a file we could not read back
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(
            f"{path} was not changed: [{section}] is written in a way this app cannot edit ({error}); edit it by hand"
        ) from error
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(text, encoding="utf-8")
        temporary.replace(path)
    except OSError as error:
        raise SettingsError(f"{path} could not be written: {error}") from error


def _with_value(text: str, section: str, key: str, value) -> str:
    line = f"{key} = {toml_value(value)}"
    section_match = re.search(rf"^\[{re.escape(section)}\]\s*$", text, flags=re.M)
    if section_match is None:
        return text.rstrip("\n") + f"\n\n[{section}]\n{line}\n"
    next_section = re.search(r"^\[", text[section_match.end() :], flags=re.M)
    end = section_match.end() + (next_section.start() if next_section else len(text) - section_match.end())
    body = text[section_match.end() : end]
    key_pattern = re.compile(rf"^{re.escape(key)}\s*=.*$", flags=re.M)
    if key_pattern.search(body):
        body = key_pattern.sub(lambda _: line, body, count=1)
    else:
        body = body.rstrip("\n") + f"\n{line}\n\n" if body.strip() else f"\n{line}\n\n"
    return text[: section_match.end()] + body + text[end:]
