"""What the loopback test servers here share: a quiet request handler, a server on a free 127.0.0.1 port, and a
block that serves it on a thread.

    server = LoopbackServer(MyHandler)          # MyHandler subclasses QuietHandler
    with serving(server, name="my-fake"):
        ... server.base ...                     # http://127.0.0.1:PORT
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # the stdlib's signature
        """Quiet: each server records what the tests read."""


class LoopbackServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer on 127.0.0.1, on a port the OS picks."""

    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        super().__init__(("127.0.0.1", 0), handler)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that goes away mid-request (a stopped worker's long-poll) resets its connection: that is a test
        # ending, not a fault of the server.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


@contextmanager
def serving[S: ThreadingHTTPServer](server: S, *, name: str) -> Iterator[S]:
    """Serve `server` on a daemon thread for the duration of the block; shut it down and close its socket after."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
