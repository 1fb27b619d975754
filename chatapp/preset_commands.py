"""`chatapp preset list|show|import|rm`, `chatapp run --preset NAME` and `chatapp export --format ollama
--preset NAME` (chatapp/cli.py dispatches here). Presets themselves are chatapp/presets.py; Modelfiles
chatapp/modelfile.py."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from chatapp.modelfile import add_preset_to_modelfile, preset_lines, read_modelfile
from chatapp.presets import (
    PresetError,
    check_name,
    find_preset,
    load_presets,
    one_line_summary,
    presets_dir,
    remove_preset,
    render_preset,
    save_preset,
)
from chatapp.settings import SAMPLING_FIELDS, THINKING_CHOICES


def apply_to_run_args(args) -> None:
    """`chatapp run --preset NAME`: the preset's system prompt, sampling, thinking and model, each only
    where the command line did not give its own."""
    if getattr(args, "preset", None) is None:
        return
    preset = find_preset(args.preset)
    if args.system is None and preset.chat.system_prompt:
        args.system = preset.chat.system_prompt
    for name in SAMPLING_FIELDS:
        if getattr(args, name, None) is None:
            setattr(args, name, getattr(preset.chat, name))
    if not getattr(args, "thinking_given", False):
        args.thinking = THINKING_CHOICES[preset.chat.thinking]
    if args.model is None and preset.model and not args.endpoint:
        args.model = preset.model


def command_preset(args) -> int:
    presets = load_presets()
    for notice in presets.notices:
        sys.stderr.write(f"note: {notice}\n")
    if args.preset_command == "list":
        for preset in presets.presets:
            print(f"{preset.name:<16} {preset.source:<9} {one_line_summary(preset)}")
        if not presets.presets:
            print("no presets")
        print(f"your presets: {presets_dir()} (`chatapp preset import Modelfile` adds one)")
    elif args.preset_command == "show":
        preset = find_preset(args.name)
        where = preset.path if preset.path is not None else "(built-in)"
        print(f"# {preset.name} ({preset.source}): {where}")
        print(render_preset(preset), end="")
    elif args.preset_command == "rm":
        print(f"removed {remove_preset(args.name)}")
    elif args.preset_command == "import":
        return import_modelfile(args)
    return 0


def import_modelfile(args) -> int:
    source = Path(args.modelfile).expanduser()
    name = check_name(args.name or default_import_name(source))
    imported = read_modelfile(source, name)
    path = save_preset(imported.preset, replace=args.force)
    for note in imported.notes:
        sys.stderr.write(f"note: {note}\n")
    print(f"{path}: preset {name!r} ({one_line_summary(imported.preset)}); `chatapp run --preset {name}` uses it")
    return 0


def default_import_name(modelfile: Path) -> str:
    """A file called Modelfile is named after its folder; any other after itself."""
    stem = modelfile.parent.resolve().name if modelfile.name.lower() == "modelfile" else modelfile.stem
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")[:64]
    return cleaned or "imported"


def command_export_with_preset(args) -> int:
    """`chatapp export --format ollama --preset NAME`: the export, then the preset's SYSTEM and
    PARAMETERs in its Modelfile (in place of the export's own temperature and top_p)."""
    from chatapp import commands
    from chatapp.models.resolve import resolve_model

    if args.format != "ollama":
        raise PresetError("--preset goes with --format ollama: a Modelfile is what holds a preset")
    preset = find_preset(args.preset)
    preset_lines(preset)  # a system prompt a Modelfile cannot quote is refused before the export
    code = commands.command_export(args)
    modelfile = Path(args.output or f"{resolve_model(args.model).name}-ollama") / "Modelfile"
    add_preset_to_modelfile(modelfile, preset)
    print(f"{modelfile}: holds the preset {preset.name!r} ({one_line_summary(preset)})")
    return code
