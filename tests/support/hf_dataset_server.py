"""A read-only local Hub API for dataset repos: the endpoints huggingface_hub 2.4 uses to read one
(FACTS.md section 3): repo info (`/api/datasets/{repo}[/revision/{rev}]`), the file tree
(`/api/datasets/{repo}/tree/{rev}`) and file downloads (`HEAD`/`GET /datasets/{repo}/resolve/{rev}/{path}`).

    with serve_hf_datasets() as hub:
        hub.add("user/pets", {"a.png": b"...", "a.txt": b"a cat"}, revision="main")
        hub.endpoint        # HF_ENDPOINT for the client process
        hub.requests        # [(method, path), ...]

The client process must import huggingface_hub with HF_HUB_DISABLE_XET=1, HF_HUB_DISABLE_TELEMETRY=1 and
HF_HUB_OFFLINE unset: all three are read once, at import time.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

REPO = r"(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)"


@dataclass
class Snapshot:
    sha: str
    files: dict[str, bytes]


@dataclass
class DatasetRepo:
    revisions: dict[str, Snapshot] = field(default_factory=dict)
    token: str | None = None
    """When set, the repo is private: requests need `Authorization: Bearer <token>`."""

    def at(self, rev: str) -> Snapshot | None:
        if rev in self.revisions:
            return self.revisions[rev]
        return next((s for s in self.revisions.values() if s.sha == rev), None)


class HfDatasetServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.repos: dict[str, DatasetRepo] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def add(self, repo_id: str, files: dict[str, bytes], *, revision: str = "main", token: str | None = None) -> str:
        """Publish `files` as `revision` of dataset `repo_id`; return the commit sha."""
        digest = hashlib.sha1(repo_id.encode() + revision.encode())
        for path in sorted(files):
            digest.update(path.encode() + hashlib.sha1(files[path]).digest())
        sha = digest.hexdigest()
        repo = self.repos.setdefault(repo_id, DatasetRepo())
        repo.revisions[revision] = Snapshot(sha=sha, files=dict(files))
        repo.token = token
        return sha


class _Reply(Exception):
    def __init__(self, status: int, body: object, headers: dict[str, str] | None = None):
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


class _Handler(BaseHTTPRequestHandler):
    server: HfDatasetServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the stdlib's signature
        """Quiet: the tests read server.requests instead."""

    def do_GET(self) -> None:
        self._dispatch(body=True)

    def do_HEAD(self) -> None:
        self._dispatch(body=False)

    def _dispatch(self, *, body: bool) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = parse_qs(parts.query)
        with self.server.lock:
            self.server.requests.append((self.command, path))
        routes = [
            (rf"/api/datasets/{REPO}/tree/(?P<rev>[^/]+)(?:/(?P<sub>.*))?", self._tree),
            (rf"/api/datasets/{REPO}/revision/(?P<rev>[^/]+)", self._info),
            (rf"/api/datasets/{REPO}", self._info),
            (rf"/datasets/{REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self._resolve),
        ]
        try:
            for pattern, handler in routes:
                match = re.fullmatch(pattern, path)
                if match:
                    status, payload, headers = handler(query=query, **match.groupdict())
                    break
            else:
                raise _Reply(404, {"error": "not found"})
        except _Reply as reply:
            status, payload, headers = reply.status, reply.body, reply.headers
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        headers = {"Content-Type": "application/json", **headers}
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _repo(self, repo: str) -> DatasetRepo:
        found = self.server.repos.get(repo)
        if found is None or (found.token and self.headers.get("Authorization") != f"Bearer {found.token}"):
            raise _Reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        return found

    def _snapshot(self, repo: str, rev: str) -> Snapshot:
        snapshot = self._repo(repo).at(rev)
        if snapshot is None:
            raise _Reply(404, {"error": f"Invalid rev id: {rev}"}, {"X-Error-Code": "RevisionNotFound"})
        return snapshot

    def _info(self, *, query: dict, repo: str, rev: str = "main"):
        snapshot = self._snapshot(repo, rev)
        found = self.server.repos[repo]
        return 200, {
            "_id": hashlib.sha1(repo.encode()).hexdigest()[:24], "id": repo, "author": repo.split("/")[0],
            "sha": snapshot.sha, "private": bool(found.token), "gated": False, "disabled": False,
            "downloads": 0, "likes": 0, "tags": [], "lastModified": "2026-11-28T00:00:00.000Z",
            "siblings": [{"rfilename": name} for name in sorted(snapshot.files)],
        }, {}

    def _tree(self, *, query: dict, repo: str, rev: str, sub: str | None = None):
        snapshot = self._snapshot(repo, rev)
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        base = (sub or "").strip("/")
        prefix = f"{base}/" if base else ""
        entries: dict[str, dict] = {}
        for path in sorted(snapshot.files):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix):].split("/")
            folders = ["/".join(rest[: i + 1]) for i in range(len(rest) - 1)]
            for folder in folders if recursive else folders[:1]:
                full = prefix + folder
                entries.setdefault(full, {"type": "directory", "oid": hashlib.sha1(full.encode()).hexdigest(),
                                          "size": 0, "path": full})
            if recursive or len(rest) == 1:
                data = snapshot.files[path]
                entries[path] = {"type": "file", "oid": hashlib.sha1(data).hexdigest(), "size": len(data),
                                 "path": path}
        if base and not entries:
            raise _Reply(404, {"error": f"{base} does not exist"}, {"X-Error-Code": "EntryNotFound"})
        return 200, list(entries.values()), {}

    def _resolve(self, *, query: dict, repo: str, rev: str, file: str):
        snapshot = self._snapshot(repo, rev)
        data = snapshot.files.get(file)
        if data is None:
            raise _Reply(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
        return 200, data, {"X-Repo-Commit": snapshot.sha, "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                           "Content-Type": "application/octet-stream"}


@contextmanager
def serve_hf_datasets() -> Iterator[HfDatasetServer]:
    server = HfDatasetServer()
    thread = threading.Thread(target=server.serve_forever, name="test-hf-datasets", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
