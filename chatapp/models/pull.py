"""`chatapp pull REPO[:QUANT]`: a GGUF model from the Hugging Face hub into
the Hugging Face cache, through huggingface_hub (imported inside the functions that use it, so
`chatapp --version` does not pay for it).

How a pull goes (`pull`):

1. `hub_plan.parse_spec`: REPO, REPO:QUANT, REPO:FILE.gguf, hf.co/REPO:QUANT, or the URL of one .gguf on the hub.
2. `hub_plan.plan_pull`: the repo's files with sizes and SHA-256 (one model_info call); its GGUF models (a split
   model's parts count as one); the one asked for, else Q4_K_M, else the smallest of at least 4 bits
   per weight, with the reason; a vision projector (mmproj) noted, not fetched.
3. Free disk space checked against what is still missing, before any byte is fetched.
4. Each file: huggingface_hub's `http_get` appends to BLOB.incomplete in the cache's blobs folder
   (the name huggingface_hub itself used to resume from), so a Ctrl+C or a dropped connection keeps
   what arrived and the next pull asks only for the rest (an HTTP Range request). The bytes are hashed
   as they arrive, in a thread of their own; a file that does not match the hub's SHA-256 is deleted
   and nothing of it stays in the cache. Only then does it become the blob, and the snapshot link
   (snapshots/COMMIT/FILE -> blobs/SHA256) and refs/REVISION are written, the cache's own layout.
5. `quant.gguf_check.check_gguf` on the finished file; the pull is recorded (chatapp.models.pulled).

Every failure is a `PullError` with one line that says what to do; progress is reported as
`PullEvent`s to a callback (the command line prints them; the TUI can show them), and a pull can be
cancelled from another thread (`cancel`), keeping what arrived.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from chatapp.models.discovery import hf_hub_dir
from chatapp.models.hub_cache import CachePaths, check_disk_space, link_pointer, remove_if_ours, repo_folder, write_ref
from chatapp.models.hub_plan import (
    HubFile,
    Plan,
    PullError,
    PullSpec,
    hub_endpoint,
    offline_mode,
    parse_spec,
    plan_pull,
    safe_token,
    with_hub_errors,
)
from chatapp.models.listing import human_size
from chatapp.models.pulled import PulledModel, remember

PROGRESS_EVERY_S = 0.1  # the most often a progress event is sent
SPEED_WINDOW_S = 5.0  # speed is measured over the last few seconds
SPEED_WARMUP_S = 0.5  # ... once there is half a second to measure
HASH_QUEUE_CHUNKS = 4  # chunks (huggingface_hub's are 10 MB) waiting for the hashing thread


class PullCancelled(Exception):
    """`cancel` was set: the pull stopped, keeping what arrived for the next one."""


# Progress


@dataclass(frozen=True)
class PullEvent:
    """What a pull reports. kind: "plan" (what was chosen and why), "note" (a vision projector, a file already
    here), "file" (a file starts), "progress", "verified" (a file matched the hub's SHA-256), "checked" (the
    GGUF checks passed), "done". `data` holds the numbers (JSON-ready)."""

    kind: str
    message: str
    data: dict = field(default_factory=dict)

    def record(self) -> dict:
        return {"event": self.kind, "message": self.message, **self.data}


class Transfer:
    """The bytes of one pull, all its files together: what was there, what arrived, how fast, what is left."""

    def __init__(self, total: int, have: int, emit: Callable[[PullEvent], None], cancel: threading.Event | None):
        self.total, self.done, self.emit, self.cancel = total, have, emit, cancel
        self.started = time.monotonic()
        self.samples: deque[tuple[float, int]] = deque([(self.started, have)])
        self.last_sent = 0.0
        self.file = ""

    def advance(self, n: int) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise PullCancelled("cancelled")
        self.done += n
        now = time.monotonic()
        self.samples.append((now, self.done))
        while len(self.samples) > 2 and now - self.samples[0][0] > SPEED_WINDOW_S:
            self.samples.popleft()
        if now - self.last_sent >= PROGRESS_EVERY_S or self.done >= self.total:
            self.last_sent = now
            self.emit(self.event())

    def speed(self) -> float:
        """Bytes per second over the last few seconds; 0 (unknown) in the first half second."""
        (t0, b0), (t1, b1) = self.samples[0], self.samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 - t0 >= SPEED_WARMUP_S else 0.0

    def event(self) -> PullEvent:
        speed = self.speed()
        left = max(self.total - self.done, 0)
        eta = left / speed if speed > 0 else None
        return PullEvent(
            "progress",
            f"{human_size(self.done)} of {human_size(self.total)}",
            {
                "file": self.file,
                "done_bytes": self.done,
                "total_bytes": self.total,
                "bytes_per_second": round(speed),
                "eta_seconds": None if eta is None else round(eta, 1),
            },
        )

    def bar_class(self):
        """A tqdm stand-in for huggingface_hub's http_get: it counts into this transfer."""
        transfer = self

        class Bar:
            def __init__(self, *args, **kwargs):
                pass

            def __enter__(self):
                return self

            def __exit__(self, *exc_info):
                return False

            def update(self, n: int = 1) -> None:
                transfer.advance(n)

            def close(self) -> None:
                pass

        return Bar


# Hashing while the bytes arrive


def new_hasher(file: HubFile):
    """SHA-256 for an LFS file (the hub's checksum); git's blob SHA-1 for a file kept in git."""
    if file.sha256:
        return hashlib.sha256()
    hasher = hashlib.sha1()
    hasher.update(b"blob %d\0" % file.size)
    return hasher


def expected_digest(file: HubFile) -> str:
    return (file.sha256 or file.blob_id or "").lower()


class HashingWriter:
    """The file huggingface_hub's http_get writes to: each chunk is written, then hashed in a thread of
    its own (hashlib lets go of the GIL), so hashing overlaps the download instead of following it."""

    def __init__(self, out, make_hasher: Callable, have: int = 0):
        self.out, self.make_hasher = out, make_hasher
        self.hasher = self.hash_kept(have)
        self.thread = self.start_thread()

    def hash_kept(self, size: int):
        """A new hasher over the first `size` bytes of the file: what an earlier pull kept."""
        hasher = self.make_hasher()
        if size:
            with open(self.out.name, "rb") as kept:
                hash_prefix(kept, size, hasher)
        return hasher

    def start_thread(self) -> threading.Thread:
        self.chunks: queue.Queue = queue.Queue(maxsize=HASH_QUEUE_CHUNKS)
        thread = threading.Thread(
            target=self.hash_chunks, args=(self.chunks, self.hasher), daemon=True, name="chatapp-pull-hash"
        )
        thread.start()
        return thread

    @staticmethod
    def hash_chunks(chunks: queue.Queue, hasher) -> None:
        while (chunk := chunks.get()) is not None:
            hasher.update(chunk)

    def write(self, chunk: bytes) -> int:
        written = self.out.write(chunk)
        self.chunks.put(chunk)
        return written

    def tell(self) -> int:
        return self.out.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.out.seek(offset, whence)

    def truncate(self, size: int | None = None) -> int:
        """The server ignored a Range request and sends the whole file again: hash again from what is kept."""
        self.finish()
        position = self.out.truncate(size)
        self.out.flush()
        self.hasher = self.hash_kept(position)
        self.thread = self.start_thread()
        return position

    def finish(self) -> None:
        if self.thread.is_alive():
            self.chunks.put(None)
            self.thread.join()

    def hexdigest(self) -> str:
        self.finish()
        return self.hasher.hexdigest()


def hash_prefix(stream, size: int, hasher) -> None:
    left = size
    while left > 0:
        block = stream.read(min(left, 8 << 20))
        if not block:
            break
        hasher.update(block)
        left -= len(block)


# The pull


