"""A stand-in for the Hugging Face hub on 127.0.0.1: the endpoints huggingface_hub calls to list a
model's files and to download one, answered the way the hub answers them.

- GET /api/models/OWNER/NAME[/revision/REV][?blobs=true]: the model's info, its files ("siblings")
  with size, git blob id and LFS SHA-256.
- HEAD and GET /OWNER/NAME/resolve/REV/PATH: a file, with the hub's headers (X-Repo-Commit,
  X-Linked-Etag, X-Linked-Size), Range requests (206), and the hub's error codes (X-Error-Code:
  RepoNotFound, GatedRepo, RevisionNotFound, EntryNotFound) with 401 / 403 / 404.

What a test needs to see or break: every request is kept (`requests`), with the body bytes sent in
answer (`bytes_sent`), a transfer can be cut after N bytes (`drop_after`: the connection is shut
down cleanly, as a dropped network would end it), a file's listed SHA-256 can be a lie (`wrong_sha256`),
and a repo can be private (a token needed) or gated (a token whose user accepted the terms).

Files are sent with os.sendfile, so the server is not what limits a benchmark (scripts/bench_pull.py runs
it in a process of its own: `python -m tests.helpers.fake_hub OWNER/NAME FILE...`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

POINTER_SIZE = 134  # an LFS pointer file's size, as the hub lists it


@dataclass
class HubFile:
    path: Path  # on this machine
    size: int
    sha256: str
    git_sha1: str
    listed_sha256: str  # what the listing and the headers claim (a lie when a test asks for one)


@dataclass
class FakeRepo:
    repo_id: str
    commit: str
    files: dict[str, HubFile]
    private: bool = False
    gated: bool = False
    token: str | None = None  # the token that may read a private or gated repo
    accepted: bool = True  # a gated repo: whether the token's user accepted its terms


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    file: str | None = None  # the repo file whose bytes it asked for
    sent: int = 0  # body bytes of that file sent in answer


@dataclass
class FakeHub:
    repos: dict[str, FakeRepo] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    drop_after: dict[str, int] = field(default_factory=dict)  # repo file path -> cut the next transfer after N bytes
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None
    thread: threading.Thread | None = None

    def add_repo(self, repo_id: str, files: dict[str, Path], commit: str | None = None, **flags) -> FakeRepo:
        commit = commit or hashlib.sha1(repo_id.encode()).hexdigest()
        repo = FakeRepo(repo_id, commit, {name: describe(Path(path)) for name, path in files.items()}, **flags)
        self.repos[repo_id] = repo
        return repo

    def wrong_sha256(self, repo_id: str, name: str) -> None:
        """List (and send as the ETag) a SHA-256 the file's bytes do not have."""
        self.repos[repo_id].files[name].listed_sha256 = hashlib.sha256(b"not these bytes").hexdigest()

    @property
    def url(self) -> str:
        assert self.server is not None, "start the hub first"
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self, port: int = 0) -> FakeHub:
        hub = self

        class Handler(HubHandler):
            fake = hub

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-hub", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def bytes_sent(self, name: str | None = None) -> int:
        """Body bytes sent since the last reset_counts (a transfer cut short before it is not counted after it)."""
        with self.lock:
            return sum(r.sent for r in self.requests if r.file is not None and name in (None, r.file))

    def reset_counts(self) -> None:
        with self.lock:
            self.requests.clear()

    def downloads(self, name: str) -> list[Request]:
        """The GET requests for a file's bytes."""
        return [r for r in self.requests if r.method == "GET" and "/resolve/" in r.path and r.path.endswith(name)]


def describe(path: Path) -> HubFile:
    sha256, git = hashlib.sha256(), hashlib.sha1()
    size = path.stat().st_size
    git.update(b"blob %d\0" % size)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            sha256.update(block)
            git.update(block)
    return HubFile(path, size, sha256.hexdigest(), git.hexdigest(), sha256.hexdigest())


RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
API = re.compile(r"^/api/models/([^/]+/[^/]+?)(?:/revision/([^/]+))?$")


class HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeHub
    record: Request

    def log_message(self, format, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self.route("GET")

    def do_HEAD(self) -> None:
        self.route("HEAD")

    def route(self, method: str) -> None:
        path = unquote(urlparse(self.path).path)
        self.record = Request(method, path, {k.lower(): v for k, v in self.headers.items()})
        with self.fake.lock:
            self.fake.requests.append(self.record)
        if (match := API.match(path)) and method == "GET":
            return self.model_info(match.group(1), match.group(2) or "main")
        if match := RESOLVE.match(path):
            return self.resolve(method, match.group(1), match.group(2), match.group(3))
        self.error(404, "Not Found", None)

    # answers

    def error(self, status: int, message: str, code: str | None, commit: str | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def allowed(self, repo_id: str) -> FakeRepo | None:
        """The repo when this request may read it; else the hub's error is sent and None returned."""
        repo = self.fake.repos.get(repo_id)
        if repo is None:
            self.error(404, "Repository not found", "RepoNotFound")
            return None
        token = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
        if repo.private and token != repo.token:
            self.error(401, "Invalid username or password.", "RepoNotFound")
            return None
        if repo.gated:
            if not token or token != repo.token:
                self.error(401, "Access to this model is restricted: you must be authenticated.", "GatedRepo")
                return None
            if not repo.accepted:
                self.error(403, "Access to this model is restricted: accept its conditions first.", "GatedRepo")
                return None
        return repo

    def model_info(self, repo_id: str, revision: str) -> None:
        repo = self.allowed(repo_id)
        if repo is None:
            return
        if revision not in ("main", repo.commit):
            return self.error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        siblings = [
            {
                "rfilename": name,
                "size": f.size,
                "blobId": f.git_sha1,
                "lfs": {"sha256": f.listed_sha256, "size": f.size, "pointerSize": POINTER_SIZE},
            }
            for name, f in sorted(repo.files.items())
        ]
        body = json.dumps(
            {
                "_id": repo.commit[:24],
                "id": repo_id,
                "modelId": repo_id,
                "author": repo_id.split("/")[0],
                "sha": repo.commit,
                "private": repo.private,
                "gated": "manual" if repo.gated else False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": ["gguf"],
                "library_name": "gguf",
                "siblings": siblings,
                "lastModified": "2026-01-01T00:00:00.000Z",
                "createdAt": "2026-01-01T00:00:00.000Z",
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def resolve(self, method: str, repo_id: str, revision: str, name: str) -> None:
        repo = self.allowed(repo_id)
        if repo is None:
            return
        if revision not in ("main", repo.commit):
            return self.error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        file = repo.files.get(name)
        if file is None:
            return self.error(404, "Entry not found", "EntryNotFound", repo.commit)
        start, end = 0, file.size - 1
        ranged = self.headers.get("Range")
        if ranged and (match := re.fullmatch(r"bytes=(\d+)-(\d*)", ranged.strip())):
            start = int(match.group(1))
            end = min(int(match.group(2)), file.size - 1) if match.group(2) else file.size - 1
            if start >= file.size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{file.size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        length = end - start + 1
        self.send_response(206 if ranged else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        if ranged:
            self.send_header("Content-Range", f"bytes {start}-{end}/{file.size}")
        self.send_header("ETag", f'"{file.listed_sha256}"')
        self.send_header("X-Linked-Etag", f'"{file.listed_sha256}"')
        self.send_header("X-Linked-Size", str(file.size))
        self.send_header("X-Repo-Commit", repo.commit)
        self.end_headers()
        if method == "HEAD":
            return
        with self.fake.lock:
            cut = self.fake.drop_after.pop(name, None)
        count = length if cut is None else min(cut, length)
        self.record.file = name
        self.send_file(file.path, start, count)
        if cut is not None:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_WR)  # a clean end before Content-Length: the client sees it cut

    def send_file(self, path: Path, offset: int, count: int) -> None:
        self.wfile.flush()
        with open(path, "rb") as f:
            left = count
            while left > 0:
                try:
                    sent = send_part(self.connection, f, offset, min(left, 8 << 20))
                except (BrokenPipeError, ConnectionResetError):
                    break
                if sent == 0:
                    break
                offset += sent
                left -= sent
                with self.fake.lock:
                    self.record.sent += sent


def send_part(connection: socket.socket, f, offset: int, count: int) -> int:
    """Bytes of `f` from `offset` to the socket: os.sendfile where there is one (Linux, macOS), else a copy."""
    if hasattr(os, "sendfile"):
        return os.sendfile(connection.fileno(), f.fileno(), offset, count)
    f.seek(offset)
    block = f.read(min(count, 1 << 20))
    connection.sendall(block)
    return len(block)


def main(argv: list[str]) -> None:
    """python -m tests.helpers.fake_hub [--port N] OWNER/NAME FILE...: serve the files as one repo; the URL
    on the first line of stdout; until killed."""
    port = 0
    if argv[:1] == ["--port"]:
        port, argv = int(argv[1]), argv[2:]
    repo_id, paths = argv[0], [Path(p) for p in argv[1:]]
    hub = FakeHub()
    hub.add_repo(repo_id, {p.name: p for p in paths})
    hub.start(port)
    print(hub.url, flush=True)
    assert hub.thread is not None
    hub.thread.join()


if __name__ == "__main__":
    main(sys.argv[1:])
