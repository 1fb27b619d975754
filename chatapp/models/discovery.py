"""Every model the picker can offer: chatapp's own (built-in and user), GGUF
files the user added by path, and the GGUF models that LM Studio, Ollama and
the Hugging Face hub cache keep on this machine. Nothing here loads a model or
reads more of a file than its directory entry, so discovery stays fast."""

from __future__ import annotations

import json
import os
from pathlib import Path

from chatapp.models.registry import ModelRef, is_later_split_part, list_models

OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"
OLLAMA_LIBRARY = ("registry.ollama.ai", "library")


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


def resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return path


def discover_models(extra_paths: list[str] | None = None) -> list[ModelRef]:
    """Ours, the added ones, then LM Studio's, Ollama's and the Hugging Face cache's; each file once."""
    found = list_models() + added_models(extra_paths or []) + lm_studio_models() + ollama_models() + hf_cache_models()
    unique, seen = [], set()
    for ref in found:
        key = resolved(ref.path)
        if key not in seen:
            seen.add(key)
            unique.append(ref)
    return unique