@dataclass(frozen=True)
class PullResult:
    spec: str  # REPO:QUANT: pulls it again, and names it for `chatapp run -m`
    name: str  # its name in `chatapp models`
    path: Path  # the first (or only) file
    files: list[Path]
    size_bytes: int
    downloaded_bytes: int  # fetched by this pull (0 when everything was here)
    seconds: float

    def record(self) -> dict:
        return {
            "spec": self.spec,
            "name": self.name,
            "path": str(self.path),
            "files": [str(f) for f in self.files],
            "size_bytes": self.size_bytes,
            "downloaded_bytes": self.downloaded_bytes,
            "seconds": round(self.seconds, 3),
        }


def pull(
    spec: str | PullSpec,
    on_event: Callable[[PullEvent], None] | None = None,
    cancel: threading.Event | None = None,
) -> PullResult:
    """Fetch the model `spec` names into the Hugging Face cache, verify and check it, and record it.
    Raises PullError (one line), PullCancelled (cancel was set) or KeyboardInterrupt; in every case
    the bytes that arrived are kept for the next pull, except those of a file whose checksum is wrong."""
    emit = on_event or (lambda event: None)
    started = time.monotonic()
    token = None if offline_mode() else safe_token()
    plan = plan_pull(spec, token)
    emit(plan_event(plan))
    for note in plan_notes(plan):
        emit(PullEvent("note", note))
    paths = CachePaths(hf_hub_dir(), plan.repo, plan.commit)
    needed = check_disk_space(plan, paths)
    have = plan.chosen.size - needed
    transfer = Transfer(plan.chosen.size, have, emit, cancel)
    storage_existed = paths.storage.exists()
    lock_dir_existed = (paths.hub / ".locks" / paths.storage.name).exists()
    pointers = []
    retries = RetryNotes(emit)
    retry_log = logging.getLogger("huggingface_hub.file_download")
    retry_log.addFilter(retries)
    try:
        for index, file in enumerate(plan.chosen.files, start=1):
            pointers.append(fetch_file(plan, paths, file, transfer, token, index))
    except ChecksumMismatch as mismatch:
        paths.incomplete(mismatch.file).unlink(missing_ok=True)
        paths.lock(mismatch.file).unlink(missing_ok=True)
        remove_if_ours(paths.storage, storage_existed)
        remove_if_ours(paths.hub / ".locks" / paths.storage.name, lock_dir_existed)
        raise PullError(str(mismatch)) from None
    finally:
        retry_log.removeFilter(retries)
    write_ref(paths.storage, plan.spec.revision, plan.commit)
    info = check_pulled(pointers[0])
    emit(PullEvent("checked", f"{info['architecture']} model, checked", info))
    name = f"{plan.repo}/{plan.chosen.path}"
    entry = PulledModel(
        spec=plan.again,
        repo=plan.repo,
        revision=plan.spec.revision,
        commit=plan.commit,
        quant=plan.chosen.quant,
        name=name,
        path=str(pointers[0]),
        files=[str(p) for p in pointers],
        size_bytes=plan.chosen.size,
        pulled_at=time.time(),
    )
    remember(entry)
    result = PullResult(plan.again, name, pointers[0], pointers, plan.chosen.size, needed, time.monotonic() - started)
    emit(PullEvent("done", f'{plan.again} is ready: chatapp run -m {plan.again} "Hello"', result.record()))
    return result


class RetryNotes(logging.Filter):
    """huggingface_hub's http_get resumes a dropped connection itself (five tries), saying so in a warning of
    several lines: that becomes a note event instead."""

    def __init__(self, emit: Callable[[PullEvent], None]):
        super().__init__()
        self.emit = emit

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "Trying to resume download" in text:
            self.emit(PullEvent("note", "the connection dropped: resuming where it stopped"))
            return False
        return "Max retries exceeded" not in text  # the PullError says it


