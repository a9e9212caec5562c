"""The UI in the test process on a loopback port. Gradio cannot listen on port 0 (it builds its URL, and its own
reachability check, from the port it was given), so this takes a port the OS had free a moment ago and tries again
with another if something took it meanwhile: gradio's launch raises OSError for a taken port."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any

from app.__main__ import serve
from core.settings import Settings

TRIES = 3


def free_port() -> int:
    """A 127.0.0.1 port nothing listened on a moment ago (also: a port where nothing answers)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_ui(*, settings: Settings, env: Mapping[str, str]) -> tuple[Any, str]:
    """app.__main__.serve on 127.0.0.1, returning at once: (UI, its local URL)."""
    for attempt in range(1, TRIES + 1):
        try:
            return serve(settings=settings, env={**env, "GRADIO_SERVER_NAME": "127.0.0.1",
                                                 "GRADIO_SERVER_PORT": str(free_port())},
                         prevent_thread_lock=True, quiet=True)
        except OSError:
            if attempt == TRIES:
                raise
    raise AssertionError("unreachable")
