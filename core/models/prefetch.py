"""The models a job downloads from the Hub (its base model; its caption model when it captions) download on threads
while the dataset stages: a job waits for the longest download, not for their sum.

    fetch = ModelFetch(spec, settings=..., token=..., on_event=sink, cancel=cancel)
    on_event = fetch.report                 # serialized; while models download, one progress line for every download
    fetch.start()                           # a thread per model the job downloads from the Hub
    ... dataset ...
    caption_stage(..., model_ready=fetch.wait_caption_model)   # the rest of the caption model, its error
    ... preflight, configure ...
    fetch.wait()                            # in the model stage: the rest of the base model, its progress, its error

The threads report through the same sink as the job (serialized: a face sees one event at a time). They stop within
a second of the job's cancel or deadline, or as soon as a stage of the job fails (its failed StageEvent passes
through `report`): a job that ends early does not go on downloading. The caption model's download also stops when
the caption stage ends without having needed it (every image had a caption). Each model's error is raised by its
own wait, so it is reported by the stage that needs the model, with its field (config.model_name, captioning.model).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.cancel import Cancel
from core.errors import JobCancelled, JobError
from core.events import DownloadProgress, Event, EventSink, StageEvent
from core.models.base_model import fetch_base_model, hub_models
from core.models.caption_model import caption_download, fetch_caption_model
from core.settings import Settings
from core.spec import JobSpec


class _Stop:
    """A download thread's cancel flag: the job's cancel and deadline, or the job going on without the model."""

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


class _Download:
    """One model downloading on a thread of its own: `fetch(stop)`, whose value or error `wait` hands over."""

    def __init__(self, name: str, fetch: Callable[[_Stop], Any], *, job: Cancel):
        self.stop = _Stop(job)
        self._fetch = fetch
        self._outcome: dict[str, Any] = {}
        self.thread = threading.Thread(target=self._body, name=name, daemon=True)
        self.thread.start()

    def _body(self) -> None:
        try:
            self._outcome["value"] = self._fetch(self.stop)
        except BaseException as exc:  # handed to the job's thread by wait()
            self._outcome["error"] = exc

    def wait(self, *, doing: str, stage: str) -> Any:
        """The download's value once done; raises its error, or the job's cancel/deadline error while waiting."""
        while self.thread.is_alive():
            self.thread.join(0.2)
            self.stop.job.check(doing, stage=stage)
        if "error" in self._outcome:
            raise self._outcome["error"]
        return self._outcome.get("value")


class ModelFetch:
    def __init__(self, spec: JobSpec, *, settings: Settings, token: str | None, on_event: EventSink,
                 cancel: Cancel):
        self.spec, self.settings, self.token, self.cancel = spec, settings, token, cancel
        self.needed = not spec.dry_run and settings.online and bool(hub_models(spec))
        self.caption_repo = caption_download(spec.captioning, settings=settings)
        """The caption model's Hub id when the job downloads it (a dry run too: it captions a sample)."""
        self._lock = threading.RLock()
        self._sink = on_event
        self._downloads: dict[str, tuple[int, int | None]] = {}
        self._base: _Download | None = None
        self._caption: _Download | None = None

    # -- events ------------------------------------------------------------------------------------------------

    def report(self, event: Event) -> None:
        """The job's sink, for the job's events and the threads', one at a time; while a model downloads, a
        download event says the sum of every download (`data.zip + org/model + org/captioner`)."""
        if isinstance(event, StageEvent) and event.status == "failed":
            self.abandon()
        elif isinstance(event, StageEvent) and (event.stage, event.status) == ("caption", "completed"):
            self._drop_caption_download()  # still running: no image needed a caption
        with self._lock:
            if isinstance(event, DownloadProgress):
                if any(d.thread is threading.current_thread() and d.stop.is_set() for d in self._threads()):
                    return  # a stopped download's last word: no longer part of the job's line
                if not self.running:
                    self._downloads.clear()
                else:
                    self._downloads[event.source] = (event.bytes_done, event.bytes_total)
                    totals = [total for _, total in self._downloads.values()]
                    event = DownloadProgress(
                        source=" + ".join(self._downloads),
                        bytes_done=sum(done for done, _ in self._downloads.values()),
                        bytes_total=sum(t for t in totals if t is not None) if None not in totals else None)
            self._sink(event)

    @property
    def running(self) -> bool:
        return any(download.thread.is_alive() for download in self._threads())

    def _threads(self) -> list[_Download]:
        return [download for download in (self._base, self._caption) if download is not None]

    # -- the threads -------------------------------------------------------------------------------------------

    def start(self) -> ModelFetch:
        if self.needed:
            self._base = _Download("base-model-fetch", job=self.cancel, fetch=lambda stop: fetch_base_model(
                self.spec, settings=self.settings, token=self.token, on_event=self.report, cancel=stop))
        if self.caption_repo:
            repo = self.caption_repo
            self._caption = _Download("caption-model-fetch", job=self.cancel, fetch=lambda stop: fetch_caption_model(
                repo, settings=self.settings, token=self.token, on_event=self.report, cancel=stop))
        return self

    def abandon(self) -> None:
        """The job ends without the models: stop every download (within a second)."""
        for download in self._threads():
            download.stop.abandoned.set()

    def _drop_caption_download(self) -> None:
        with self._lock:
            if self._caption is not None and self._caption.thread.is_alive():
                self._caption.stop.abandoned.set()
                self._downloads.pop(str(self.caption_repo), None)

    def wait(self) -> Path | None:
        """The base model's folder once downloaded (None when none was to be fetched); raises its error, or the
        job's cancel/deadline error while waiting. Runs the fetch here when it was not started."""
        if self._base is None:
            return fetch_base_model(self.spec, settings=self.settings, token=self.token, on_event=self.report,
                                    cancel=self.cancel)
        return self._base.wait(doing="while downloading the base model", stage="model")

    def wait_caption_model(self) -> None:
        """The caption model in the Hugging Face cache, when the job downloads it; raises its error (field
        captioning.model), or the job's cancel/deadline error while waiting. The caption stage then finds it there
        and downloads nothing. Without a download started (a local folder, offline) there is nothing to wait for."""
        if self._caption is not None:
            self._caption.wait(doing="while downloading the caption model", stage="caption")