def plan_event(plan: Plan) -> PullEvent:
    chosen = plan.chosen
    message = f"{plan.repo}: {chosen.label()}, {plan.reason}"
    return PullEvent(
        "plan",
        message,
        {
            "repo": plan.repo,
            "revision": plan.spec.revision,
            "commit": plan.commit,
            "quant": chosen.quant,
            "files": [f.path for f in chosen.files],
            "size_bytes": chosen.size,
            "reason": plan.reason,
            "others": [{"quant": c.quant, "file": c.path, "size_bytes": c.size} for c in plan.others()],
            "mmproj": [{"file": f.path, "size_bytes": f.size} for f in plan.mmproj],
        },
    )


def plan_notes(plan: Plan) -> list[str]:
    notes = []
    others = plan.others()
    if others and not (plan.spec.quant or plan.spec.file):
        listed = ", ".join(c.label() for c in others[:8]) + (", ..." if len(others) > 8 else "")
        notes.append(f"also here: {listed}; pick one with chatapp pull {plan.repo}:QUANT")
    for projector in plan.mmproj:
        notes.append(
            f"{projector.path} ({human_size(projector.size)}) is a vision projector for images: "
            "not fetched (chatapp chats in text)"
        )
    return notes


class ChecksumMismatch(Exception):
    def __init__(self, file: HubFile, got: str):
        self.file = file
        kind = "SHA-256" if file.sha256 else "git SHA-1"
        super().__init__(
            f"{file.path}: the download does not match the hub's {kind} (expected "
            f"{expected_digest(file)[:16]}..., got {got[:16]}...): deleted, nothing kept; pull again"
        )


def fetch_file(plan: Plan, paths: CachePaths, file: HubFile, transfer: Transfer, token: str | None, index: int) -> Path:
    """One file into the cache: resumed from what an earlier pull kept, verified, linked. Its pointer."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import WeakFileLock

    pointer, blob = paths.pointer(file), paths.blob(file)
    count = len(plan.chosen.files)
    transfer.file = file.path
    if not file.cache_blob_name:
        raise PullError(f"{plan.repo}: the hub gave no checksum for {file.path}: cannot verify it, not fetched")
    for complete in (pointer, blob):
        if complete.is_file() and complete.stat().st_size == file.size:
            if complete == blob:
                link_pointer(blob, pointer)
            transfer.emit(PullEvent("note", f"{file.path}: already here", {"file": file.path}))
            return pointer
    transfer.emit(
        PullEvent(
            "file",
            f"{file.path} ({index} of {count}, {human_size(file.size)})",
            {"file": file.path, "index": index, "count": count, "size_bytes": file.size},
        )
    )
    url = hf_hub_url(plan.repo, file.path, revision=plan.commit, endpoint=hub_endpoint())
    paths.lock(file).parent.mkdir(parents=True, exist_ok=True)
    blob.parent.mkdir(parents=True, exist_ok=True)
    try:
        lock = WeakFileLock(paths.lock(file), timeout=0.5)
        lock.__enter__()
    except Exception as error:
        if type(error).__name__ == "Timeout":
            raise PullError(
                f"{file.path} is being downloaded by another program (chatapp pull, hf download): "
                "wait for it, or stop it and pull again"
            ) from None
        raise
    try:
        download(plan, paths, file, transfer, token, url)
    finally:
        lock.__exit__(None, None, None)
    link_pointer(blob, pointer)
    transfer.emit(PullEvent("verified", f"{file.path}: matches the hub's checksum", {"file": file.path}))
    return pointer


def download(plan: Plan, paths: CachePaths, file: HubFile, transfer: Transfer, token: str | None, url: str) -> None:
    """Append the missing bytes to BLOB.incomplete with huggingface_hub's http_get, hash them, and make it the blob."""
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    incomplete, blob = paths.incomplete(file), paths.blob(file)
    if incomplete.exists() and incomplete.stat().st_size > file.size:
        incomplete.unlink()  # not this file's bytes
    have = incomplete.stat().st_size if incomplete.exists() else 0
    with open(incomplete, "ab") as out:
        writer = HashingWriter(out, lambda: new_hasher(file), have)
        try:
            headers = build_hf_headers(token=token)
            with raw_chunks():
                with_hub_errors(
                    plan.spec,
                    lambda: http_get(
                        url,
                        writer,  # type: ignore[arg-type]  # write, tell, seek and truncate are what it uses
                        resume_size=have,
                        headers=headers,
                        expected_size=file.size,
                        displayed_filename=file.path,
                        tqdm_class=transfer.bar_class(),
                    ),
                    file=file.path,
                )
        except OSError as error:
            if error.errno == errno.ENOSPC:
                raise PullError(
                    f"the disk filled up while downloading {file.path}: free some space and pull again to go on"
                ) from None
            if "Consistency check failed" in str(error):
                raise PullError(
                    f"{file.path}: the hub sent a different size than it lists: pull again to resume"
                ) from None
            raise
        finally:
            digest = writer.hexdigest()
    if incomplete.stat().st_size != file.size:
        raise PullError(
            f"{file.path}: {human_size(incomplete.stat().st_size)} of {human_size(file.size)} arrived: "
            "pull again to resume"
        )
    if digest != expected_digest(file):
        raise ChecksumMismatch(file, digest)
    os.replace(incomplete, blob)


