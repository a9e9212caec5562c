"""Checkpoints leave the machine as they are written: each full-state `checkpoint-N` folder SimpleTuner saves
(weights, optimizer, scheduler, step, random and sampler state) goes to the job's own destination while training
goes on, so a job that dies (a host gone, the time limit, a cancel) can be continued with `resume_from: "auto"`.

- Hub (`hub.checkpoints`): `checkpoints/checkpoint-N/` in the job's repo, one commit each, so one repo holds the
  LoRA and its resumable states;
- bucket (`storage.checkpoints`): `<prefix>/checkpoints/checkpoint-N/`.

Each destination keeps the last K (`config.checkpoints_total_limit`, default 2); older ones are deleted there.
A background thread, fed by the CheckpointSaved events, does the uploads: a training step never waits for one.
The folder is first hard-linked aside, so SimpleTuner's own pruning cannot remove files mid-upload. A failed
upload is a warning, never the job's end.
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from core.adapters import (
    RETRY,
    HubTarget,
    RetryPolicy,
    call_hub,
    hub_endpoint,
    require_keys,
    s3_client,
    s3_config,
    s3_error,
    s3_failures,
)
from core.errors import JobError, PublishError, StorageError
from core.events import CheckpointSaved, Event, EventSink, JobWarning, LogLine, ignore_event
from core.jobdir import JobDir
from core.outputs import STATE_FILE, checkpoint_name, checkpoint_step
from core.secrets import scrub_file
from core.spec import JobSpec

FOLDER = "checkpoints"
DEFAULT_KEEP = 2


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

    def __init__(self, repo_id: str, *, token: str, private: bool, secrets: Sequence[str | None] = (),
                 retry: RetryPolicy = RETRY, on_event: EventSink = ignore_event):
        self.repo_id, self.token, self.private, self.retry, self.on_event = repo_id, token, private, retry, on_event
        self.secrets = [s for s in (token, *secrets) if s]
        self.name = f"hf://{repo_id}/{FOLDER}"

    def upload(self, folder: Path, step: int, *, keep: int) -> UploadedCheckpoint:
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, RepoFolder

        target = HubTarget(self.repo_id, family=PublishError, field="hub.checkpoints", endpoint=hub_endpoint(),
                           token=self.token, token_field="hub.token", write=True)  # noqa: S106 (a field name)
        api = HfApi(endpoint=target.endpoint, token=self.token)

        def hub[T](what: str, call: Callable[[], T]) -> T:
            return call_hub(call, target=target, what=what, retry=self.retry, on_event=self.on_event)

        hub("creating the repo", lambda: api.create_repo(self.repo_id, private=self.private, exist_ok=True))
        there = hub("listing its checkpoints", lambda: [
            entry.path.rsplit("/", 1)[-1] for entry in _tree_or_empty(api, self.repo_id, FOLDER)
            if isinstance(entry, RepoFolder)])
        old = _to_drop([*there, folder.name], keep=keep)

        def operations() -> list:
            adds = [CommitOperationAdd(path_in_repo=f"{FOLDER}/{folder.name}/{rel}", path_or_fileobj=data)
                    for rel, data in _contents(folder, self.secrets)]
            return adds + [CommitOperationDelete(path_in_repo=f"{FOLDER}/{name}/", is_folder=True) for name in old]

        hub(f"uploading {folder.name}", lambda: api.create_commit(
            self.repo_id, operations=operations(), commit_message=f"Checkpoint at step {step}"))
        where = f"{self.repo_id}/{FOLDER}/{folder.name}"
        return UploadedCheckpoint(step=step, location=f"hf://{where}", resume_from=where)


class BucketCheckpoints:
    """<prefix>/checkpoints/checkpoint-N/ in a bucket."""

    def __init__(self, bucket: str, prefix: str, *, env: Mapping[str, str], secrets: Sequence[str | None] = ()):
        self.config = s3_config(env)
        require_keys(self.config, family=StorageError, field="storage")
        self.bucket, self.secrets = bucket, [s for s in secrets if s]
        self.prefix = "/".join(part for part in (prefix.strip("/"), FOLDER) if part)
        self.name = f"s3://{bucket}/{self.prefix}"

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


def _tree_or_empty(api, repo_id: str, path: str) -> list:
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

    try:
        return list(api.list_repo_tree(repo_id, path_in_repo=path))
    except EntryNotFoundError:
        return []
    except HfHubHTTPError as exc:
        if exc.response is not None and exc.response.status_code == 404:
            return []
        raise


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


def destinations_of(spec: JobSpec, *, token: str | None, env: Mapping[str, str],
                    on_event: EventSink = ignore_event) -> list[Destination]:
    """Where this job's checkpoints go: its Hub repo and/or its bucket, each when asked (hub/storage.checkpoints)."""
    found: list[Destination] = []
    if spec.hub and spec.hub.checkpoints and token:
        found.append(HubCheckpoints(spec.hub.repo_id, token=token, private=spec.hub.private, on_event=on_event))
    bucket = spec.storage and (spec.storage.bucket or env.get("BUCKET_NAME"))
    if spec.storage and spec.storage.checkpoints and bucket:
        found.append(BucketCheckpoints(bucket, spec.storage.prefix, env=env, secrets=[token]))
    return found


def fallback_destinations(spec: JobSpec, *, token: str | None, env: Mapping[str, str],
                          on_event: EventSink = ignore_event) -> list[Destination]:
    """Where a checkpoint goes when the job must stop early and asked for no uploads: its own Hub repo or bucket."""
    forced = spec.model_copy(update={
        "hub": spec.hub.model_copy(update={"checkpoints": True}) if spec.hub else None,
        "storage": spec.storage.model_copy(update={"checkpoints": True}) if spec.storage else None})
    return destinations_of(forced, token=token, env=env, on_event=on_event)


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
    def for_job(cls, spec: JobSpec, *, job: JobDir, token: str | None, env: Mapping[str, str],
                on_event: EventSink = ignore_event) -> CheckpointUploads:
        keep = int(spec.config.get("checkpoints_total_limit") or DEFAULT_KEEP)
        return cls(destinations_of(spec, token=token, env=env, on_event=on_event), job=job, keep=keep,
                   on_event=on_event)

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
                if (step := checkpoint_step(folder)) is not None and (folder / STATE_FILE).is_file():
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
            first = first or done
        shutil.rmtree(copy, ignore_errors=True)
        return first
