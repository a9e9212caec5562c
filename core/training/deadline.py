"""The job's deadline, seen from training: stop in time to keep what was trained.

A job has `timeout_s` (the Cancel carries the deadline). In its last DEADLINE_MARGIN_S (default 600 s), training
stops right after its next checkpoint is written, so no step is lost; and whatever happens it stops RESERVE_S
before the deadline (a quarter of the margin, at most 120 s), the time to upload the latest checkpoint. The job
then ends with status `partial` and a `resume_from` value the user sends as is (core/publishing/checkpoints.py puts the
checkpoint at the job's own destination).

A cancel ends the same way when the job asked to keep what it trained (`hub.on_failure`, `hub.checkpoints` or
`storage.checkpoints`) and a checkpoint is written (`ends_partial`, the one rule for both).

`DeadlineStop` is the flag train() stops on: a threading.Event to it, set by the job's cancel, its deadline, or
this early stop (`fired`).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from core.cancel import Cancel
from core.events import CheckpointSaved, Event, EventSink, LogLine
from core.jobdir import JobDir
from core.outputs import latest_checkpoint
from core.spec import JobSpec

MAX_RESERVE_S = 120.0
POLL_S = 0.1


class DeadlineStop:
    def __init__(self, cancel: Cancel, *, margin_s: float, on_event: EventSink | None = None):
        self.cancel = cancel
        self.margin_s = margin_s
        self.reserve_s = min(margin_s / 4, MAX_RESERVE_S)
        self.on_event = on_event
        self._stop = threading.Event()
        self.fired = False
        """Training was stopped for the deadline (not by a cancel)."""

    def _fire(self, why: str) -> None:
        if not self.fired and not self.cancel.cancelled:
            self.fired = True
            if self.on_event is not None:
                self.on_event(LogLine(f"stopping training: {why}", severity="warning"))
        self._stop.set()

    def in_margin(self) -> bool:
        left = self.cancel.remaining()
        return left is not None and left <= self.margin_s

    def watching(self, sink: EventSink) -> EventSink:
        """`sink`, plus: a checkpoint written inside the margin stops training."""
        def watch(event: Event) -> None:
            sink(event)
            if isinstance(event, CheckpointSaved) and self.in_margin():
                left = self.cancel.remaining() or 0.0
                self._fire(f"{Path(event.path).name} is written and {left:.0f} s are left before timeout_s")
        return watch

    def set(self) -> None:
        """Stop training now, as the job's cancel does (a Cancel sharing this flag may call it)."""
        self._stop.set()

    def is_set(self) -> bool:
        if self.cancel.cancelled:
            return True
        left = self.cancel.remaining()
        if left is not None and left <= self.reserve_s:
            self._fire(f"{left:.0f} s are left before timeout_s: the rest is for uploading the latest checkpoint")
        return self._stop.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        end = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            step = POLL_S if end is None else min(POLL_S, end - time.monotonic())
            if step <= 0:
                break
            self._stop.wait(step)
        return self.is_set()


def ends_partial(spec: JobSpec, *, deadline: bool, cancelled: bool, job: JobDir) -> bool:
    """Training cut short ends `partial` (its latest checkpoint uploaded, a resume_from to send) when the deadline
    stopped it, or when a cancel did and the job keeps what it trains and has a checkpoint to keep."""
    if deadline:
        return True
    keeps = bool((spec.hub and (spec.hub.on_failure or spec.hub.checkpoints))
                 or (spec.storage and spec.storage.checkpoints))
    return cancelled and keeps and latest_checkpoint(job.output, complete=True) is not None
