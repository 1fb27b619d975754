"""Ollama Modelfiles and presets: a Modelfile read as a preset, and a preset written into one.

Read: SYSTEM, the PARAMETERs chatapp has (PARAMETER_FIELDS) and FROM (a GGUF
path, relative to the Modelfile's folder, or an Ollama model name). TEMPLATE
and everything else are left out, each with a note saying so: chatapp renders
a model's chat with the model's own template. Values may be bare, "quoted" or
in \"\"\"triple quotes\"\"\" across lines, as Ollama writes them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from chatapp.presets import Preset, PresetError
from chatapp.settings import check_field

# Ollama's PARAMETER name -> the ChatDefaults field it sets
PARAMETER_FIELDS = {
    "temperature": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "min_p": "min_p",
    "seed": "seed",
    "num_predict": "max_tokens",
    "repeat_penalty": "repetition_penalty",
}
WHY_LEFT_OUT = {
    "num_ctx": "chatapp takes the context from the model or `--context`, not from a preset",
    "stop": "the model's own end-of-turn tokens end a reply",
}
TRIPLE = '"""'


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, SYSTEM, PARAMETER, ...
    argument: str
    line: int


@dataclass
class ImportedPreset:
    preset: Preset
    notes: list[str] = field(default_factory=list)  # what was left out, and why


def unquoted(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            return str(json.loads(text))  # Ollama's quoted strings take Go's escapes, which JSON's cover
        except ValueError:
            return text[1:-1]
    return text


def instructions(text: str, where: str) -> list[Instruction]:
    """A Modelfile's instructions; a \"\"\" string may span lines. PresetError for one left open."""
    found: list[Instruction] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        number, line = index + 1, lines[index].strip()
        index += 1
        if not line or line.startswith("#"):
            continue
        keyword, _, argument = line.partition(" ")
        argument = argument.strip()
        head, quote, rest = argument.partition(TRIPLE)
        if quote:  # PARAMETER stop """x""" has a name before it; SYSTEM """ ... """ has none
            body = [rest]
            while TRIPLE not in body[-1]:
                if index >= len(lines):
                    raise PresetError(f"{where}: line {number}: a {TRIPLE} string is not closed")
                body.append(lines[index])
                index += 1
            body[-1] = body[-1][: body[-1].index(TRIPLE)]
            argument = head + "\n".join(body).strip("\n")
        else:
            argument = unquoted(argument) if keyword.upper() != "PARAMETER" else argument
        found.append(Instruction(keyword.upper(), argument, number))
    return found


def from_model(argument: str, folder: Path, notes: list[str]) -> str:
    """FROM's model as a chatapp model spec: a file by its full path, an Ollama model by its name
    (`chatapp models` lists them as NAME:TAG)."""
    looks_like_path = argument.lower().endswith(".gguf") or argument.startswith((".", "/", "~")) or "\\" in argument
    if looks_like_path:
        path = Path(argument).expanduser()
        path = path if path.is_absolute() else (folder / path)
        if not path.exists():
            notes.append(f"FROM {argument}: no such file here; the preset names no model")
            return ""
        return str(path.resolve())
    return argument if ":" in argument else f"{argument}:latest"


def parameter(preset: Preset, argument: str, notes: list[str]) -> None:
    name, _, raw = argument.partition(" ")
    name, raw = name.lower(), unquoted(raw)
    target = PARAMETER_FIELDS.get(name)
    if target is None:
        why = WHY_LEFT_OUT.get(name, "not a setting chatapp has")
        notes.append(f"PARAMETER {name} left out: {why}")
        return
    if target == "max_tokens" and raw.strip() in ("-1", "-2"):
        notes.append(f"PARAMETER num_predict {raw} left out: a reply is at most max_tokens long in chatapp")
        return
    value, error = check_field(target, raw)
    if error:
        notes.append(f"PARAMETER {name} {raw} left out: {error}")
        return
    setattr(preset.chat, target, value)


def read_modelfile(path: Path, name: str) -> ImportedPreset:
    """A Modelfile as a preset called `name`, and what of it was left out."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PresetError(f"{path}: cannot be read ({getattr(error, 'strerror', None) or error})") from error
    preset, notes = Preset(name, description=f"imported from {path}"), list[str]()
    for instruction in instructions(text, str(path)):
        keyword, argument = instruction.keyword, instruction.argument
        if keyword == "SYSTEM":
            preset.chat.system_prompt = argument
        elif keyword == "FROM":
            preset.model = from_model(argument, path.parent, notes)
        elif keyword == "PARAMETER":
            parameter(preset, argument, notes)
        elif keyword == "TEMPLATE":
            notes.append("TEMPLATE left out: chatapp renders a chat with the model's own template")
        else:
            notes.append(f"{keyword} (line {instruction.line}) left out: not something a chatapp preset holds")
    return ImportedPreset(preset, notes)


# --- a preset written into a Modelfile (`chatapp export --format ollama --preset NAME`) ---


def preset_lines(preset: Preset) -> list[str]:
    """SYSTEM and PARAMETER lines for a preset. Ollama has no Modelfile switch for thinking."""
    chat = preset.chat
    lines = []
    if chat.system_prompt:
        if TRIPLE in chat.system_prompt:
            raise PresetError(f"preset {preset.name}: its system prompt holds {TRIPLE}, which a Modelfile cannot quote")
        lines.append(f"SYSTEM {TRIPLE}{chat.system_prompt}{TRIPLE}")
    for name, target in PARAMETER_FIELDS.items():
        value = getattr(chat, target)
        if value is not None:
            lines.append(f"PARAMETER {name} {value}")
    return lines


def with_preset(modelfile_text: str, preset: Preset) -> str:
    """A Modelfile with the preset's SYSTEM and PARAMETERs in place of its own ones of the same names."""
    replaced = {f"PARAMETER {name}" for name in PARAMETER_FIELDS} | {"SYSTEM"}
    kept = [
        line
        for line in modelfile_text.splitlines()
        if not any(line.upper().startswith(prefix.upper() + " ") for prefix in replaced)
    ]
    return "\n".join([*kept, f"# preset {preset.name}", *preset_lines(preset)]) + "\n"


def add_preset_to_modelfile(path: Path, preset: Preset) -> None:
    """Rewrite a Modelfile that chatapp's export wrote (one-line SYSTEM and PARAMETERs) with the preset."""
    text = with_preset(path.read_text(encoding="utf-8"), preset)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)
