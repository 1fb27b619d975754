"""The Hugging Face cache's own layout (blobs, snapshots, refs), as a pull writes into it and
`chatapp rm` removes from it."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from chatapp.models.discovery import hf_hub_dir
from chatapp.models.hub_plan import HubFile, Plan, PullError
from chatapp.models.listing import human_size
from chatapp.models.pulled import forget, pulled_models

# The cache


def repo_folder(repo: str, hub: Path | None = None) -> Path:
    return (hub or hf_hub_dir()) / ("models--" + repo.replace("/", "--"))


@dataclass
class CachePaths:
    hub: Path
    repo: str
    commit: str

    @property
    def storage(self) -> Path:
        return repo_folder(self.repo, self.hub)

    def pointer(self, file: HubFile) -> Path:
        return self.storage / "snapshots" / self.commit / Path(*file.path.split("/"))

    def blob(self, file: HubFile) -> Path:
        return self.storage / "blobs" / file.cache_blob_name

    def incomplete(self, file: HubFile) -> Path:
        return self.storage / "blobs" / f"{file.cache_blob_name}.incomplete"

    def lock(self, file: HubFile) -> Path:
        return self.hub / ".locks" / self.storage.name / f"{file.cache_blob_name}.lock"

    def have(self, file: HubFile) -> int:
        """Bytes of the file already here: all of it (pointer or blob), or what an earlier pull kept."""
        for complete in (self.pointer(file), self.blob(file)):
            if complete.is_file() and complete.stat().st_size == file.size:
                return file.size
        try:
            return min(self.incomplete(file).stat().st_size, file.size)
        except OSError:
            return 0


def link_pointer(blob: Path, pointer: Path) -> None:
    """snapshots/COMMIT/FILE -> ../../blobs/BLOB, relative, as huggingface_hub links it (a move where links
    cannot be made, as huggingface_hub does then)."""
    pointer.parent.mkdir(parents=True, exist_ok=True)
    temporary = pointer.with_name(f".{pointer.name}.{os.getpid()}.link")
    try:
        os.symlink(os.path.relpath(blob, pointer.parent), temporary)
        os.replace(temporary, pointer)
    except OSError:
        temporary.unlink(missing_ok=True)
        shutil.move(str(blob), str(pointer))


def write_ref(storage: Path, revision: str, commit: str) -> None:
    if revision == commit or re.fullmatch(r"[0-9a-f]{40}", revision):
        return
    ref = storage / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    temporary = ref.with_name(f".{ref.name}.{os.getpid()}")
    temporary.write_text(commit, encoding="utf-8")
    os.replace(temporary, ref)


def free_bytes(folder: Path) -> int:
    """Free space where `folder` is (or would be made)."""
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    return shutil.disk_usage(existing).free


def check_disk_space(plan: Plan, paths: CachePaths) -> int:
    """Bytes still to fetch; a refusal naming the size needed when the disk has less free."""
    needed = sum(f.size - paths.have(f) for f in plan.chosen.files)
    if needed <= 0:
        return 0
    free = free_bytes(paths.storage)
    if free < needed:
        raise PullError(
            f"not enough disk space: {plan.again} needs {human_size(needed)} in {paths.hub}, "
            f"and {human_size(free)} is free"
        )
    return needed


def remove_if_ours(path: Path, existed: bool) -> None:
    """A folder this pull made, and what is in it: gone again after a refused download."""
    if not existed and path.exists():
        shutil.rmtree(path, ignore_errors=True)


# chatapp rm


@dataclass(frozen=True)
class Removal:
    name: str
    files: list[Path]  # the snapshot entries, every part
    size_bytes: int
    pulled: bool  # pulled by chatapp (else only found in the cache)


def find_removal(name: str) -> Removal:
    """A model in the Hugging Face cache by what it was pulled as, its `chatapp models` name, or its path."""
    from chatapp.models.discovery import discover_models, hf_cache_models
    from chatapp.models.pulled import find_pulled
    from chatapp.models.registry import ModelRef, split_parts

    entry = find_pulled(name)
    if entry is not None:
        files = [Path(f) for f in entry.files] or split_parts(Path(entry.path))
        return Removal(entry.spec, files, sum(ref_size(f) for f in files), True)
    matches = [ref for ref in hf_cache_models() if name in (ref.name, str(ref.path))]
    if matches:
        ref: ModelRef = matches[0]
        files = split_parts(ref.path)
        return Removal(ref.name, files, ref.size_bytes, Path(ref.path) in {Path(e.path) for e in pulled_models()})
    elsewhere = [ref for ref in discover_models() if name in (ref.name, str(ref.path))]
    if elsewhere:
        ref = elsewhere[0]
        raise PullError(
            f"{name} is {ref.source}'s ({ref.path}), not in the Hugging Face cache: chatapp rm removes "
            "only what is there"
        )
    pulled = ", ".join(sorted(e.spec for e in pulled_models())) or "none"
    raise PullError(f"no pulled model named {name!r} (pulled: {pulled}; `chatapp models` lists every model)")


def ref_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def remove_model(removal: Removal) -> int:
    """Delete the snapshot entries and the blobs no other entry uses; the repo's folder when nothing is left in
    it. Bytes freed."""
    freed = 0
    storage = next((p for f in removal.files for p in f.parents if p.name.startswith("models--")), None)
    for file in removal.files:
        target = blob_of(file)
        size = ref_size(file)
        file.unlink(missing_ok=True)
        if target is not None and target != file:
            if storage is None or not linked_from(storage, target):
                target.unlink(missing_ok=True)
                (target.parent / f"{target.name}.incomplete").unlink(missing_ok=True)
                freed += size
        else:
            freed += size
        forget(file)
        remove_empty_folders(file.parent, stop=storage)
    if storage is not None and not any(p.is_file() for p in (storage / "snapshots").rglob("*")):
        shutil.rmtree(storage, ignore_errors=True)
        shutil.rmtree(storage.parent / ".locks" / storage.name, ignore_errors=True)
    return freed


def blob_of(pointer: Path) -> Path | None:
    try:
        return pointer.resolve() if pointer.is_symlink() else pointer
    except OSError:
        return None


def linked_from(storage: Path, blob: Path) -> bool:
    """Whether any snapshot entry still points at `blob`."""
    for entry in (storage / "snapshots").rglob("*"):
        if entry.is_symlink() and blob_of(entry) == blob:
            return True
    return False


def remove_empty_folders(folder: Path, stop: Path | None) -> None:
    while stop is not None and folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent
