"""What a running job shows in its RunPod status: stage, step/total, loss, ETA (core/status.py folds the events).

Events come from the pipeline's thread and from SimpleTuner's webhook threads, many a second, while runpod's
`progress_update` starts a thread and an HTTP request per call (runpod 1.12). So an event only updates one status
(the latest wins) and one coroutine sends it at most once per interval, and only when it changed.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from core.events import Event
from core.secrets import scrub
from core.status import JobStatus, apply, summary

INTERVAL_S = 1.0


class ProgressReporter:
    """Collects a job's events into its status and sends it through `send` at most once per `interval_s`."""

    def __init__(self, *, send: Callable[[dict[str, Any]], None], interval_s: float = INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic, secrets: Iterable[str] = ()):
        self._send = send
        self._interval_s = interval_s
        self._clock = clock
        self._secrets = list(secrets)
        self._started = clock()
        self._lock = threading.Lock()  # events arrive on the pipeline's and the webhook receiver's threads
        self._status = JobStatus()
        self._version = 0
        self._sent_version = 0
        self.sent = 0

    def on_event(self, event: Event) -> None:
        """The pipeline's event sink: cheap, thread-safe, never sends by itself."""
        with self._lock:
            status = apply(self._status, event)
            if status is not self._status:
                self._status = status
                self._version += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return self._payload()

    def _payload(self) -> dict[str, Any]:
        """The status RunPod shows: no secret of the job in its message."""
        payload = self._status.to_dict()
        payload["message"] = scrub(payload.get("message", ""), secrets=self._secrets)
        return {**payload, "elapsed_s": round(self._clock() - self._started, 1)}

    def flush(self) -> bool:
        """Send the state if it changed since the last send; True when it sent."""
        with self._lock:
            if self._version == self._sent_version:
                return False
            self._sent_version = self._version
            payload = self._payload()
        try:
            self._send(payload)
        except Exception as exc:  # a status update must never fail the job it reports on
            print(f"worker: progress update failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            return False
        self.sent += 1
        return True

    async def run(self) -> None:
        """Send the latest state once per interval until cancelled (the handler cancels it when the job ends)."""
        while True:
            await asyncio.sleep(self._interval_s)
            self.flush()


def format_status(status: dict[str, Any]) -> str:
    """One log line for a sent status: what a developer sees where RunPod's status is not shown (local runs)."""
    return summary(JobStatus.from_dict(status), elapsed_s=status.get("elapsed_s", 0))
