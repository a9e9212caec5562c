"""A local stand-in for the Hugging Face Hub's write and read API, for the real huggingface_hub client.

No open-source server implements the Hub's write API (docs/hub-and-s3.md), so the tests run this one: a
stdlib ThreadingHTTPServer on 127.0.0.1 that speaks the endpoints huggingface_hub 2.4 uses with xet disabled
(whoami-v2, repos/create, repo info, validate-yaml, preupload, LFS batch + PUT + verify, ndjson commit, tree,
resolve), for model repos (`/api/models/{repo}...`, `/{repo}/resolve/...`) and dataset repos
(`/api/datasets/{repo}...`, `/datasets/{repo}/resolve/...`). It keeps repos in memory with a snapshot per commit
and named revisions (branches, tags), records every request (method, path, headers, body) so a test can inspect
what the client sent, and injects faults on demand:

    with running_hub_server(tmp_path, token="hf_test") as hub:
        hub.fail_next(r"/commit/", 500, times=2)          # two 500s, then the real answer
        hub.fail_next(r"/api/repos/create", 402, body={"error": "storage quota exceeded"})
        hub.fail_next(r"/preupload/", drop=True)          # close the connection without an answer
        ... HfApi(endpoint=hub.endpoint, token="hf_test") ...
        hub.repos["user/name"].files["README.md"]          # bytes at the head commit
        hub.add_repo("user/pets", repo_type="dataset", private=False, files={"a.png": ...})
        hub.add_commit("user/pets", {"old.png": ...}, revision="v1").oid

The client process must import huggingface_hub with HF_HUB_DISABLE_XET=1 and HF_HUB_DISABLE_TELEMETRY=1
(`CLIENT_ENV`): both are read once, at import time.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

from tests.support.loopback import LoopbackServer, QuietHandler, serving

# What a process needs in its environment, before importing huggingface_hub, to talk to this server.
CLIENT_ENV = {"HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}

# Files the Hub stores through LFS (its default .gitattributes), plus anything over 10 MB.
LFS_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl", ".png", ".jpg", ".jpeg", ".webp", ".gif",
                ".mp4", ".zip", ".tar", ".gz", ".onnx", ".h5", ".msgpack", ".npy", ".npz", ".parquet", ".arrow"}
LFS_SIZE = 10 * 1024 * 1024
REPO_ID = r"(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)"
# The URL segment of each repo type: `/api/{segment}/{repo}` and, for all but models, `/{segment}/{repo}/resolve`.
REPO_TYPES = {"models": "model", "datasets": "dataset"}
API_REPO = rf"/api/(?P<kind>models|datasets)/{REPO_ID}"
GIT_REPO = rf"/(?:(?P<kind>datasets)/)?{REPO_ID}"


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    status: int | None = None

    def json(self) -> Any:
        return json.loads(self.body)

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


@dataclass
class Blob:
    data: bytes
    lfs: bool

    @property
    def git_oid(self) -> str:
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data, usedforsecurity=False).hexdigest()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class Commit:
    oid: str
    summary: str
    description: str
    files: dict[str, Blob]
    created_at: float = field(default_factory=time.time)


@dataclass
class Repo:
    repo_id: str
    private: bool
    repo_type: str = "model"
    commits: list[Commit] = field(default_factory=list)
    refs: dict[str, Commit] = field(default_factory=dict)
    """Revision name (a branch or tag) -> the commit it points to; "main" is the head."""

    @property
    def head(self) -> Commit:
        return self.refs["main"]

    @property
    def files(self) -> dict[str, bytes]:
        """path -> bytes at the head commit."""
        return {path: blob.data for path, blob in self.head.files.items()}

    def at(self, revision: str) -> Commit | None:
        named = self.refs.get("main" if revision == "HEAD" else revision)
        if named is not None:
            return named
        return next((c for c in reversed(self.commits) if c.oid == revision or c.oid.startswith(revision)), None)

    def record(self, commit: Commit, *, revision: str = "main") -> Commit:
        self.commits.append(commit)
        self.refs[revision] = commit
        return commit


@dataclass
class _Fault:
    pattern: re.Pattern
    status: int
    times: int
    body: Any
    method: str | None
    headers: dict[str, str]
    drop: bool


class HubServer:
    """The server's state; `endpoint` is its base URL. Thread-safe."""

    def __init__(self, *, token: str, user: str = "tester", orgs: tuple[str, ...] = (), read_token: str | None = None,
                 log_path: Path | None = None):
        self.token = token
        self.user = user
        self.orgs = tuple(orgs)
        self.read_token = read_token
        self.log_path = log_path
        self.repos: dict[str, Repo] = {}
        self.requests: list[RecordedRequest] = []
        self.lfs_objects: dict[str, bytes] = {}
        self._faults: list[_Fault] = []
        self._lock = threading.RLock()
        self.endpoint = ""

    # ---- test controls -------------------------------------------------------------------------
    def fail_next(self, path_regex: str, status: int = 500, times: int = 1, body: Any = None, *,
                  method: str | None = None, headers: dict[str, str] | None = None, drop: bool = False) -> None:
        """Answer the next `times` requests whose path matches `path_regex` (re.search) with `status` and `body`
        (a dict is sent as JSON; default {"error": "..."}), or close the connection unanswered if `drop`."""
        with self._lock:
            self._faults.append(_Fault(re.compile(path_regex), status, times, body, method and method.upper(),
                                       dict(headers or {}), drop))

    def add_repo(self, repo_id: str, *, private: bool = True, files: dict[str, bytes] | None = None,
                 repo_type: str = "model") -> Repo:
        """Create a repo directly (as if made earlier on the Hub), with an initial commit on main. One repo per
        id: a dataset repo answers only under /datasets/ URLs, a model repo only under the model ones."""
        if repo_type not in REPO_TYPES.values():
            raise ValueError(f"repo_type must be one of {sorted(REPO_TYPES.values())}, got {repo_type!r}")
        with self._lock:
            self.repos[repo_id] = repo = Repo(repo_id, private, repo_type)
            default = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
            self.add_commit(repo_id, {".gitattributes": default, **(files or {})}, summary="initial commit")
            return repo

    def add_commit(self, repo_id: str, files: dict[str, bytes], *, revision: str = "main",
                   summary: str = "add files") -> Commit:
        """Commit `files` (the whole tree) directly to an existing repo and point `revision` (a branch or tag)
        at the commit, as if pushed earlier."""
        with self._lock:
            blobs = {path: Blob(data, _is_lfs(path, len(data))) for path, data in files.items()}
            commit = Commit(_new_oid(repo_id, revision, summary), summary, "", blobs)
            return self.repos[repo_id].record(commit, revision=revision)

    def requests_to(self, path_regex: str, method: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests
                    if re.search(path_regex, r.path) and (method is None or r.method == method)]

    def commits(self, repo_id: str) -> list[Commit]:
        """Commits made since the repo was created (its initial commit excluded)."""
        with self._lock:
            return list(self.repos[repo_id].commits[1:]) if repo_id in self.repos else []

    def write_log(self) -> None:
        if self.log_path is None:
            return
        with self._lock, self.log_path.open("w") as out:
            for r in self.requests:
                out.write(json.dumps({"method": r.method, "path": r.path, "query": r.query, "status": r.status,
                                      "size": len(r.body)}) + "\n")

    # ---- request handling (called by the handler) ----------------------------------------------------
    def take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.times > 0 and fault.pattern.search(path) and fault.method in (None, method):
                    fault.times -= 1
                    return fault
        return None

    def caller(self, headers: dict[str, str]) -> str | None:
        """'write', 'read' or None (no or unknown token)."""
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        token = auth[7:] if auth.lower().startswith("bearer ") else ""
        if token and token == self.token:
            return "write"
        if token and self.read_token and token == self.read_token:
            return "read"
        return None

    def can_write(self, namespace: str) -> bool:
        return namespace == self.user or namespace in self.orgs


