"""Where a job's outputs go, decided once, and checked before any GPU minute.

`destinations_of(spec, settings)` is the one rule for "which repo, with which token; which bucket, with which keys":
the Hub repo of `hub` with the job's hub.token else the endpoint's HF_TOKEN (Settings.token), and the bucket of
`storage` (storage.bucket, else the endpoint's BUCKET_NAME) with the endpoint's S3 settings (Settings.s3). The checks
below, the uploads (bucket.py, hub_repo.py), the checkpoint uploads (checkpoints.py), safekeeping and
`resume_from: "auto"` (core/training/resume.py) all take their destination from it.

Two checks, both here:
- `require_destination` (no network; the worker, before it takes a job): a job whose folder is deleted when it ends
  must name a destination it has the credentials for; one with none goes to the endpoint's bucket when there is one.
- `check_destinations` (the pipeline's `validate` stage): a job whose token the Hub refuses, or whose bucket does not
  exist, fails before its dataset and base model are fetched, not after hours of training.
  - Hub (`hub`): the token is valid (the Hub's whoami), may write (a read-only token is refused), and its user or one
    of its orgs owns the repo's namespace; then the repo is created (or reused: the same rules as publishing), so a
    refused namespace or a public repo for a private job is said now. A dry run creates nothing.
  - Bucket (`storage`): the keys are set, the bucket exists and accepts a small object, deleted at once.

A failure is the stage's typed error with core/adapters/hub.py's or core/adapters/s3.py's code, naming the field
(hub.token, hub.repo_id, hub.private, storage, storage.bucket). A dry run gets the same findings as warnings.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.adapters import (
    RETRY,
    HubTarget,
    RetryPolicy,
    S3Config,
    call_hub,
    create_or_reuse_repo,
    hub_endpoint,
    is_offline,
    offline_error,
    require_keys,
    s3_client,
    s3_error,
    s3_failures,
)
from core.errors import HubAuthError, HubConflict, JobError, PublishError, SpecError, StorageError
from core.events import EventSink, LogLine, ignore_event
from core.settings import Settings
from core.spec import HubSpec, JobSpec, StorageSpec

if TYPE_CHECKING:
    from huggingface_hub import HfApi

PROBE_NAME = ".write-check"
"""The object a bucket check writes (and deletes) under the job's prefix."""


@dataclass(frozen=True)
class HubDestination:
    """The job's Hub repo and the token that writes to it (hub.token, else HF_TOKEN; None when neither is set)."""

    spec: HubSpec
    token: str | None = field(repr=False)
    endpoint: str

    @property
    def repo_id(self) -> str:
        return self.spec.repo_id


@dataclass(frozen=True)
class BucketDestination:
    """The job's bucket (storage.bucket, else BUCKET_NAME; None when neither is set) and the S3 settings to reach
    it."""

    spec: StorageSpec
    bucket: str | None
    s3: S3Config

    @property
    def prefix(self) -> str:
        return self.spec.prefix

    def require(self) -> str:
        """The bucket's name, once the keys are there too; else the StorageError that says what is missing."""
        require_keys(self.s3, family=StorageError, field="storage")
        if not self.bucket:
            raise StorageError("no bucket name: set storage.bucket in the job or BUCKET_NAME", field="storage.bucket")
        return self.bucket


@dataclass(frozen=True)
class Destinations:
    hub: HubDestination | None = None
    bucket: BucketDestination | None = None


def destinations_of(spec: JobSpec, settings: Settings) -> Destinations:
    """The job's destinations: its Hub repo with its token, its bucket with the S3 settings (module docstring)."""
    hub = spec.hub and HubDestination(spec.hub, token=settings.token(spec.hub.token), endpoint=hub_endpoint())
    return Destinations(hub=hub or None, bucket=bucket_of(spec.storage, settings) if spec.storage else None)


def bucket_of(storage: StorageSpec, settings: Settings) -> BucketDestination:
    """A job's `storage` as a destination: its bucket, else the endpoint's BUCKET_NAME, with the endpoint's keys."""
    return BucketDestination(storage, bucket=storage.bucket or settings.bucket_name, s3=settings.s3)


def endpoint_bucket(settings: Settings) -> BucketDestination | None:
    """The endpoint's own bucket (BUCKET_NAME with the BUCKET_* keys), where a job without a destination of its own
    (or one whose push failed) can still leave its outputs; None when the endpoint has none."""
    if not (settings.bucket_name and settings.s3.has_keys):
        return None
    return BucketDestination(StorageSpec(), bucket=settings.bucket_name, s3=settings.s3)


def ensure_repo(api: HfApi, hub: HubSpec) -> tuple[bool, bool]:
    """The one rule for a job's repo, for the check and for publishing: create it, or reuse the one there;
    (private, reused). Refuses to put a private job into a public repo (HubConflict, hub.private)."""
    private, reused = create_or_reuse_repo(api, hub.repo_id, private=hub.private)
    if reused and hub.private and not private:
        raise HubConflict(f"{hub.repo_id} already exists and is public, but this job asks for a private repo: "
                          "make it private on the Hub or set hub.private to false", field="hub.private")
    return private, reused


