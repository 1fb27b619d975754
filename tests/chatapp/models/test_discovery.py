"""Finding the GGUF files users bring (Ollama, LM Studio, the Hugging Face cache,
the user models folder), labelling them apart, and `chatapp models`' table."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import gguf
import numpy as np
import pytest

from chatapp.models.discovery import discover_models, hf_cache_models, lm_studio_models, ollama_models
from chatapp.models.listing import gguf_label, model_label, model_lines, model_records
from chatapp.models.registry import ModelRef
from chatapp.models.resolve import resolve_model
from chatapp.paths import user_models_dir

Q8_0, Q4_K_M, F32 = gguf.LlamaFileType.MOSTLY_Q8_0, gguf.LlamaFileType.MOSTLY_Q4_K_M, gguf.LlamaFileType.ALL_F32


def write_gguf(
    path: Path, name: str | None = "Tiny Llama", file_type: int | None = Q8_0, vocabulary: int = 8, weights: int = 16
) -> Path:
    """A small but well-formed GGUF file; general.file_type last, as llama-quantize writes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(path, "llama")
    if name is not None:
        writer.add_name(name)
    writer.add_context_length(128)
    writer.add_token_list([f"token{i}" for i in range(vocabulary)])
    writer.add_token_types([1] * vocabulary)
    if file_type is not None:
        writer.add_file_type(file_type)
    writer.add_tensor("token_embd.weight", np.zeros(weights, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    """A fresh home: no LM Studio, Ollama or Hugging Face folders but what a test makes."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for variable in ("OLLAMA_MODELS", "HF_HOME", "HF_HUB_CACHE"):
        monkeypatch.delenv(variable, raising=False)
    return home


def names(refs: list[ModelRef]) -> list[str]:
    return [ref.name for ref in refs]


# Ollama


def ollama_manifest(store: Path, name_parts: str, layers: dict[str, bytes | None]) -> None:
    """A manifest under store/manifests/name_parts naming one blob per layer (media type -> content; None: no blob)."""
    entries = []
    for media_type, content in layers.items():
        digest = "sha256:" + hashlib.sha256(f"{name_parts} {media_type}".encode()).hexdigest()
        entries.append({"mediaType": media_type, "digest": digest, "size": len(content or b"")})
        if content is not None:
            (store / "blobs").mkdir(parents=True, exist_ok=True)
            (store / "blobs" / digest.replace(":", "-")).write_bytes(content)
    manifest = store / "manifests" / name_parts
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({"schemaVersion": 2, "layers": entries}))


def make_ollama_store(store: Path, tmp_path: Path) -> None:
    model = write_gguf(tmp_path / "weights.gguf").read_bytes()
    license_layer = {"application/vnd.ollama.image.license": b"MIT"}
    ollama_manifest(
        store, "registry.ollama.ai/library/llama3.2/3b", {**license_layer, "application/vnd.ollama.image.model": model}
    )
    ollama_manifest(
        store, "registry.ollama.ai/someone/tiny/latest", {"application/vnd.ollama.image.model": model + b"x"}
    )
    ollama_manifest(store, "hf.co/bartowski/Tiny-GGUF/Q4_K_M", {"application/vnd.ollama.image.model": model + b"y"})
    ollama_manifest(store, "registry.ollama.ai/library/gone/latest", {"application/vnd.ollama.image.model": None})
    ollama_manifest(store, "registry.ollama.ai/library/eyes/latest", {"application/vnd.ollama.image.projector": model})
    broken = store / "manifests" / "registry.ollama.ai" / "library" / "broken" / "latest"
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json")
    (store / "manifests" / "registry.ollama.ai" / "library" / "odd").mkdir()
    (store / "manifests" / "registry.ollama.ai" / "library" / "odd" / "1b").write_text("[1, 2]")


@pytest.mark.parametrize("where", ["OLLAMA_MODELS", "home"])
def test_ollama_models_get_their_ollama_names_and_point_at_the_blob(where, home, tmp_path, monkeypatch):
    if where == "OLLAMA_MODELS":
        store = tmp_path / "elsewhere" / "ollama"
        monkeypatch.setenv("OLLAMA_MODELS", str(store))
    else:
        store = home / ".ollama" / "models"
    make_ollama_store(store, tmp_path)

    refs = ollama_models()

    assert sorted(names(refs)) == ["hf.co/bartowski/Tiny-GGUF:Q4_K_M", "llama3.2:3b", "someone/tiny:latest"]
    assert {ref.source for ref in refs} == {"Ollama"} and {ref.kind for ref in refs} == {"gguf"}
    llama = next(ref for ref in refs if ref.name == "llama3.2:3b")
    assert llama.path.parent == store / "blobs" and llama.path.name.startswith("sha256-")
    assert model_label(llama).startswith("Tiny Llama · Q8_0 · ")


def test_an_ollama_model_resolves_by_its_ollama_name(home, tmp_path):
    make_ollama_store(home / ".ollama" / "models", tmp_path)
    ref = resolve_model("llama3.2:3b")
    assert ref.source == "Ollama" and ref.path.parent.name == "blobs"


# LM Studio


def test_lm_studio_models_are_named_publisher_repo_file_in_both_folders(home):
    write_gguf(home / ".lmstudio" / "models" / "lmstudio-community" / "Tiny-GGUF" / "Tiny-Q8_0.gguf")
    write_gguf(home / ".lmstudio" / "models" / "lmstudio-community" / "Tiny-GGUF" / "mmproj-Tiny-F16.gguf")
    write_gguf(
        home / ".cache" / "lm-studio" / "models" / "bartowski" / "Small-GGUF" / "Small-Q4_K_M.gguf", file_type=Q4_K_M
    )
    (home / ".lmstudio" / "models" / "lmstudio-community" / "Tiny-GGUF" / "README.md").write_text("hi")

    refs = lm_studio_models()

    assert names(refs) == ["lmstudio-community/Tiny-GGUF/Tiny-Q8_0", "bartowski/Small-GGUF/Small-Q4_K_M"]
    assert {ref.source for ref in refs} == {"LM Studio"}


def test_a_multi_part_gguf_is_listed_once_by_its_first_part_with_the_size_of_all(home):
    folder = home / ".lmstudio" / "models" / "someone" / "Big-GGUF"
    parts = [write_gguf(folder / f"Big-Q4_K_M-{i:05d}-of-00003.gguf", file_type=Q4_K_M) for i in (1, 2, 3)]
    write_gguf(user_models_dir() / "mine-00001-of-00002.gguf")
    write_gguf(user_models_dir() / "mine-00002-of-00002.gguf")

    refs = discover_models()

    assert [ref.path for ref in refs if ref.source == "LM Studio"] == [parts[0]]
    assert [ref.name for ref in refs if ref.source == "user"] == ["mine-00001-of-00002"]
    big = next(ref for ref in refs if ref.source == "LM Studio")
    assert big.size_bytes == sum(part.stat().st_size for part in parts)
    parts[2].unlink()
    assert "unreadable" in model_label(big) and parts[2].name in model_label(big)


# Hugging Face hub cache


def make_hf_repo(hub: Path, repo: str, revisions: dict[str, dict[str, int]], main: str) -> Path:
    """hub/models--ORG--NAME: each revision's files are links into blobs/, as huggingface_hub lays them out."""
    repo_dir = hub / f"models--{repo.replace('/', '--')}"
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(main)
    for revision, files in revisions.items():
        for file, file_type in files.items():
            blob = write_gguf(repo_dir / "blobs" / f"{revision}-{file.replace('/', '_')}", file_type=file_type)
            link = repo_dir / "snapshots" / revision / file
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
    return repo_dir


@pytest.mark.parametrize("variable", ["HF_HUB_CACHE", "HF_HOME", None])
def test_hugging_face_cache_gguf_files_are_named_org_repo_file_once_preferring_main(
    variable, home, tmp_path, monkeypatch
):
    if variable == "HF_HUB_CACHE":
        hub = tmp_path / "hub-cache"
        monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    elif variable == "HF_HOME":
        hub = tmp_path / "hf-home" / "hub"
        monkeypatch.setenv("HF_HOME", str(hub.parent))
    else:
        hub = home / ".cache" / "huggingface" / "hub"
    repo = make_hf_repo(
        hub,
        "Qwen/Tiny-GGUF",
        main="aaaa",
        revisions={
            "aaaa": {"tiny-q8_0.gguf": Q8_0},
            "bbbb": {"tiny-q8_0.gguf": Q4_K_M, "sub/tiny-f32.gguf": F32},
        },
    )
    (hub / "datasets--someone--data" / "snapshots" / "cccc").mkdir(parents=True)
    (hub / "datasets--someone--data" / "snapshots" / "cccc" / "data.gguf").write_bytes(b"GGUF")

    refs = hf_cache_models()

    assert sorted(names(refs)) == ["Qwen/Tiny-GGUF/sub/tiny-f32.gguf", "Qwen/Tiny-GGUF/tiny-q8_0.gguf"]
    q8 = next(ref for ref in refs if ref.name.endswith("q8_0.gguf"))
    assert q8.path == repo / "snapshots" / "aaaa" / "tiny-q8_0.gguf" and q8.source == "Hugging Face"
    assert " · Q8_0 · " in model_label(q8)


def test_the_same_file_found_twice_is_listed_once(home):
    path = write_gguf(home / ".lmstudio" / "models" / "a" / "b" / "c.gguf")
    link = home / "link.gguf"
    link.symlink_to(path)
    refs = discover_models([str(link), str(path)])
    assert [(ref.name, ref.source) for ref in refs if ref.kind == "gguf" and ref.source != "built-in"] == [
        ("link", "added")
    ]


# Labels


def test_two_quantizations_of_one_model_get_different_labels(tmp_path):
    q8 = write_gguf(tmp_path / "model-q8_0.gguf", name="Qwen2.5 0.5B Instruct", file_type=Q8_0, weights=2_000_000)
    q4 = write_gguf(tmp_path / "model-q4_k_m.gguf", name="Qwen2.5 0.5B Instruct", file_type=Q4_K_M, weights=100_000)
    f32 = write_gguf(tmp_path / "model-f32.gguf", name="Qwen2.5 0.5B Instruct", file_type=F32)

    assert gguf_label(q8) == "Qwen2.5 0.5B Instruct · Q8_0 · 8.0 MB"
    assert gguf_label(q4) == "Qwen2.5 0.5B Instruct · Q4_K_M · 0.4 MB"
    assert gguf_label(f32).startswith("Qwen2.5 0.5B Instruct · F32 · ")


@pytest.mark.parametrize(
    "file_name, quantization",
    [
        ("Llama-3.2-1B-Instruct-IQ4_XS.gguf", "IQ4_XS"),
        ("qwen2.5-0.5b-instruct-q4_k_m.gguf", "Q4_K_M"),
        ("model.Q8_0.gguf", "Q8_0"),
        ("gemma-2b-f16.gguf", "F16"),
    ],
)
def test_a_header_without_name_or_type_falls_back_to_the_file_name(tmp_path, file_name, quantization):
    path = write_gguf(tmp_path / file_name, name=None, file_type=None)
    assert gguf_label(path).startswith(f"{path.stem} · {quantization} · ")


def test_a_header_without_either_still_gets_a_label(tmp_path):
    assert gguf_label(write_gguf(tmp_path / "mystery.gguf", name=None, file_type=None)) == "mystery · 0.0 MB"


@pytest.mark.parametrize(
    "content", [b"", b"GGUF", b"GGML" + bytes(40), b"GGUF\x07\x00\x00\x00" + bytes(40), "truncated"]
)
def test_a_damaged_gguf_is_labelled_unreadable_and_still_listed(content, tmp_path):
    path = user_models_dir() / "damaged.gguf"
    if content == "truncated":  # cut off in the middle of the vocabulary
        whole = write_gguf(tmp_path / "whole.gguf", vocabulary=1000).read_bytes()
        content = whole[: len(whole) // 3]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)

    [ref] = [ref for ref in discover_models() if ref.name == "damaged"]
    assert model_label(ref).startswith("unreadable (")
    assert any("damaged" in line and "unreadable" in line for line in model_lines([ref], None))


def test_a_label_follows_the_file_when_it_changes(tmp_path):
    path = write_gguf(tmp_path / "model.gguf", file_type=Q8_0)
    assert " · Q8_0 · " in gguf_label(path)
    write_gguf(path, file_type=Q4_K_M, weights=64)
    assert " · Q4_K_M · " in gguf_label(path)


def test_reading_a_label_skips_a_large_vocabulary_quickly(tmp_path):
    """gguf.GGUFReader takes seconds on a 150k-token vocabulary; the header walk takes milliseconds."""
    path = write_gguf(tmp_path / "big-vocab.gguf", vocabulary=150_000)
    start = time.perf_counter()
    label = gguf_label(path)
    assert time.perf_counter() - start < 0.5
    assert label.startswith("Tiny Llama · Q8_0 · ")


# `chatapp models`


def test_model_lines_align_the_columns_mark_the_default_and_name_the_models_folder(home):
    good = write_gguf(user_models_dir() / "good.gguf", name="Good Model", file_type=Q4_K_M)
    write_gguf(home / ".lmstudio" / "models" / "pub" / "repo" / "other-file.gguf")
    refs = [ref for ref in discover_models() if ref.source in ("user", "LM Studio")]

    lines = model_lines(refs, default_path=good)

    assert lines[0].startswith("* good ") and lines[1].startswith("  pub/repo/other-file ")
    assert lines[0].index("user") == lines[1].index("LM Studio")
    assert lines[0].index("Good Model · Q4_K_M") == lines[1].index("Tiny Llama · Q8_0")
    assert lines[-2] == "* the default model"
    assert lines[-1] == f"your models folder: {user_models_dir()} (put model folders or .gguf files there)"
    records = model_records(refs, default_path=good)
    assert records[0] == {
        "name": "good",
        "path": str(good),
        "kind": "gguf",
        "source": "user",
        "size_bytes": good.stat().st_size,
        "label": gguf_label(good),
        "default": True,
        "pulled": False,
    }
    assert [record["default"] for record in records] == [True, False]


def test_model_lines_without_models_say_so():
    assert model_lines([], None) == [
        "no models found",
        f"your models folder: {user_models_dir()} (put model folders or .gguf files there)",
    ]


def test_a_bad_user_model_folder_is_listed_as_unreadable_among_the_rest():
    models = user_models_dir()
    write_gguf(models / "fine.gguf")
    (models / "no-json").mkdir()
    (models / "no-json" / "config.json").write_text("{oops")
    (models / "no-shape").mkdir()
    (models / "no-shape" / "config.json").write_text('{"format": "chatapp-gpt", "architecture": {}}')

    refs = [ref for ref in discover_models() if ref.source == "user"]
    lines = model_lines(refs, None)

    assert names(refs) == ["fine", "no-json", "no-shape"]
    assert "Tiny Llama · Q8_0" in lines[0]
    assert "unreadable" in lines[1] and "unreadable" in lines[2]
    assert [record["label"].startswith("unreadable") for record in model_records(refs, None)] == [False, True, True]


# The F4 picker


@pytest.mark.asyncio
async def test_the_picker_shows_labels_and_sources(home, tmp_path):
    from textual.widgets import OptionList

    from chatapp.tui.screens.models import ModelPickerScreen
    from tests.helpers.fake_backend import FakeBackend
    from tests.helpers.tui_app import make_app, wait_until

    make_ollama_store(home / ".ollama" / "models", tmp_path)
    app = make_app(FakeBackend())
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.press("f4")
        await wait_until(pilot, lambda: isinstance(app.screen, ModelPickerScreen))
        options = app.screen.query_one("#models", OptionList)
        prompts = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
    assert any(p.startswith("llama3.2:3b  Tiny Llama · Q8_0 · ") and p.endswith("  Ollama") for p in prompts)
    assert any(p.startswith("shakespeare-chat-q8_0  shakespeare-chat · Q8_0") for p in prompts)


def test_a_long_label_is_shortened_in_the_table_but_whole_in_the_records():
    folder = user_models_dir() / "broken"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{" + "x" * 200)
    [ref] = [ref for ref in discover_models() if ref.source == "user"]
    [line] = model_lines([ref], None)[:1]
    [record] = model_records([ref], None)
    assert record["label"].startswith("unreadable (config.json: not valid JSON")
    assert len(record["label"]) > 60 and record["label"][:59] + "…" in line
