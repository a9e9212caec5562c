"""Checkpoints leave the machine as they are written: each full-state `checkpoint-N` folder SimpleTuner saves
(weights, optimizer, scheduler, step, random and sampler state) goes to the job's own destination while training
goes on, so a job that dies (a host gone, the time limit, a cancel) can be continued with `resume_from: "auto"`.

- Hub (`hub.checkpoints`): `checkpoints/checkpoint-N/` in the job's repo, one commit each, so one repo holds the
  LoRA and its resumable states;
- bucket (`storage.checkpoints`): `<prefix>/checkpoints/checkpoint-N/`.

An expert's run of a two-expert model (`experts`, core/simpletuner/experts.py) keeps its checkpoints in a folder of
its own, `checkpoints/high_noise/` or `checkpoints/low_noise/`, so each resumes from its own; when an expert of a job
training both finishes, its LoRA goes to `checkpoints/<expert>/final/` (FINISHED) with a training_state.json of
its last step: what `resume_from: "auto"` takes instead of training that expert again.

Each destination keeps the last K (`config.checkpoints_total_limit`, default 2); older ones are deleted there.
A background thread, fed by the CheckpointSaved events, does the uploads: a training step never waits for one.
The folder is first hard-linked aside, so SimpleTuner's own pruning cannot remove files mid-upload. A failed
upload is a warning, never the job's end.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from core.adapters import (
    RETRY,
    HubTarget,
    RetryPolicy,
    call_hub,
    list_folder_or_empty,
    s3_client,
    s3_error,
    s3_failures,
)
from core.errors import JobError, PublishError, StorageError
from core.events import CheckpointSaved, CheckpointUploaded, Event, EventSink, JobWarning, LogLine, ignore_event
from core.jobdir import JobDir
from core.outputs import (
    LORA_FILE,
    STATE_FILE,
    checkpoint_name,
    checkpoint_step,
    expert_folder,
    is_complete,
    lora_file,
)
from core.publishing.destinations import BucketDestination, HubDestination, destinations_of
from core.secrets import scrub_file
from core.settings import Settings
from core.spec import JobSpec

FOLDER = "checkpoints"
FINISHED = "final"
"""A finished expert's folder beside its checkpoint-N folders: its LoRA and the step it ended at."""
DEFAULT_KEEP = 2


def checkpoint_folder(spec: JobSpec) -> str:
    """Where a job's checkpoints go in its repo and under its bucket prefix: checkpoints/, or an expert's
    checkpoints/<expert folder>/."""
    return f"{FOLDER}/{expert_folder(spec.experts)}" if spec.experts in ("high", "low") else FOLDER


@dataclass(frozen=True)
class UploadedCheckpoint:
    step: int
    location: str
    """Where it is: hf://user/repo/checkpoints/checkpoint-N or s3://bucket/prefix/checkpoints/checkpoint-N."""
    resume_from: str
    """The value a job's resume_from takes to continue from it."""

    def to_dict(self) -> dict:
        return {"step": self.step, "location": self.location, "resume_from": self.resume_from}


class Destination(Protocol):
    name: str

    def upload(self, folder: Path, step: int, *, keep: int) -> UploadedCheckpoint: ...


class HubCheckpoints:
    """checkpoints/checkpoint-N/ in a Hub repo (which the destination check created)."""

    def __init__(self, destination: HubDestination, *, secrets: Sequence[str | None] = (),
                 retry: RetryPolicy = RETRY, on_event: EventSink = ignore_event, folder: str = FOLDER):
        self.repo_id, self.private, self.endpoint = destination.repo_id, destination.spec.private, destination.endpoint
        self.token = destination.token
        self.retry, self.on_event = retry, on_event
        self.secrets = [s for s in (self.token, *secrets) if s]
        self.folder = folder
        self.name = f"hf://{self.repo_id}/{folder}"

    def upload(self, folder: Path, step: int, *, keep: int) -> UploadedCheckpoint:
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, RepoFolder

        target = HubTarget(self.repo_id, family=PublishError, field="hub.checkpoints", endpoint=self.endpoint,
                           token=self.token, token_field="hub.token", write=True)  # noqa: S106 (a field name)
        api = HfApi(endpoint=target.endpoint, token=self.token)

        def hub[T](what: str, call: Callable[[], T]) -> T:
            return call_hub(call, target=target, what=what, retry=self.retry, on_event=self.on_event)

        hub("creating the repo", lambda: api.create_repo(self.repo_id, private=self.private, exist_ok=True))
        there = hub("listing its checkpoints", lambda: [
            entry.path.rsplit("/", 1)[-1] for entry in list_folder_or_empty(api, self.repo_id, self.folder)
            if isinstance(entry, RepoFolder)])
        old = _to_drop([*there, folder.name], keep=keep)

        def operations() -> list:
            adds = [CommitOperationAdd(path_in_repo=f"{self.folder}/{folder.name}/{rel}", path_or_fileobj=data)
                    for rel, data in _contents(folder, self.secrets)]
            return adds + [CommitOperationDelete(path_in_repo=f"{self.folder}/{name}/", is_folder=True)
                           for name in old]

        hub(f"uploading {folder.name}", lambda: api.create_commit(
            self.repo_id, operations=operations(), commit_message=f"Checkpoint at step {step}"))
        where = f"{self.repo_id}/{self.folder}/{folder.name}"
        return UploadedCheckpoint(step=step, location=f"hf://{where}", resume_from=where)


