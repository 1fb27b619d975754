"""What a pull fetches: the REPO[:QUANT] or URL the user typed, the repo's GGUF files and the choice
among them (with the reason), through huggingface_hub; its errors as one line (`hub_error_message`)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from chatapp.models.listing import human_size
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
TRUE_VALUES = ("1", "ON", "YES", "TRUE")


class PullError(ValueError):
    """A pull or a removal that cannot go on; the message is one line and says what to do."""


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
