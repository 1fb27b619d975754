"""A GGUF file opened by its path (the command line, the model picker) is remembered in the data
folder and listed by `chatapp models` and the picker from then on, until the file is gone."""

from __future__ import annotations

from pathlib import Path

from chatapp import cli, commands
from chatapp.models.discovery import discover_models, remember_path, remembered_file, remembered_paths
from chatapp.models.listing import model_lines
from chatapp.models.opening import OpenedModel
from tests.helpers.fake_backend import FakeBackend


def gguf_file(path: Path) -> Path:
    path.write_bytes(b"GGUF" + bytes(60))  # the magic is all remembering looks at
    return path


def test_a_remembered_file_is_listed_until_it_is_gone(tmp_path):
    first, second = gguf_file(tmp_path / "first.gguf"), gguf_file(tmp_path / "second.gguf")
    remember_path(str(first))
    remember_path(str(second))
    remember_path(str(first))  # again: moved to the front, not listed twice
    assert remembered_paths() == [str(first.resolve()), str(second.resolve())]
    listed = [ref for ref in discover_models() if ref.source == "opened"]
    assert [(ref.name, ref.kind) for ref in listed] == [("first", "gguf"), ("second", "gguf")]
    lines = model_lines(discover_models(), None)
    assert any("first" in line and "opened" in line for line in lines)
    assert "opened: a GGUF file once opened by its path, listed while it is there" in lines
    first.unlink()
    assert remembered_paths() == [str(second.resolve())]
    assert str(first.resolve()) not in remembered_file().read_text(encoding="utf-8")  # dropped from the file too


def test_what_is_not_a_gguf_file_is_not_remembered_and_a_damaged_list_is_no_failure(tmp_path):
    text = tmp_path / "notes.gguf"
    text.write_text("not a model", encoding="utf-8")
    remember_path(str(text))
    remember_path(str(tmp_path / "missing.gguf"))
    assert remembered_paths() == []
    remembered_file().parent.mkdir(parents=True, exist_ok=True)
    remembered_file().write_text("{not json", encoding="utf-8")
    assert remembered_paths() == []
    assert discover_models() is not None


def test_run_with_a_gguf_path_remembers_it(tmp_path, monkeypatch):
    model = gguf_file(tmp_path / "mine.gguf")
    monkeypatch.setattr(cli, "start_worker_early", lambda args: None)  # no llama.cpp worker for a fake file
    monkeypatch.setattr(commands, "open_model", lambda *a, **k: OpenedModel(FakeBackend(replies=[["hi"]]), "fake"))
    assert cli.main(["run", "hello", "-m", str(model)]) == 0
    assert remembered_paths() == [str(model.resolve())]