@contextlib.contextmanager
def raw_chunks():
    """http_get hands over the bytes as they arrive instead of in 10 MB pieces (huggingface_hub's
    DOWNLOAD_CHUNK_SIZE, which only http_get reads, passed to httpx's iter_bytes; None there means "as they
    come"). Measured on a local server (scripts/bench_pull.py): the 10 MB pieces cost more CPU than the
    download and the SHA-256 together, and a dropped connection loses the piece under way; as they come,
    nothing that arrived is fetched twice."""
    from huggingface_hub import constants

    with RAW_CHUNKS_LOCK:
        if RAW_CHUNKS_USERS[0] == 0:
            saved = getattr(constants, "DOWNLOAD_CHUNK_SIZE", None)
            if isinstance(saved, int):  # else a huggingface_hub that no longer reads it this way: leave it be
                RAW_CHUNKS_SAVED[0] = saved
                constants.DOWNLOAD_CHUNK_SIZE = None
        RAW_CHUNKS_USERS[0] += 1
    try:
        yield
    finally:
        with RAW_CHUNKS_LOCK:  # two pulls at once (the TUI's): the last one out puts it back
            RAW_CHUNKS_USERS[0] -= 1
            if RAW_CHUNKS_USERS[0] == 0 and RAW_CHUNKS_SAVED[0] is not None:
                constants.DOWNLOAD_CHUNK_SIZE = RAW_CHUNKS_SAVED[0]
                RAW_CHUNKS_SAVED[0] = None


RAW_CHUNKS_LOCK = threading.Lock()
RAW_CHUNKS_USERS = [0]
RAW_CHUNKS_SAVED: list[int | None] = [None]


def check_pulled(path: Path) -> dict:
    """quant.gguf_check on the finished file: what llama.cpp would refuse is refused before it is offered."""
    from quant.gguf_check import check_gguf

    try:
        info = check_gguf(path)
    except ValueError as error:
        raise PullError(
            f"downloaded and verified, but not a model chatapp can run: {error} (it stays in the "
            f"Hugging Face cache; chatapp rm {path} removes it)"
        ) from None
    return {
        "architecture": info.architecture,
        "name": info.name,
        "context_length": info.context_length,
        "file_type": info.file_type_name,
    }


def pulled_bytes_kept(spec: str | PullSpec) -> int:
    """What earlier, unfinished pulls of `spec` left in the cache's blobs folders (for an interruption's message).
    Reads only the cache; 0 when nothing is known."""
    try:
        repo = (parse_spec(spec) if isinstance(spec, str) else spec).repo
        blobs = repo_folder(repo) / "blobs"
        return sum(p.stat().st_size for p in blobs.glob("*.incomplete"))
    except (OSError, PullError):
        return 0