class BucketCheckpoints:
    """<prefix>/checkpoints/checkpoint-N/ in a bucket."""

    def __init__(self, destination: BucketDestination, *, secrets: Sequence[str | None] = (), folder: str = FOLDER):
        self.config = destination.s3
        self.bucket, self.secrets = destination.require(), [s for s in secrets if s]
        self.prefix = "/".join(part for part in (destination.prefix.strip("/"), folder) if part)
        self.name = f"s3://{self.bucket}/{self.prefix}"

    def upload(self, folder: Path, step: int, *, keep: int) -> UploadedCheckpoint:
        where = f"{self.name}/{folder.name}"
        try:
            client = s3_client(self.config)
            for rel, data in _contents(folder, self.secrets):
                key = f"{self.prefix}/{folder.name}/{rel}"
                if isinstance(data, bytes):
                    client.put_object(Bucket=self.bucket, Key=key, Body=data)
                else:
                    client.upload_file(data, self.bucket, key)
            keys: list[str] = []
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + "/"):
                keys += [item["Key"] for item in page.get("Contents", [])]
            names = {key[len(self.prefix) + 1:].split("/", 1)[0] for key in keys}
            for name in _to_drop(list(names), keep=keep):
                for key in (k for k in keys if k.startswith(f"{self.prefix}/{name}/")):
                    client.delete_object(Bucket=self.bucket, Key=key)
        except s3_failures(OSError) as exc:
            raise s3_error(exc, family=StorageError, where=f"upload to {where}/", field="storage.checkpoints",
                           config=self.config, bucket=self.bucket, bucket_field="storage.bucket",
                           secrets=self.secrets) from None
        return UploadedCheckpoint(step=step, location=where, resume_from=where)


def _to_drop(names: list[str], *, keep: int) -> list[str]:
    """The checkpoint-N names beyond the newest `keep`."""
    steps = sorted({step for name in names if (step := checkpoint_step(name)) is not None}, reverse=True)
    return [checkpoint_name(step) for step in steps[keep:]]


def _contents(folder: Path, secrets: list[str]) -> list[tuple[str, bytes | str]]:
    """(relative path, bytes or file path) of every file in `folder`; text files scrubbed of secrets."""
    out: list[tuple[str, bytes | str]] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        scrubbed = scrub_file(path, secrets)
        out.append((path.relative_to(folder).as_posix(), scrubbed if scrubbed is not None else str(path)))
    return out


def checkpoint_destinations(spec: JobSpec, settings: Settings, *,
                            on_event: EventSink = ignore_event) -> list[Destination]:
    """Where this job's checkpoints go: its Hub repo and/or its bucket (destinations_of), each when asked
    (hub/storage.checkpoints)."""
    found: list[Destination] = []
    where = destinations_of(spec, settings)
    folder = checkpoint_folder(spec)
    if where.hub and where.hub.spec.checkpoints and where.hub.token:
        found.append(HubCheckpoints(where.hub, on_event=on_event, folder=folder))
    if where.bucket and where.bucket.spec.checkpoints and where.bucket.bucket:
        found.append(BucketCheckpoints(where.bucket, secrets=[settings.token(spec.hub.token if spec.hub else None)],
                                       folder=folder))
    return found


def fallback_destinations(spec: JobSpec, settings: Settings, *,
                          on_event: EventSink = ignore_event) -> list[Destination]:
    """Where a checkpoint goes when the job must stop early and asked for no uploads: its own Hub repo or bucket."""
    forced = spec.model_copy(update={
        "hub": spec.hub.model_copy(update={"checkpoints": True}) if spec.hub else None,
        "storage": spec.storage.model_copy(update={"checkpoints": True}) if spec.storage else None})
    return checkpoint_destinations(forced, settings, on_event=on_event)