def _is_lfs(path: str, size: int) -> bool:
    return Path(path).suffix.lower() in LFS_SUFFIXES or size >= LFS_SIZE


def _new_oid(*parts: str) -> str:
    return hashlib.sha1(("\0".join(parts) + str(time.time_ns())).encode(), usedforsecurity=False).hexdigest()


class _Reply(Exception):
    """Raised by a route to answer with an error."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


def _not_found(repo_id: str) -> _Reply:
    return _Reply(404, {"error": "Repository not found"},
                  {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})


def _no_revision(revision: str) -> _Reply:
    return _Reply(404, {"error": f"Invalid rev id: {revision}"}, {"X-Error-Code": "RevisionNotFound"})


def _unauthorized() -> _Reply:
    message = "Invalid credentials in Authorization header"
    return _Reply(401, {"error": message}, {"X-Error-Message": message})


class _Handler(QuietHandler):
    hub: HubServer

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    # ---- plumbing ------------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self, method: str) -> None:
        split = urlsplit(self.path)
        path = unquote(split.path)
        record = RecordedRequest(method, path, split.query, dict(self.headers.items()), self._read_body())
        with self.hub._lock:
            self.hub.requests.append(record)
        fault = self.hub.take_fault(method, path)
        if fault is not None and fault.drop:
            record.status = 0
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if fault is not None:
            body = fault.body if fault.body is not None else {"error": f"Injected failure ({fault.status})"}
            self._send(record, fault.status, body, fault.headers)
            return
        try:
            status, body, headers = self._route(method, path, parse_qs(split.query), record)
        except _Reply as reply:
            status, body, headers = reply.status, reply.body, reply.headers
        self._send(record, status, body, headers)

    def _send(self, record: RecordedRequest, status: int, body: Any, headers: dict[str, str]) -> None:
        record.status = status
        headers = dict(headers)
        if isinstance(body, (bytes, bytearray)):
            payload, ctype = bytes(body), headers.pop("Content-Type", "application/octet-stream")
        elif isinstance(body, str):
            payload, ctype = body.encode(), "text/plain; charset=utf-8"
        else:
            payload, ctype = json.dumps(body).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if record.method != "HEAD":
            self.wfile.write(payload)

    # ---- routes --------------------------------------------------------------------------------------
    def _route(self, method: str, path: str, query: dict, record: RecordedRequest) -> tuple[int, Any, dict]:
        hub = self.hub
        routes: list[tuple[str, str, Any]] = [
            ("GET", r"/api/whoami-v2", self._whoami),
            ("POST", r"/api/repos/create", self._create_repo),
            ("POST", r"/api/validate-yaml", self._validate_yaml),
            ("POST", rf"{API_REPO}/preupload/(?P<rev>[^/]+)", self._preupload),
            ("POST", rf"{API_REPO}/commit/(?P<rev>[^/]+)", self._commit),
            ("GET", rf"{API_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<sub>.*))?", self._tree),
            ("GET", rf"{API_REPO}(?:/revision/(?P<rev>[^/]+))?", self._repo_info),
            ("POST", rf"{GIT_REPO}\.git/info/lfs/objects/batch", self._lfs_batch),
            ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", self._lfs_put),
            ("POST", r"/lfs-verify/(?P<oid>[0-9a-f]{64})", self._lfs_verify),
            ("GET", rf"{GIT_REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self._resolve),
            ("HEAD", rf"{GIT_REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self._resolve),
        ]
        for verb, pattern, route in routes:
            match = re.fullmatch(pattern, path)
            if verb == method and match:
                with hub._lock:
                    return route(record=record, query=query, **match.groupdict())
        return 404, {"error": f"no such endpoint: {method} {path}"}, {}

    def _whoami(self, *, record: RecordedRequest, query: dict) -> tuple[int, Any, dict]:
        role = self.hub.caller(record.headers)
        if role is None:
            raise _unauthorized()
        return 200, {
            "type": "user", "name": self.hub.user, "fullname": self.hub.user,
            "orgs": [{"name": org, "type": "org"} for org in self.hub.orgs],
            "auth": {"type": "access_token", "accessToken": {"displayName": "test token", "role": role}},
        }, {}

    def _create_repo(self, *, record: RecordedRequest, query: dict) -> tuple[int, Any, dict]:
        role = self.hub.caller(record.headers)
        if role is None:
            raise _unauthorized()
        payload = record.json()
        namespace = payload.get("organization") or self.hub.user
        repo_id = f"{namespace}/{payload['name']}"
        repo_type = payload.get("type", "model")
        if repo_type not in REPO_TYPES.values():
            return 400, {"error": "this test server hosts model and dataset repos only"}, {}
        if role != "write" or not self.hub.can_write(namespace):
            return 403, {"error": f'You don\'t have the rights to create a {repo_type} under the namespace '
                                  f'"{namespace}"'}, {}
        url = f"{self.hub.endpoint}/{'' if repo_type == 'model' else 'datasets/'}{repo_id}"
        if repo_id in self.hub.repos:
            return 409, {"error": f"You already created this {repo_type} repo", "url": url}, {}
        self.hub.add_repo(repo_id, repo_type=repo_type, private=payload.get("visibility", "public") == "private"
                          or bool(payload.get("private")))
        return 200, {"url": url, "name": repo_id, "id": repo_id}, {}

    def _readable_repo(self, repo: str, record: RecordedRequest, kind: str | None) -> Repo:
        """The repo, if the caller may read it; `kind` is the URL's type segment (None: models)."""
        found = self.hub.repos.get(repo)
        if (found is None or found.repo_type != REPO_TYPES[kind or "models"]
                or (found.private and self.hub.caller(record.headers) is None)):
            raise _not_found(repo)
        return found

    def _commit_at(self, repo: str, record: RecordedRequest, kind: str | None, rev: str) -> Commit:
        commit = self._readable_repo(repo, record, kind).at(rev)
        if commit is None:
            raise _no_revision(rev)
        return commit

    def _writable_repo(self, repo: str, record: RecordedRequest, kind: str | None) -> Repo:
        role = self.hub.caller(record.headers)
        if role is None:
            raise _unauthorized()
        found = self._readable_repo(repo, record, kind)
        if role != "write" or not self.hub.can_write(repo.split("/")[0]):
            raise _Reply(403, {"error": "You don't have write access to this repo: use a token with the write role"},
                         {"X-Error-Message": "You don't have write access to this repo"})
        return found

    def _repo_info(self, *, record: RecordedRequest, query: dict, kind: str, repo: str, rev: str | None = None):
        commit = self._commit_at(repo, record, kind, rev or "main")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(commit.created_at))
        info = {
            "_id": hashlib.md5(repo.encode(), usedforsecurity=False).hexdigest()[:24], "id": repo,
            "author": repo.split("/")[0],
            "sha": commit.oid, "private": self.hub.repos[repo].private, "disabled": False, "gated": False,
            "downloads": 0, "likes": 0, "tags": [], "lastModified": stamp, "createdAt": stamp,
            "siblings": [{"rfilename": path} for path in sorted(commit.files)],
        }
        return 200, ({**info, "modelId": repo} if kind == "models" else info), {}

    def _validate_yaml(self, *, record: RecordedRequest, query: dict) -> tuple[int, Any, dict]:
        content = record.json().get("content", "")
        errors = _card_errors(content)
        return (400 if errors else 200), {"errors": [{"message": e} for e in errors], "warnings": []}, {}

    def _preupload(self, *, record: RecordedRequest, query: dict, kind: str, repo: str, rev: str):
        found = self._writable_repo(repo, record, kind)
        head = found.at(rev) or found.head
        out = []
        for entry in record.json().get("files", []):
            lfs = _is_lfs(entry["path"], int(entry["size"]))
            existing = head.files.get(entry["path"])
            oid = (existing.sha256 if existing.lfs else existing.git_oid) if existing else None
            out.append({"path": entry["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                        "oid": oid})
        return 200, {"files": out, "commitOid": head.oid}, {}

    def _lfs_batch(self, *, record: RecordedRequest, query: dict, kind: str | None, repo: str):
        self._writable_repo(repo, record, kind)
        objects = []
        for obj in record.json().get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if oid not in self.hub.lfs_objects:
                entry["actions"] = {
                    "upload": {"href": f"{self.hub.endpoint}/lfs-upload/{oid}", "header": {}},
                    "verify": {"href": f"{self.hub.endpoint}/lfs-verify/{oid}", "header": {}},
                }
            objects.append(entry)
        return 200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"}

    def _lfs_put(self, *, record: RecordedRequest, query: dict, oid: str):
        if hashlib.sha256(record.body).hexdigest() != oid:
            return 400, {"error": f"content does not match oid {oid}"}, {}
        self.hub.lfs_objects[oid] = record.body
        return 200, b"", {}

    def _lfs_verify(self, *, record: RecordedRequest, query: dict, oid: str):
        payload = record.json()
        data = self.hub.lfs_objects.get(oid)
        if data is None or len(data) != int(payload.get("size", -1)):
            return 404, {"error": f"LFS object {oid} not uploaded"}, {}
        return 200, {"oid": oid, "size": len(data)}, {}

    def _commit(self, *, record: RecordedRequest, query: dict, kind: str, repo: str, rev: str):  # noqa: C901 (one case per commit operation of the Hub's API)
        found = self._writable_repo(repo, record, kind)
        if rev != "main":
            return 400, {"error": "this test server only commits to main"}, {}
        files = dict(found.head.files)
        summary = description = ""
        for line in record.body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                summary, description = value.get("summary", ""), value.get("description", "")
                parent = value.get("parentCommit")
                if parent and parent != found.head.oid:
                    return 412, {"error": "A commit has happened since. Please refresh and try again."}, {}
            elif key == "file":
                if value.get("encoding", "base64") != "base64":
                    return 400, {"error": f"unsupported encoding for {value['path']}"}, {}
                data = base64.b64decode(value["content"])
                files[value["path"]] = Blob(data, False)
            elif key == "lfsFile":
                data = self.hub.lfs_objects.get(value["oid"])
                if data is None or len(data) != int(value["size"]):
                    return 422, {"error": f"LFS object for {value['path']} was not uploaded"}, {}
                files[value["path"]] = Blob(data, True)
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: b for p, b in files.items() if not p.startswith(prefix)}
            else:
                return 400, {"error": f"unknown commit operation {key!r}"}, {}
        if not summary:
            return 400, {"error": "commit summary is required"}, {}
        commit = found.record(Commit(_new_oid(repo, summary), summary, description, files))
        return 200, {"commitUrl": f"{self.hub.endpoint}/{repo}/commit/{commit.oid}", "commitOid": commit.oid,
                     "pullRequestUrl": None}, {}

    def _tree(self, *, record: RecordedRequest, query: dict, kind: str, repo: str, rev: str, sub: str | None = None):
        commit = self._commit_at(repo, record, kind, rev)
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        base = (sub or "").strip("/")
        prefix = f"{base}/" if base else ""
        entries: dict[str, dict] = {}
        for path in sorted(commit.files):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix):].split("/")
            dirs = ["/".join(rest[: i + 1]) for i in range(len(rest) - 1)]
            for d in dirs if recursive else dirs[:1]:
                full = prefix + d
                oid = hashlib.sha1(full.encode(), usedforsecurity=False).hexdigest()
                entries.setdefault(full, {"type": "directory", "oid": oid, "size": 0, "path": full})
            if recursive or len(rest) == 1:
                blob = commit.files[path]
                entry = {"type": "file", "oid": blob.git_oid, "size": len(blob.data), "path": path}
                if blob.lfs:
                    entry["lfs"] = {"oid": blob.sha256, "size": len(blob.data), "pointerSize": 134}
                entries[path] = entry
        if base and not entries:
            raise _Reply(404, {"error": f"{base} does not exist"}, {"X-Error-Code": "EntryNotFound"})
        return 200, list(entries.values()), {}

    def _resolve(self, *, record: RecordedRequest, query: dict, kind: str | None, repo: str, rev: str, file: str):
        commit = self._commit_at(repo, record, kind, unquote(rev))
        blob = commit.files.get(file)
        if blob is None:
            raise _Reply(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{blob.sha256 if blob.lfs else blob.git_oid}"',
                   "Content-Type": "application/octet-stream", "Accept-Ranges": "none"}
        if blob.lfs:
            headers["X-Linked-Etag"] = f'"{blob.sha256}"'
            headers["X-Linked-Size"] = str(len(blob.data))
        return 200, blob.data, headers


