"""A loopback TCP proxy with a bandwidth limit: a slow link in front of any local test server.

    with throttled(upstream_port, bytes_per_s=2_000_000) as proxy:
        proxy.base                      # http://127.0.0.1:PORT, forwarding to 127.0.0.1:upstream_port
The limit is shared by all the proxy's connections (one link), on the bytes coming back from the upstream.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

PIECE = 16 * 1024


@dataclass
class Link:
    bytes_per_s: float
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _next: float = 0.0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def take(self, count: int) -> None:
        """Wait until `count` more bytes fit in the link's rate."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + count / self.bytes_per_s
        if start > now:
            time.sleep(start - now)


def _pipe(source: socket.socket, sink: socket.socket, link: Link | None, stop: threading.Event) -> None:
    try:
        while not stop.is_set():
            data = source.recv(PIECE)
            if not data:
                break
            if link is not None:
                link.take(len(data))
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@contextmanager
def throttled(upstream_port: int, *, bytes_per_s: float) -> Iterator[Link]:
    link = Link(bytes_per_s=bytes_per_s)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    link.port = listener.getsockname()[1]
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            upstream = socket.create_connection(("127.0.0.1", upstream_port))
            for args in ((client, upstream, None), (upstream, client, link)):
                threading.Thread(target=_pipe, args=(*args, stop), daemon=True).start()

    thread = threading.Thread(target=accept, name="throttle", daemon=True)
    thread.start()
    try:
        yield link
    finally:
        stop.set()
        thread.join(timeout=2)
        listener.close()
