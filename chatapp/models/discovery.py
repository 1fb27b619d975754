"""Every model the picker can offer: chatapp's own (built-in and user), GGUF
files the user added by path, and the GGUF models that LM Studio, Ollama and
the Hugging Face hub cache keep on this machine. Nothing here loads a model or
reads more of a file than its directory entry, so discovery stays fast.

A GGUF file once opened by its path (`chatapp run -m FILE.gguf`, the model
picker) is remembered in DATA/remembered-models.json and listed from then on,
until the file is gone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from chatapp.models.registry import ModelRef, is_later_split_part, list_models
from chatapp.paths import data_dir

OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"
OLLAMA_LIBRARY = ("registry.ollama.ai", "library")
REMEMBERED_FILE = "remembered-models.json"
MOST_REMEMBERED = 50  # the newest; an older one falls off


def is_listable_gguf(path: Path) -> bool:
    """A .gguf that is a model of its own: not a vision projector, not the second part of a split file."""
    name = path.name.lower()
    return name.endswith(".gguf") and not name.startswith("mmproj") and not is_later_split_part(path)


def gguf_files_under(directory: Path) -> list[Path]:
    """Every listable .gguf below `directory`, sorted, without following directory links."""
    found = []
    for folder, subfolders, files in os.walk(directory):
        subfolders.sort()
        found += [Path(folder) / name for name in sorted(files) if is_listable_gguf(Path(name))]
    return found


# LM Studio: MODELS/publisher/repo/file.gguf


def lm_studio_dirs() -> list[Path]:
    home = Path.home()
    return [home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"]


def lm_studio_models() -> list[ModelRef]:
    refs = []
    for directory in lm_studio_dirs():
        for path in gguf_files_under(directory):
            name = path.relative_to(directory).with_suffix("").as_posix()
            refs.append(ModelRef(name, path, "gguf", "LM Studio"))
    return refs


# Ollama: MODELS/manifests/HOST/NAMESPACE/MODEL/TAG (JSON naming its layers) and MODELS/blobs/sha256-DIGEST


def ollama_dir() -> Path:
    return Path(os.environ.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models")


def ollama_name(manifest_parts: tuple[str, ...]) -> str:
    """What `ollama list` calls a manifest: llama3.2:3b, namespace/model:tag, hf.co/org/repo:tag."""
    *repository, tag = manifest_parts
    if tuple(repository[:2]) == OLLAMA_LIBRARY:
        repository = repository[2:]
    elif repository[:1] == [OLLAMA_LIBRARY[0]]:
        repository = repository[1:]
    return f"{'/'.join(repository)}:{tag}"


def ollama_model_blob(manifest: Path, blobs: Path) -> Path | None:
    """The GGUF blob a manifest names, or None: unreadable manifest, no model layer, blob missing."""
    try:
        layers = json.loads(manifest.read_text(encoding="utf-8")).get("layers", [])
        digests = [layer["digest"] for layer in layers if layer.get("mediaType") == OLLAMA_MODEL_LAYER]
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return None
    blob = blobs / str(digests[0]).replace(":", "-") if digests else None
    return blob if blob is not None and blob.is_file() else None


def ollama_models() -> list[ModelRef]:
    manifests, blobs = ollama_dir() / "manifests", ollama_dir() / "blobs"
    refs = []
    for folder, subfolders, files in os.walk(manifests):
        subfolders.sort()
        for file in sorted(files):
            manifest = Path(folder) / file
            blob = ollama_model_blob(manifest, blobs)
            if blob is not None:
                refs.append(ModelRef(ollama_name(manifest.relative_to(manifests).parts), blob, "gguf", "Ollama"))
    return refs


# Hugging Face hub cache: HUB/models--ORG--NAME/snapshots/REVISION/file.gguf, refs/main naming a revision


def hf_hub_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def hf_main_revision(repo_dir: Path) -> str:
    try:
        return (repo_dir / "refs" / "main").read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def hf_revisions(repo_dir: Path) -> list[Path]:
    """A cached repository's snapshot folders: the one refs/main names first, then the newest."""
    main = hf_main_revision(repo_dir)
    try:
        snapshots = [p for p in (repo_dir / "snapshots").iterdir() if p.is_dir()]
    except OSError:
        return []
    return sorted(snapshots, key=lambda p: (p.name != main, -p.stat().st_mtime, p.name))


def hf_repo_models(repo_dir: Path) -> list[ModelRef]:
    repo_id = repo_dir.name.removeprefix("models--").replace("--", "/")
    refs, seen = [], set()
    for snapshot in hf_revisions(repo_dir):
        for path in gguf_files_under(snapshot):
            file = path.relative_to(snapshot).as_posix()
            if file not in seen:  # the same file in an older revision
                seen.add(file)
                refs.append(ModelRef(f"{repo_id}/{file}", path, "gguf", "Hugging Face"))
    return refs


def hf_cache_models() -> list[ModelRef]:
    hub = hf_hub_dir()
    try:
        repos = sorted(p for p in hub.iterdir() if p.name.startswith("models--") and p.is_dir())
    except OSError:
        return []
    return [ref for repo in repos for ref in hf_repo_models(repo)]


def added_models(paths: list[str]) -> list[ModelRef]:
    return [ModelRef(Path(p).stem, Path(p), "gguf", "added") for p in paths if Path(p).is_file()]


# GGUF files opened by path, newest first


def remembered_file() -> Path:
    return data_dir() / REMEMBERED_FILE


def _read_remembered() -> list[str]:
    try:
        paths = json.loads(remembered_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none yet, or damaged: start again rather than fail a listing
        return []
    return [p for p in paths if isinstance(p, str)] if isinstance(paths, list) else []


def _write_remembered(paths: list[str]) -> None:
    try:
        remembered_file().parent.mkdir(parents=True, exist_ok=True)
        temporary = remembered_file().with_suffix(".tmp")
        temporary.write_text(json.dumps(paths, indent=1), encoding="utf-8")
        temporary.replace(remembered_file())
    except OSError:
        pass  # a convenience: a data folder that cannot be written lists nothing extra


def remembered_paths() -> list[str]:
    """The GGUF files opened by path that are still there (the others are dropped from the list)."""
    paths = _read_remembered()
    present = [p for p in paths if Path(p).is_file()]
    if present != paths:
        _write_remembered(present)
    return present


def remember_path(spec: str) -> None:
    """Remember a GGUF file opened by path (an absolute path; a file that is not a GGUF is not kept)."""
    path = Path(spec).expanduser()
    try:
        path = path.resolve()
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF":
                return
    except (OSError, RuntimeError):
        return
    paths = _read_remembered()
    if paths[:1] == [str(path)]:
        return
    _write_remembered([str(path), *[p for p in paths if p != str(path)]][:MOST_REMEMBERED])


def resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return path


def discover_models(extra_paths: list[str] | None = None) -> list[ModelRef]:
    """Ours, the added ones, LM Studio's, Ollama's and the Hugging Face cache's, then those opened by path;
    each file once."""
    found = list_models() + added_models(extra_paths or []) + lm_studio_models() + ollama_models() + hf_cache_models()
    found += [ModelRef(Path(p).stem, Path(p), "gguf", "opened") for p in remembered_paths()]
    unique, seen = [], set()
    for ref in found:
        key = resolved(ref.path)
        if key not in seen:
            seen.add(key)
            unique.append(ref)
    return unique