def _card_errors(content: str) -> list[str]:
    """The checks the Hub's validate-yaml makes that matter here: the header parses, and its known keys have
    the types the Hub expects."""
    match = re.match(r"^---\n(.*?)\n---\n", content, re.S)
    if not match:
        return []
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError as exc:
        return [f"YAML header does not parse: {exc}"]
    if meta is None:
        return []
    if not isinstance(meta, dict):
        return ["YAML header must be a mapping"]
    errors = []
    base = meta.get("base_model")
    for name in base if isinstance(base, list) else ([base] if base is not None else []):
        if not isinstance(name, str) or not re.fullmatch(r"([\w.-]+/)?[\w.-]+", name):
            errors.append(f'"base_model" must be a Hub model id, got {name!r}')
    tags = meta.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        errors.append('"tags" must be a list of strings')
    for index, widget in enumerate(meta.get("widget") or []):
        if not isinstance(widget, dict) or not isinstance(widget.get("text", ""), str):
            errors.append(f'"widget[{index}]" must be an object with a "text"')
    return errors


@contextmanager
def running_hub_server(tmp_path: Path | None = None, *, token: str = "hf_localtesttoken0123456789abcdef",
                       user: str = "tester", orgs: tuple[str, ...] = (), read_token: str | None = None,
                       connect: bool = True) -> Iterator[HubServer]:
    """Start a HubServer on 127.0.0.1 (a free port); stop it on exit.

    With `connect` (the default) this process talks to it while it runs: HF_ENDPOINT points at it and
    huggingface_hub's offline mode (tests/conftest.py turns it on for the whole test process, at import) is
    lifted; both are restored on exit. With tmp_path, a request log (hub-requests.jsonl: method, path, status,
    size; never bodies or headers) is written there at the end."""
    check_client_env()
    server = HubServer(token=token, user=user, orgs=orgs, read_token=read_token,
                       log_path=(Path(tmp_path) / "hub-requests.jsonl") if tmp_path is not None else None)
    handler = type("BoundHubHandler", (_Handler,), {"hub": server})
    try:
        with serving(LoopbackServer(handler), name="hub-server") as httpd:
            server.endpoint = httpd.base
            if connect:
                with _connected(server):
                    yield server
            else:
                yield server
    finally:
        server.write_log()


