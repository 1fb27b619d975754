"""`chatapp pull REPO[:QUANT]` and `chatapp rm NAME`: a GGUF model from the Hugging Face hub into
the Hugging Face cache, through huggingface_hub (imported inside the functions that use it, so
`chatapp --version` does not pay for it).

How a pull goes (`pull`):

1. `parse_spec`: REPO, REPO:QUANT, REPO:FILE.gguf, hf.co/REPO:QUANT, or the URL of one .gguf on the hub.
2. `plan_pull`: the repo's files with sizes and SHA-256 (one model_info call); its GGUF models (a split
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
import re
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from chatapp.models.discovery import hf_hub_dir
from chatapp.models.listing import human_size
from chatapp.models.pulled import PulledModel, forget, pulled_models, remember
from chatapp.models.registry import SPLIT_PART

DEFAULT_ENDPOINT = "https://huggingface.co"
HUB_HOSTS = ("huggingface.co", "www.huggingface.co", "hf.co")
DEFAULT_QUANT = "Q4_K_M"
MIN_DEFAULT_BITS = 4
# A quantization named in a file or folder name: Q4_K_M, IQ4_XS, Q8_0, UD-Q4_K_XL, TQ1_0, MXFP4, BF16, F16, FP16.
QUANT_NAME = re.compile(
    r"(?<![A-Za-z0-9])((?:UD-)?(?:I?T?Q\d(?:_[A-Z0-9]+)*|MXFP4(?:_MOE)?|BF16|FP?16|FP?32))(?![A-Za-z0-9])",
    re.IGNORECASE,
)
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
PROGRESS_EVERY_S = 0.1  # the most often a progress event is sent
SPEED_WINDOW_S = 5.0  # speed is measured over the last few seconds
SPEED_WARMUP_S = 0.5  # ... once there is half a second to measure
HASH_QUEUE_CHUNKS = 4  # chunks (huggingface_hub's are 10 MB) waiting for the hashing thread
TRUE_VALUES = ("1", "ON", "YES", "TRUE")


class PullError(ValueError):
    """A pull or a removal that cannot go on; the message is one line and says what to do."""


class PullCancelled(Exception):
    """`cancel` was set: the pull stopped, keeping what arrived for the next one."""


# What the user typed


@dataclass(frozen=True)
class PullSpec:
    repo: str
    revision: str = "main"
    quant: str | None = None  # Q4_K_M, as asked (matched case-insensitively)
    file: str | None = None  # a file in the repo, from a URL or REPO:FILE.gguf

    def text(self) -> str:
        return f"{self.repo}:{self.file or self.quant}" if (self.file or self.quant) else self.repo


def hub_endpoint() -> str:
    """$HF_ENDPOINT, read when used (huggingface_hub reads it once, when imported)."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def offline_mode() -> bool:
    return any(os.environ.get(name, "").upper() in TRUE_VALUES for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def parse_spec(text: str) -> PullSpec:
    """REPO, REPO:QUANT, REPO:FILE.gguf, hf.co/REPO[:QUANT], huggingface.co/REPO, or a hub URL of a repo or of
    one .gguf file (…/REPO/resolve/REVISION/FILE or …/blob/…)."""
    text = text.strip()
    if "://" in text:
        return parse_url(text)
    for prefix in ("https://", "hf.co/", "huggingface.co/", "www.huggingface.co/"):
        text = text.removeprefix(prefix)
    repo, _, wanted = text.partition(":")
    check_repo_id(repo, text)
    if wanted.lower().endswith(".gguf"):
        return PullSpec(repo, file=wanted)
    return PullSpec(repo, quant=wanted or None)


def check_repo_id(repo: str, given: str) -> None:
    if not REPO_ID.match(repo) or ".." in repo:
        raise PullError(
            f"{given!r} is not a model on the hub: give OWNER/NAME[:QUANT], e.g. "
            f"bartowski/Llama-3.2-1B-Instruct-GGUF:{DEFAULT_QUANT}, or the URL of one .gguf file"
        )


def parse_url(url: str) -> PullSpec:
    parsed = urlparse(url)
    hosts = HUB_HOSTS + (urlparse(hub_endpoint()).netloc.lower(),)
    if parsed.netloc.lower() not in hosts:
        raise PullError(f"{url}: not a Hugging Face hub address (expected https://huggingface.co/OWNER/NAME/...)")
    parts = [unquote(p) for p in parsed.path.strip("/").split("/") if p]
    if len(parts) < 2:
        raise PullError(f"{url}: names no model (expected https://huggingface.co/OWNER/NAME/...)")
    repo = "/".join(parts[:2])
    check_repo_id(repo, url)
    if len(parts) == 2:
        return PullSpec(repo)
    if len(parts) < 5 or parts[2] not in ("resolve", "blob"):
        raise PullError(f"{url}: not the address of a file (expected .../OWNER/NAME/resolve/main/FILE.gguf)")
    file = "/".join(parts[4:])
    if not file.lower().endswith(".gguf"):
        raise PullError(f"{url}: {file} is not a .gguf file (chatapp runs GGUF models)")
    return PullSpec(repo, revision=parts[3], file=file)


# The repo's files and the choice among them


@dataclass(frozen=True)
class HubFile:
    path: str  # in the repo
    size: int
    sha256: str | None  # the LFS object's; None for a file kept in git itself
    blob_id: str | None  # git's SHA-1 of the file

    @property
    def cache_blob_name(self) -> str:
        """What huggingface_hub names its blob: the SHA-256 for an LFS file, else git's id."""
        return self.sha256 or self.blob_id or ""


@dataclass(frozen=True)
class Candidate:
    """One model in the repo: a .gguf, or every part of a split one."""

    files: tuple[HubFile, ...]
    quant: str | None

    @property
    def path(self) -> str:
        return self.files[0].path

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def bits(self) -> int | None:
        return quant_bits(self.quant)

    def label(self) -> str:
        parts = f", {len(self.files)} parts" if len(self.files) > 1 else ""
        return f"{self.quant or self.path} ({human_size(self.size)}{parts})"


@dataclass
class Plan:
    spec: PullSpec
    commit: str
    chosen: Candidate
    reason: str
    candidates: list[Candidate]
    mmproj: list[HubFile] = field(default_factory=list)

    @property
    def repo(self) -> str:
        return self.spec.repo

    @property
    def again(self) -> str:
        """What pulls (and names) this choice again: REPO:QUANT, or REPO:FILE when the quant does not tell."""
        return self.spec_for(self.chosen)

    def spec_for(self, candidate: Candidate) -> str:
        """What pulls one of the candidates: REPO:QUANT, or REPO:FILE when the quant does not tell."""
        same_quant = [c for c in self.candidates if c.quant and c.quant == candidate.quant]
        if candidate.quant and len(same_quant) == 1:
            return f"{self.repo}:{candidate.quant}"
        return f"{self.repo}:{candidate.path}"

    def others(self) -> list[Candidate]:
        return [c for c in self.candidates if c is not self.chosen]


def quant_of(path: str) -> str | None:
    """The quantization a file's name (else its folder's) names, upper-case: Q4_K_M, UD-Q4_K_XL, F16."""
    for part in reversed(Path(path).parts):
        stem = SPLIT_PART.sub("", part) if part.lower().endswith(".gguf") else part
        matches = QUANT_NAME.findall(stem.removesuffix(".gguf").removesuffix(".GGUF"))
        if matches:
            return matches[-1].upper()
    return None


def quant_bits(quant: str | None) -> int | None:
    """Bits per weight a quantization is named for: 4 for Q4_K_M, IQ4_XS and MXFP4, 16 for BF16; None if unknown."""
    if not quant:
        return None
    name = quant.upper().removeprefix("UD-")
    if name in ("F32", "FP32"):
        return 32
    if name in ("F16", "FP16", "BF16"):
        return 16
    if name.startswith("MXFP4"):
        return 4
    match = re.match(r"I?T?Q(\d)", name)
    return int(match.group(1)) if match else None


def is_mmproj(path: str) -> bool:
    return "mmproj" in Path(path).name.lower()


def gguf_candidates(files: list[HubFile]) -> tuple[list[Candidate], list[HubFile], list[str]]:
    """The models among a repo's files (split parts gathered), the vision projectors, and the split models
    with parts missing (named, not offered)."""
    ggufs = [f for f in files if f.path.lower().endswith(".gguf")]
    mmproj = [f for f in ggufs if is_mmproj(f.path)]
    by_path = {f.path: f for f in ggufs if not is_mmproj(f.path)}
    candidates, incomplete = [], []
    for path, file in sorted(by_path.items()):
        match = SPLIT_PART.search(path)
        if match is None:
            candidates.append(Candidate((file,), quant_of(path)))
            continue
        if int(match.group(1)) != 1:
            continue
        prefix, count = path[: match.start()], int(match.group(2))
        names = [f"{prefix}-{part:05d}-of-{match.group(2)}{path[match.end() - 5 :]}" for part in range(1, count + 1)]
        if all(name in by_path for name in names):
            candidates.append(Candidate(tuple(by_path[name] for name in names), quant_of(path)))
        else:
            incomplete.append(path)
    return candidates, mmproj, incomplete


def choose(spec: PullSpec, candidates: list[Candidate]) -> tuple[Candidate, str]:
    """The model to fetch and why: the one asked for, else Q4_K_M, else the smallest of at least 4 bits."""
    repo = spec.repo
    available = ", ".join(c.label() for c in candidates)
    if spec.file:
        for candidate in candidates:
            if spec.file in (f.path for f in candidate.files):
                parts = " (with its other parts)" if len(candidate.files) > 1 else ""
                return candidate, f"the file asked for{parts}"
        raise PullError(f"{repo} has no model file {spec.file} (it has: {available})")
    if spec.quant:
        wanted = spec.quant.upper()
        matches = [c for c in candidates if c.quant == wanted]
        if not matches:
            raise PullError(f"{repo} has no {spec.quant} file; it has: {available}")
        return one_of(repo, matches, wanted), "asked for"
    if len(candidates) == 1:
        return candidates[0], "the only model in the repo"
    defaults = [c for c in candidates if c.quant == DEFAULT_QUANT]
    if defaults:
        return one_of(repo, defaults, DEFAULT_QUANT), f"the default: {DEFAULT_QUANT} is small and close to full quality"
    enough = [c for c in candidates if (c.bits or 0) >= MIN_DEFAULT_BITS]
    if enough:
        smallest = min(enough, key=lambda c: (c.size, c.path))
        return smallest, f"no {DEFAULT_QUANT} here: the smallest of at least {MIN_DEFAULT_BITS} bits per weight"
    largest = max(candidates, key=lambda c: (c.size, c.path))
    return largest, f"none here has {MIN_DEFAULT_BITS} bits per weight or more: the largest"


def one_of(repo: str, matches: list[Candidate], quant: str) -> Candidate:
    if len(matches) == 1:
        return matches[0]
    names = ", ".join(c.path for c in matches)
    raise PullError(
        f"{repo} has {len(matches)} {quant} models ({names}): name one, e.g. chatapp pull {repo}:{matches[0].path}"
    )


def hub_files(info) -> list[HubFile]:
    """huggingface_hub's ModelInfo siblings (asked with files_metadata) as HubFiles."""
    files = []
    for sibling in info.siblings or []:
        lfs = sibling.lfs
        sha256 = (lfs.sha256 if hasattr(lfs, "sha256") else lfs.get("sha256")) if lfs else None
        size = sibling.size if sibling.size is not None else (lfs.size if lfs else 0)
        files.append(HubFile(sibling.rfilename, int(size or 0), sha256, sibling.blob_id))
    return files


def plan_pull(spec: PullSpec | str, token: str | None = None) -> Plan:
    """Ask the hub for the repo's files and choose what to fetch. Needs the network."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    info = with_hub_errors(
        spec,
        lambda: hub_api().model_info(
            spec.repo, revision=spec.revision, files_metadata=True, token=token or hub_token()
        ),
    )
    candidates, mmproj, incomplete = gguf_candidates(hub_files(info))
    if not candidates:
        hint = f" (split models with parts missing: {', '.join(incomplete)})" if incomplete else ""
        raise PullError(
            f"{spec.repo} has no GGUF model files{hint}: chatapp runs GGUF models; many repos "
            f"named ...-GGUF have them (search {hub_endpoint()}/models?search=gguf)"
        )
    chosen, reason = choose(spec, candidates)
    return Plan(spec, str(info.sha), chosen, reason, candidates, mmproj)


# huggingface_hub, and its errors as one line


def hub_api():
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub_endpoint())


def hub_token() -> str | None:
    from huggingface_hub import get_token

    return get_token()


def with_hub_errors(spec: PullSpec, call: Callable, file: str | None = None):
    """Run a call to the hub; its failures become one PullError each."""
    if offline_mode():
        raise PullError(
            "offline mode is on (HF_HUB_OFFLINE): chatapp pull needs the network; unset HF_HUB_OFFLINE "
            "to download (what is already pulled runs offline)"
        )
    try:
        return call()
    except PullError:
        raise
    except Exception as error:
        message = hub_error_message(error, spec, file)
        if message is None:
            raise
        raise PullError(message) from None


def hub_error_message(error: Exception, spec: PullSpec, file: str | None = None) -> str | None:
    """One line for a failure of the hub, or None for one that is not the hub's (a bug: let it through)."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo, page = spec.repo, f"{hub_endpoint()}/{spec.repo}"
    login = "log in with `hf auth login` or set HF_TOKEN"
    status = getattr(getattr(error, "response", None), "status_code", None)
    has_token = bool(safe_token())
    if isinstance(error, OfflineModeIsEnabled):
        return "offline mode is on (HF_HUB_OFFLINE): chatapp pull needs the network; unset HF_HUB_OFFLINE to download"
    if isinstance(error, GatedRepoError):
        if status == 401 or not has_token:
            return f"{repo} is gated (401): {login}, and accept its terms on {page}"
        return f"{repo} is gated (403): accept its terms on {page} with the account of your token, then pull again"
    if isinstance(error, RepositoryNotFoundError):
        if status == 401 and not has_token:
            return f"{repo}: not on the hub, or private or gated (401): check the name, or {login}"
        if status in (401, 403):
            return f"{repo}: not on the hub, or your token may not read it ({status})"
        return f"{repo}: no such model on the hub ({status or 404}; {page})"
    if isinstance(error, RevisionNotFoundError):
        return f"{repo}: no revision {spec.revision!r} on the hub"
    if isinstance(error, RemoteEntryNotFoundError):
        return f"{repo}: no file {file or spec.file} on the hub (404)"
    if isinstance(error, HfHubHTTPError):
        if status == 401:
            return f"the hub refused the request for {repo} (401): {login}" + (
                " (is the token valid?)" if has_token else ""
            )
        if status == 403:
            return f"the hub refused access to {repo} (403): your token may not read it"
        if status == 404:
            return f"{repo}: not found on the hub (404)"
        if status == 429:
            return "the hub asks to slow down (429 Too Many Requests): try again in a minute"
        return f"the hub answered {status} for {repo}: try again later"
    kinds = {kind.__name__ for kind in type(error).__mro__}
    http_client = type(error).__module__.split(".")[0] in HTTP_CLIENTS  # whichever huggingface_hub uses
    if kinds & CANNOT_CONNECT and (http_client or isinstance(error, ConnectionError)):
        return f"cannot reach the Hugging Face hub at {hub_endpoint()} ({first_line(error)}): check the network"
    if http_client and kinds & CONNECTION_BROKE:
        return f"the connection to the hub broke ({first_line(error)}): pull again to resume"
    return None


# The transport errors of the HTTP clients huggingface_hub has used (httpx2, httpx, requests), by name, so that
# none of them needs importing here.
HTTP_CLIENTS = ("httpx2", "httpx", "httpcore", "requests", "urllib3")
CANNOT_CONNECT = {"ConnectError", "ConnectTimeout", "TimeoutException", "ProxyError", "ConnectionError", "Timeout"}
CONNECTION_BROKE = {"RemoteProtocolError", "ReadError", "ReadTimeout", "TransportError", "ChunkedEncodingError"}


def safe_token() -> str | None:
    try:
        return hub_token()
    except Exception:  # a token file that cannot be read is no token
        return None


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


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


# Suggested models (the TUI's "Download a model…")

SUGGESTED_FILE = Path(__file__).with_name("suggested_models.toml")


@dataclass(frozen=True)
class SuggestedModel:
    name: str
    repo: str
    quant: str
    size_bytes: int
    memory_bytes: int  # about what it needs to run

    @property
    def spec(self) -> str:
        return f"{self.repo}:{self.quant}"


def suggested_models(path: Path = SUGGESTED_FILE) -> list[SuggestedModel]:
    """The small instruct models of suggested_models.toml, in its order."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    with open(path, "rb") as f:
        entries = tomllib.load(f).get("model", [])
    return [
        SuggestedModel(
            str(e["name"]),
            str(e["repo"]),
            str(e["quant"]),
            int(float(e["size_mb"]) * 1e6),
            int(float(e["memory_gb"]) * 1e9),
        )
        for e in entries
    ]


def machine_memory() -> int | None:
    """This machine's RAM in bytes (os.sysconf); None where it cannot tell."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None