class CheckpointUploads:
    """The background uploader of one job. Use as a context manager around training; feed it the training events
    (`watching(sink)`); `uploaded` lists what reached a destination."""

    def __init__(self, destinations: Sequence[Destination], *, job: JobDir, keep: int = DEFAULT_KEEP,
                 on_event: EventSink = ignore_event):
        self.destinations, self.keep, self.on_event = list(destinations), keep, on_event
        self.staging = job.root / "checkpoint-uploads"
        self.output = job.output
        self.uploaded: list[UploadedCheckpoint] = []
        self._queue: queue.Queue[tuple[Path, int] | None] = queue.Queue()
        self._done_steps: set[int] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_job(cls, spec: JobSpec, settings: Settings, *, job: JobDir,
                on_event: EventSink = ignore_event) -> CheckpointUploads:
        keep = int(spec.config.get("checkpoints_total_limit") or DEFAULT_KEEP)
        return cls(checkpoint_destinations(spec, settings, on_event=on_event), job=job, keep=keep, on_event=on_event)

    def __enter__(self) -> CheckpointUploads:
        if self.destinations:
            self._thread = threading.Thread(target=self._run, daemon=True, name="checkpoint-uploads")
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.finish(timeout_s=None)

    def finish(self, *, timeout_s: float | None) -> bool:
        """Let the queued uploads end (at most `timeout_s`); True when none is left."""
        if self._thread is None:
            return True
        self._queue.put(None)
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def watching(self, sink: EventSink) -> EventSink:
        """`sink`, plus: each CheckpointSaved queues that checkpoint (at once: hard links, no copy)."""
        def watch(event: Event) -> None:
            sink(event)
            if isinstance(event, CheckpointSaved) and self._thread is not None:
                folder = self.output / Path(event.path).name
                # Complete only: a checkpoint without its training state cannot be resumed from.
                if (step := checkpoint_step(folder)) is not None and is_complete(folder):
                    self._queue.put((self._set_aside(folder), step))
        return watch

    def ensure(self, folder: Path, destinations: Sequence[Destination] | None = None) -> UploadedCheckpoint | None:
        """`folder` uploaded now (unless it already was): the last checkpoint of a job that must stop."""
        step = checkpoint_step(folder)
        if step is None:
            raise ValueError(f"{folder} is not a checkpoint-N folder")
        with self._lock:
            done = next((u for u in self.uploaded if u.step == step), None)
        if done is not None:
            return done
        return self._upload(self._set_aside(folder), step, destinations or self.destinations)

    def record_finished(self, *, step: int) -> None:
        """A finished expert's LoRA, with the step it ended at, to FINISHED beside its checkpoints: a later
        `resume_from: "auto"` takes it instead of training the expert again. A failure is a warning."""
        if not self.destinations or not lora_file(self.output).is_file():
            return
        record = self.staging / FINISHED
        shutil.rmtree(record, ignore_errors=True)
        record.mkdir(parents=True)
        shutil.copy2(lora_file(self.output), record / LORA_FILE)
        (record / STATE_FILE).write_text(json.dumps({"global_step": step, "finished": True}))
        for destination in self.destinations:
            try:
                done = destination.upload(record, step, keep=self.keep)
            except JobError as error:
                self.on_event(JobWarning(f"the finished LoRA was not uploaded to {destination.name}: "
                                         f"{error.message}", field=error.field))
                continue
            self.on_event(LogLine(f"the finished LoRA (step {step}) uploaded to {done.location}"))
        shutil.rmtree(record, ignore_errors=True)

    def _set_aside(self, folder: Path) -> Path:
        copy = self.staging / folder.name
        shutil.rmtree(copy, ignore_errors=True)
        for path in (p for p in folder.rglob("*") if p.is_file()):
            target = copy / path.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)  # a file system without hard links
        return copy

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            self._upload(*item, self.destinations)

    def _upload(self, copy: Path, step: int, destinations: Sequence[Destination]) -> UploadedCheckpoint | None:
        first = None
        for destination in destinations:
            try:
                done = destination.upload(copy, step, keep=self.keep)
            except JobError as error:
                self.on_event(JobWarning(f"{checkpoint_name(step)} was not uploaded to {destination.name}: "
                                         f"{error.message}", field=error.field))
                continue
            with self._lock:
                self.uploaded.append(done)
            self.on_event(LogLine(f"{checkpoint_name(step)} uploaded to {done.location}"))
            self.on_event(CheckpointUploaded(step=step, location=done.location, resume_from=done.resume_from))
            first = first or done
        shutil.rmtree(copy, ignore_errors=True)
        return first
