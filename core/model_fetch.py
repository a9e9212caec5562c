"""The base model downloads on a thread while the dataset stages: a job waits for the longer download, not both.

    fetch = ModelFetch(spec, settings=..., token=..., on_event=sink, cancel=cancel)
    on_event = fetch.report                 # serialized; while both run, one progress line for both downloads
    fetch.start()                           # the thread, when the job downloads a base model from the Hub
    ... dataset, preflight, configure ...
    fetch.wait()                            # in the model stage: the rest of it, its progress, its error

The thread reports through the same sink as the job (serialized: a face sees one event at a time). It stops
within a second of the job's cancel or deadline, or as soon as a stage of the job fails (its failed StageEvent
passes through `report`): a job that ends early does not go on downloading.
Its error is raised by wait(), so it is reported by the model stage with its field.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from core.base_model import fetch_base_model, hub_models
from core.cancel import Cancel
from core.errors import JobCancelled, JobError
from core.events import DownloadProgress, Event, EventSink, StageEvent
from core.settings import Settings
from core.spec import JobSpec


class _Stop:
    """The thread's cancel flag: the job's cancel and deadline, or the job leaving without the model."""

    def __init__(self, job: Cancel):
        self.job, self.abandoned = job, threading.Event()

    def is_set(self) -> bool:
        return self.job.is_set() or self.abandoned.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        ends = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = None if ends is None else ends - time.monotonic()
            if left is not None and left <= 0:
                break
            self.abandoned.wait(0.2 if left is None else min(0.2, left))
        return self.is_set()

    def error(self, doing: str = "", *, stage: str | None = None) -> JobError:
        return self.job.error(doing, stage=stage) or JobCancelled(f"not needed any more {doing}", stage=stage)


class ModelFetch:
    def __init__(self, spec: JobSpec, *, settings: Settings, token: str | None, on_event: EventSink,
                 cancel: Cancel):
        self.spec, self.settings, self.token = spec, settings, token
        self.stop = _Stop(cancel)
        self.needed = not spec.dry_run and settings.online and bool(hub_models(spec))
        self._lock = threading.RLock()
        self._sink = on_event
        self._downloads: dict[str, tuple[int, int | None]] = {}
        self._thread: threading.Thread | None = None
        self._outcome: dict[str, Any] = {}

    # -- events ------------------------------------------------------------------------------------------------

    def report(self, event: Event) -> None:
        """The job's sink, for the job's events and the thread's, one at a time; while the model downloads, a
        download event says the sum of both downloads."""
        if isinstance(event, StageEvent) and event.status == "failed":
            self.abandon()
        with self._lock:
            if isinstance(event, DownloadProgress) and self.running:
                self._downloads[event.source] = (event.bytes_done, event.bytes_total)
                totals = [total for _, total in self._downloads.values()]
                event = DownloadProgress(
                    source=" + ".join(self._downloads), bytes_done=sum(done for done, _ in self._downloads.values()),
                    bytes_total=sum(t for t in totals if t is not None) if None not in totals else None)
            self._sink(event)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the thread --------------------------------------------------------------------------------------------

    def start(self) -> ModelFetch:
        if self.needed:
            self._thread = threading.Thread(target=self._body, name="base-model-fetch", daemon=True)
            self._thread.start()
        return self

    def abandon(self) -> None:
        """The job ends without the model: stop the download (within a second)."""
        self.stop.abandoned.set()

    def _body(self) -> None:
        try:
            self._outcome["folder"] = fetch_base_model(self.spec, settings=self.settings, token=self.token,
                                                       on_event=self.report, cancel=self.stop)
        except BaseException as exc:  # handed to the job's thread by wait()
            self._outcome["error"] = exc

    def wait(self) -> Path | None:
        """The base model's folder once downloaded (None when none was to be fetched); raises its error, or the
        job's cancel/deadline error while waiting. Runs the fetch here when it was not started."""
        if self._thread is None:
            return fetch_base_model(self.spec, settings=self.settings, token=self.token, on_event=self.report,
                                    cancel=self.stop.job)
        while self._thread.is_alive():
            self._thread.join(0.2)
            self.stop.job.check("while downloading the base model", stage="model")
        with self._lock:
            self._downloads.clear()
        if "error" in self._outcome:
            raise self._outcome["error"]
        return self._outcome.get("folder")