def require_destination(spec: JobSpec, settings: Settings) -> tuple[JobSpec, list[str]]:
    """Before any GPU minute, without the network: a training job's outputs must have somewhere to go, with the
    credentials to get there (the worker deletes a job's folder when it ends).

    A job without hub and storage uploads to the endpoint's bucket (BUCKET_* and BUCKET_NAME set) or is refused.
    A dry run trains nothing: the same problems become warnings. Raises SpecError listing every problem."""
    problems: list[dict[str, str]] = []
    found = destinations_of(spec, settings)
    missing = settings.missing_bucket_vars
    if found.hub and not found.hub.token:
        problems.append({"field": "hub.token", "message": "publishing to the Hub needs a token with the write role: "
                         "set hub.token in the job or HF_TOKEN on the endpoint"})
    if found.bucket and missing:
        problems.append({"field": "storage", "message": f"uploading needs {', '.join(missing)} on the endpoint"})
    elif found.bucket and not found.bucket.bucket:
        problems.append({"field": "storage.bucket", "message": "no bucket: set storage.bucket or BUCKET_NAME"})
    if not found.hub and not found.bucket:
        if not missing and (default := endpoint_bucket(settings)):
            spec = spec.model_copy(update={"storage": default.spec})
        else:
            problems.append({"field": "hub", "message": "say where the LoRA goes: hub.repo_id, or storage (with "
                             "BUCKET_ENDPOINT_URL, BUCKET_ACCESS_KEY_ID, BUCKET_SECRET_ACCESS_KEY on the endpoint); "
                             "this worker deletes a job's files when it ends"})
    if spec.dry_run or not problems:
        return spec, [f"{p['field']}: {p['message']}" for p in problems]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    raise SpecError(problems[0]["message"] + more, field=problems[0]["field"], errors=problems)


def check_destinations(spec: JobSpec, settings: Settings, *, create: bool = True,
                       on_event: EventSink = ignore_event, retry: RetryPolicy = RETRY) -> list[str]:
    """Check every destination the job names (destinations_of). A real job raises the first failure; a dry run
    (`spec.dry_run`) returns them as warnings ("field: message") and creates no repo."""
    found = destinations_of(spec, settings)
    checks = []
    if hub := found.hub:
        checks.append(lambda: check_hub(hub, create=create and not spec.dry_run, on_event=on_event, retry=retry))
    if bucket := found.bucket:
        checks.append(lambda: check_bucket(bucket, secrets=[settings.token()], on_event=on_event))
    warnings = []
    for check in checks:
        try:
            check()
        except JobError as error:
            if not spec.dry_run:
                raise
            warnings.append(f"{error.field}: {error.message}" if error.field else error.message)
    return warnings


def check_hub(destination: HubDestination, *, create: bool, on_event: EventSink = ignore_event,
              retry: RetryPolicy = RETRY) -> str:
    """The token may write to `hub.repo_id`'s namespace (and, with `create`, the repo exists afterwards); returns
    the user the token belongs to. Raises HubAuthError (hub.token), PublishError/HubAuthError (hub.repo_id) or
    HubConflict (hub.private)."""
    hub, token = destination.spec, destination.token
    if not token:
        raise HubAuthError("no Hugging Face token: set hub.token in the job or HF_TOKEN in the environment "
                           "(a token with the write role)", field="hub.token")
    target = HubTarget(hub.repo_id, family=PublishError, field="hub.repo_id", endpoint=destination.endpoint,
                       token=token, token_field="hub.token", write=True)  # noqa: S106 (a field name)
    if is_offline():
        raise offline_error(target, f"checking access to {hub.repo_id}")
    from huggingface_hub import HfApi

    api = HfApi(endpoint=target.endpoint, token=token)
    me = call_hub(lambda: api.whoami(), target=target, what="checking the token", retry=retry, on_event=on_event)
    user = str(me.get("name") or "")
    access = (me.get("auth") or {}).get("accessToken") or {}
    if access.get("role") == "read":
        raise HubAuthError(f"the token of '{user}' is read-only: publishing to {hub.repo_id} needs a token with "
                           "the write role (hub.token or HF_TOKEN)", field="hub.token")
    namespace = hub.repo_id.split("/")[0]
    orgs = [str(org.get("name")) for org in me.get("orgs") or [] if isinstance(org, Mapping)]
    if namespace not in (user, *orgs):
        mine = ", ".join([user, *orgs])
        raise HubAuthError(f"the token belongs to '{user}', who cannot write to the '{namespace}' namespace of "
                           f"{hub.repo_id}: use one of {mine}, or a token of '{namespace}'", field="hub.repo_id")
    if create:
        private, reused = call_hub(lambda: ensure_repo(api, hub), target=target, what="creating the repo",
                                   retry=retry, on_event=on_event)
        on_event(LogLine(f"{hub.repo_id}: {'exists' if reused else 'created'} "
                         f"({'private' if private else 'public'}); the token of '{user}' may write to it"))
    else:
        on_event(LogLine(f"the token of '{user}' may write to the '{namespace}' namespace"))
    return user


def check_bucket(destination: BucketDestination, *, secrets: list[str | None] | None = None,
                 on_event: EventSink = ignore_event) -> str:
    """The bucket exists and accepts (and lets us delete) a small object under the job's prefix; returns its name.
    Raises StorageError naming storage (keys) or storage.bucket."""
    bucket, config = destination.require(), destination.s3
    key = "/".join(part for part in (destination.prefix.strip("/"), f"{PROBE_NAME}-{uuid.uuid4().hex[:12]}") if part)
    try:
        client = s3_client(config)
        client.head_bucket(Bucket=bucket)
        client.put_object(Bucket=bucket, Key=key, Body=b"ok")
        client.delete_object(Bucket=bucket, Key=key)
    except s3_failures() as exc:
        raise s3_error(exc, family=StorageError, where=f"checking s3://{bucket}/", field="storage", config=config,
                       bucket=bucket, bucket_field="storage.bucket", secrets=secrets or []) from None
    on_event(LogLine(f"s3://{bucket}/ accepts uploads"))
    return bucket
