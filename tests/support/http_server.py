"""A loopback static file server for download tests: Range requests, redirects, scripted failures.

    with serve_files(folder) as server:
        server.url("data.zip")                   # http://127.0.0.1:PORT/data.zip
        server.drop_halfway["data.zip"] = 1      # the next 1 GET sends half the body, then closes the socket
        server.fail_status["x"] = [503, 503]     # the next two GETs of x answer 503
        server.redirects["old"] = "/data.zip"    # 302
        server.trickle["data.zip"] = 200         # the body at 200 bytes/s (0: headers, then not one byte)
        server.requests                          # [(method, path, Range header or None), ...]
"""

from __future__ import annotations

import re
import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tests.support.loopback import LoopbackServer, QuietHandler, serving


class FileServer(LoopbackServer):
    def __init__(self, root: Path, *, ranges: bool = True):
        super().__init__(_Handler)
        self.root = root.resolve()
        self.ranges = ranges
        self.drop_halfway: dict[str, int] = {}
        self.fail_status: dict[str, list[int]] = {}
        self.redirects: dict[str, str] = {}
        self.trickle: dict[str, float] = {}
        self.closing = threading.Event()
        self.requests: list[tuple[str, str, str | None]] = []
        self.lock = threading.Lock()

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"


class _Handler(QuietHandler):
    server: FileServer

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _take(self, table: dict, name: str):
        with self.server.lock:
            value = table.get(name)
            if isinstance(value, int):
                if value <= 0:
                    return None
                table[name] = value - 1
                return True
            if isinstance(value, list):
                return value.pop(0) if value else None
            return value

    def _serve(self, *, body: bool) -> None:  # noqa: C901 (one fake server's request routing)
        name = unquote(urlsplit(self.path).path).lstrip("/")
        range_header = self.headers.get("Range")
        with self.server.lock:
            self.server.requests.append((self.command, name, range_header))
        if name in self.server.redirects:
            self._empty(302, {"Location": self.server.redirects[name]})
            return
        status = self._take(self.server.fail_status, name)
        if status:
            self._empty(status)
            return
        path = (self.server.root / name).resolve()
        if not path.is_relative_to(self.server.root) or not path.is_file():
            self._empty(404)
            return
        size = path.stat().st_size
        start, end = 0, size - 1
        partial = False
        if range_header and self.server.ranges:
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header.strip())
            if match:
                start = int(match.group(1))
                end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
                if start >= size:
                    self._empty(416, {"Content-Range": f"bytes */{size}"})
                    return
                partial = True
        length = end - start + 1
        self.send_response(206 if partial else 200)
        self.send_header("Content-Length", str(length))
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("ETag", f'"{size}-{int(path.stat().st_mtime)}"')
        if self.server.ranges:
            self.send_header("Accept-Ranges", "bytes")
        if partial:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if not body:
            return
        if name in self.server.trickle:
            self._trickle(path, start=start, count=length, rate=self.server.trickle[name])
            return
        drop = bool(self._take(self.server.drop_halfway, name))
        count = length // 2 if drop else length
        with path.open("rb") as handle:
            sent = 0
            while sent < count:
                step = self.connection.sendfile(handle, offset=start + sent, count=count - sent)
                if not step:
                    break
                sent += step
        if drop:
            self.close_connection = True
            self.connection.shutdown(2)

    def _trickle(self, path: Path, *, start: int, count: int, rate: float, limit_s: float = 120.0) -> None:
        """Send the body at `rate` bytes/s in ten pieces a second (0: none at all) until it is sent, the client goes
        away, the server closes, or `limit_s` passes."""
        piece = max(1, int(rate / 10)) if rate > 0 else 0
        ends = time.monotonic() + limit_s
        with path.open("rb") as handle:
            handle.seek(start)
            while count > 0 and time.monotonic() < ends and not self.server.closing.is_set():
                readable, _, _ = select.select([self.connection], [], [], 0.1)
                if readable:
                    break  # the client closed its end (or sent another request): it is gone
                if piece:
                    data = handle.read(min(piece, count))
                    self.connection.sendall(data)
                    count -= len(data)
        self.close_connection = True

    def _empty(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()


@contextmanager
def serve_files(root: Path, *, ranges: bool = True) -> Iterator[FileServer]:
    """Serve `root` on 127.0.0.1 (a free port) for the duration of the block."""
    with serving(FileServer(root, ranges=ranges), name="test-http") as server:
        try:
            yield server
        finally:
            server.closing.set()  # ends any trickling response

