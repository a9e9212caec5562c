"""The URL a server subprocess says it listens on. The tests start servers on port 0 and read the port the OS gave
them from the server's own startup line, so no test picks a "free" port that another process could take before
the server binds it.

    process = subprocess.Popen([... "--port", "0"], stdout=log_file, stderr=subprocess.STDOUT)
    base = announced_url(process, log_path, UVICORN, timeout_s=60, name="the worker's API")
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path
from typing import IO

UVICORN = re.compile(rb"Uvicorn running on (http://127\.0\.0\.1:\d+)")
"""uvicorn's startup line (runpod's local API), logged at INFO once its socket listens."""
WERKZEUG = re.compile(rb"Running on (http://127\.0\.0\.1:\d+)")
"""werkzeug's startup line (moto_server), logged once its socket is bound."""


def _read(log: Path | IO[bytes]) -> bytes:
    if isinstance(log, Path):
        return log.read_bytes() if log.exists() else b""
    # pread: the server writes through the same open file, so moving its offset (seek) would misplace its writes.
    return os.pread(log.fileno(), os.fstat(log.fileno()).st_size, 0)


def announced_url(process: subprocess.Popen, log: Path | IO[bytes], pattern: re.Pattern[bytes], *,
                  timeout_s: float, name: str) -> str:
    """The first URL `pattern` finds in `log` (the process's stdout+stderr, a file: a pipe left unread would stall
    it). RuntimeError with the log's end if the process exits or `timeout_s` passes first."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = _read(log)
        found = pattern.search(text)
        if found:
            return found.group(1).decode()
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited before it listened:\n{text.decode(errors='replace')[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not say its port in {timeout_s:g} s:\n"
                               f"{text.decode(errors='replace')[-3000:]}")
        time.sleep(0.1)
