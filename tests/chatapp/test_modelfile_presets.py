"""Ollama Modelfiles as presets (`chatapp preset import`) and presets written into the Modelfile that
`chatapp export --format ollama --preset NAME` writes."""

from __future__ import annotations

import pytest

from chatapp import cli
from chatapp.modelfile import read_modelfile, with_preset
from chatapp.presets import Preset, PresetError, find_preset, save_preset
from chatapp.settings import ChatDefaults
from quant.ollama_export import modelfile

MARIO = '''\
# from Ollama's docs
FROM llama3.2
TEMPLATE """{{ if .System }}<|start_header_id|>system{{ end }}
{{ .Prompt }}"""
SYSTEM """
You are Mario from Super Mario Bros.
Answer as Mario, the assistant, only.
"""
PARAMETER temperature 1
parameter top_k 20
PARAMETER top_p 0.9
PARAMETER seed 42
PARAMETER num_predict 128
PARAMETER repeat_penalty 1.2
PARAMETER num_ctx 4096
PARAMETER stop "<|eot_id|>"
PARAMETER mirostat 2
ADAPTER ./lora.gguf
'''


def test_system_parameters_and_from_are_read_and_the_rest_is_named_as_left_out(tmp_path):
    path = tmp_path / "Modelfile"
    path.write_text(MARIO, encoding="utf-8")
    imported = read_modelfile(path, "mario")
    chat = imported.preset.chat
    assert chat.system_prompt == "You are Mario from Super Mario Bros.\nAnswer as Mario, the assistant, only."
    assert (chat.temperature, chat.top_k, chat.top_p, chat.seed, chat.max_tokens, chat.repetition_penalty) == (
        1.0,
        20,
        0.9,
        42,
        128,
        1.2,
    )
    assert imported.preset.model == "llama3.2:latest"  # as `chatapp models` names an Ollama model
    notes = "\n".join(imported.notes)
    for left_out in ("TEMPLATE", "PARAMETER num_ctx", "PARAMETER stop", "PARAMETER mirostat", "ADAPTER"):
        assert left_out in notes
    assert len(imported.notes) == 5


def test_from_a_gguf_path_is_relative_to_the_modelfile_and_a_one_line_system(tmp_path):
    (tmp_path / "weights.gguf").write_bytes(b"GGUF")
    path = tmp_path / "Modelfile"
    path.write_text('FROM ./weights.gguf\nSYSTEM "Speak \\"plainly\\"."\nPARAMETER temperature hot\n', encoding="utf-8")
    imported = read_modelfile(path, "x")
    assert imported.preset.model == str((tmp_path / "weights.gguf").resolve())
    assert imported.preset.chat.system_prompt == 'Speak "plainly".'
    assert imported.preset.chat.temperature == ChatDefaults().temperature
    assert any(note.startswith("PARAMETER temperature hot left out: temperature must be") for note in imported.notes)


def test_an_unclosed_triple_quote_is_a_one_line_error(tmp_path, capsys):
    path = tmp_path / "Modelfile"
    path.write_text('FROM x\nSYSTEM """\nnever closed\n', encoding="utf-8")
    with pytest.raises(PresetError, match='line 2: a """ string is not closed'):
        read_modelfile(path, "x")
    assert cli.main(["preset", "import", str(path)]) == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_preset_import_saves_it_under_the_folders_name_and_says_what_was_left_out(tmp_path, capsys):
    folder = tmp_path / "mario"
    folder.mkdir()
    (folder / "Modelfile").write_text(MARIO, encoding="utf-8")
    assert cli.main(["preset", "import", str(folder / "Modelfile")]) == 0
    out, err = capsys.readouterr()
    assert "preset 'mario'" in out and "chatapp run --preset mario" in out
    assert "note: TEMPLATE left out" in err
    assert find_preset("mario").chat.top_k == 20
    assert cli.main(["preset", "import", str(folder / "Modelfile")]) == 1  # exists
    assert cli.main(["preset", "import", str(folder / "Modelfile"), "--name", "luigi"]) == 0
    assert cli.main(["preset", "import", str(folder / "Modelfile"), "--force"]) == 0


def test_a_preset_replaces_the_exports_sampling_lines_and_adds_its_system_prompt(tmp_path):
    preset = Preset("calm", ChatDefaults(system_prompt="Be calm.", temperature=0.3, seed=7))
    text = with_preset(modelfile("m-f16.gguf", 256), preset)
    lines = text.splitlines()
    assert lines[0] == "FROM ./m-f16.gguf" and lines[1].startswith("TEMPLATE")
    assert [line for line in lines if line.startswith("PARAMETER temperature")] == ["PARAMETER temperature 0.3"]
    assert 'SYSTEM """Be calm."""' in lines and "PARAMETER seed 7" in lines and "PARAMETER num_ctx 256" in lines
    assert "PARAMETER num_predict 256" in lines
    # and read back as a preset, it is the same one
    path = tmp_path / "Modelfile"
    path.write_text(text, encoding="utf-8")
    assert read_modelfile(path, "calm").preset.chat == preset.chat


def test_export_preset_needs_the_ollama_format(capsys):
    save_preset(Preset("p", ChatDefaults()))
    assert cli.main(["export", "--format", "gguf", "--preset", "p"]) == 1
    assert "--preset goes with --format ollama" in capsys.readouterr().err


def test_export_ollama_with_a_preset_writes_it_into_the_modelfile(tmp_path, monkeypatch, capsys):
    from chatapp import commands

    def export(args):  # the export itself is tested elsewhere: here only its Modelfile matters
        out = tmp_path / args.output
        out.mkdir()
        (out / "Modelfile").write_text(modelfile("m-f16.gguf", 256), encoding="utf-8")
        return 0

    monkeypatch.setattr(commands, "command_export", export)
    save_preset(Preset("p", ChatDefaults(system_prompt="Be calm.", top_k=5)))
    argv = ["export", "somewhere", "--format", "ollama", "--preset", "p", "-o", str(tmp_path / "out")]
    assert cli.main(argv) == 0
    written = (tmp_path / "out" / "Modelfile").read_text(encoding="utf-8")
    assert 'SYSTEM """Be calm."""' in written and "PARAMETER top_k 5" in written
    assert "holds the preset 'p'" in capsys.readouterr().out