@contextmanager
def _connected(server: HubServer) -> Iterator[None]:
    from huggingface_hub import constants

    saved_endpoint, saved_offline = os.environ.get("HF_ENDPOINT"), constants.HF_HUB_OFFLINE
    os.environ["HF_ENDPOINT"] = server.endpoint
    # is_offline_mode() reads this constant at each request; HF_HUB_OFFLINE in the environment is read only
    # at import, so this is the way to go online for the loopback server and nothing else.
    constants.HF_HUB_OFFLINE = False
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved_offline
        if saved_endpoint is None:
            os.environ.pop("HF_ENDPOINT", None)
        else:
            os.environ["HF_ENDPOINT"] = saved_endpoint


def client_env(server: HubServer, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a subprocess (a worker, the UI) that should publish to this server."""
    env = dict(os.environ if base is None else base)
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("TRANSFORMERS_OFFLINE", None)
    return {**env, **CLIENT_ENV, "HF_ENDPOINT": server.endpoint}


def check_client_env() -> None:
    """Fail clearly when huggingface_hub was imported before CLIENT_ENV was set: it would then try xet
    uploads and telemetry lookups that a local server cannot answer."""
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is None:
        for name, value in CLIENT_ENV.items():
            os.environ.setdefault(name, value)
        return
    wrong = [name for name in CLIENT_ENV if not getattr(constants, name, True)]
    if wrong:
        raise RuntimeError(
            f"huggingface_hub was imported without {', '.join(wrong)}=1; set them in the environment before it is "
            "imported (tests/conftest.py does, at the top)"
        )
