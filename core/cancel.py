"""A job's stop signal: someone's cancel (the UI's Cancel, RunPod's /cancel, Ctrl-C) or the job's deadline (timeout_s).

Every long wait of a job takes one: a download checks it between chunks, a retry backs off with `wait`, SimpleTuner
is stopped when it is set. `check()` raises what ends the job: JobCancelled, or JobTimeout once past the deadline.
To its callers it is a threading.Event (set / is_set / wait); the deadline counts as set.

    cancel = Cancel(timeout_s=3600)          # or Cancel.of(an_event, timeout_s=...): the event's set() reaches it
    cancel.wait(backoff_s)                   # sleeps, but wakes at once on a cancel or at the deadline
    cancel.check("while downloading x.zip")  # raises JobCancelled / JobTimeout, or returns
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

from core.errors import JobCancelled, JobError, JobTimeout


class StopFlag(Protocol):
    """What a Cancel can share its flag with: a threading.Event, or a flag that answers like one
    (core/training/deadline.py's DeadlineStop)."""

    def set(self) -> None: ...
    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...


class Cancel:
    def __init__(self, *, timeout_s: float | None = None, event: StopFlag | None = None):
        self._event = event if event is not None else threading.Event()
        self.timeout_s = timeout_s
        self.deadline = None if timeout_s is None else time.monotonic() + timeout_s
        """On time.monotonic()'s clock; None: no time limit."""

    @classmethod
    def of(cls, cancel: Cancel | StopFlag | None, *, timeout_s: float | None = None) -> Cancel:
        """A Cancel sharing `cancel`'s flag (its set() stops this one too), with a deadline `timeout_s` from now;
        a Cancel's own deadline is kept when it is sooner."""
        if isinstance(cancel, Cancel) and timeout_s is None:
            return cancel
        made = cls(timeout_s=timeout_s, event=cancel._event if isinstance(cancel, Cancel) else cancel)
        if isinstance(cancel, Cancel) and cancel.deadline is not None and (
                made.deadline is None or cancel.deadline < made.deadline):
            made.deadline, made.timeout_s = cancel.deadline, cancel.timeout_s
        return made

    def set(self) -> None:
        """Cancel the job."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """Someone asked to stop (not the deadline)."""
        return self._event.is_set()

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def is_set(self) -> bool:
        """The job must stop: cancelled, or past its deadline."""
        return self.cancelled or self.expired()

    def remaining(self) -> float | None:
        """Seconds left before the deadline (0 once past it); None without one."""
        return None if self.deadline is None else max(self.deadline - time.monotonic(), 0.0)

    def wait(self, seconds: float | None = None) -> bool:
        """Sleep `seconds` (None: until stopped), returning early on a cancel or at the deadline; True when stopped."""
        left = self.remaining()
        if left is not None:
            seconds = left if seconds is None else min(seconds, left)
        self._event.wait(seconds)
        return self.is_set()

    def error(self, doing: str = "", *, stage: str | None = None) -> JobError | None:
        """The error that ends the job now (`doing` says what was stopped: "while downloading x.zip"), or None."""
        if self.cancelled:
            return JobCancelled(" ".join(filter(None, ("cancelled", doing))), stage=stage)
        if self.expired():
            return JobTimeout(" ".join(filter(None, (f"stopped by the time limit (timeout_s={self.timeout_s:g})",
                                                     doing))), stage=stage)
        return None

    def check(self, doing: str = "", *, stage: str | None = None) -> None:
        """Raise JobCancelled or JobTimeout when the job must stop; return otherwise."""
        error = self.error(doing, stage=stage)
        if error is not None:
            raise error
