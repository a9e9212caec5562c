"""The destination, checked before any GPU minute: a job whose token the Hub refuses, or whose bucket does not
exist, must fail before its dataset and base model are fetched, not after hours of training.

- Hub (`hub`): the token is valid (the Hub's whoami), may write (a read-only token is refused), and its user or one
  of its orgs owns the repo's namespace; then the repo is created (or reused: the same rules as publishing), so a
  refused namespace or a public repo for a private job is said now. A dry run creates nothing.
- Bucket (`storage`): the keys are set, the bucket exists and accepts a small object, deleted at once.

A failure is the stage's typed error with core/adapters/hub.py's or core/adapters/s3.py's code, naming the field
(hub.token,
hub.repo_id, hub.private, storage, storage.bucket); the pipeline runs this as its `validate` stage. A dry run gets
the same findings as warnings.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from core.adapters import (
    RETRY,
    HubTarget,
    RetryPolicy,
    call_hub,
    hub_endpoint,
    is_offline,
    offline_error,
    require_keys,
    s3_client,
    s3_config,
    s3_error,
    s3_failures,
)
from core.errors import HubAuthError, JobError, PublishError, StorageError
from core.events import EventSink, LogLine, ignore_event
from core.publishing.hub_repo import _ensure_repo  # the one rule for creating or reusing a repo
from core.spec import HubSpec, JobSpec, StorageSpec

PROBE_NAME = ".write-check"
"""The object a bucket check writes (and deletes) under the job's prefix."""


def check_destinations(spec: JobSpec, *, token: str | None, env: Mapping[str, str], create: bool = True,
                       on_event: EventSink = ignore_event, retry: RetryPolicy = RETRY) -> list[str]:
    """Check every destination the job names. A real job raises the first failure; a dry run (`spec.dry_run`)
    returns them as warnings ("field: message") and creates no repo."""
    checks = []
    if hub := spec.hub:
        checks.append(lambda: check_hub(hub, token=token, create=create and not spec.dry_run,
                                        on_event=on_event, retry=retry))
    if storage := spec.storage:
        checks.append(lambda: check_bucket(storage, env=env, on_event=on_event))
    warnings = []
    for check in checks:
        try:
            check()
        except JobError as error:
            if not spec.dry_run:
                raise
            warnings.append(f"{error.field}: {error.message}" if error.field else error.message)
    return warnings


def check_hub(hub: HubSpec, *, token: str | None, create: bool, on_event: EventSink = ignore_event,
              retry: RetryPolicy = RETRY) -> str:
    """The token may write to `hub.repo_id`'s namespace (and, with `create`, the repo exists afterwards); returns
    the user the token belongs to. Raises HubAuthError (hub.token), PublishError/HubAuthError (hub.repo_id) or
    HubConflict (hub.private)."""
    if not token:
        raise HubAuthError("no Hugging Face token: set hub.token in the job or HF_TOKEN in the environment "
                           "(a token with the write role)", field="hub.token")
    target = HubTarget(hub.repo_id, family=PublishError, field="hub.repo_id", endpoint=hub_endpoint(), token=token,
                       token_field="hub.token", write=True)  # noqa: S106 (a field name)
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
        private, reused = call_hub(lambda: _ensure_repo(api, hub), target=target, what="creating the repo",
                                   retry=retry, on_event=on_event)
        on_event(LogLine(f"{hub.repo_id}: {'exists' if reused else 'created'} "
                         f"({'private' if private else 'public'}); the token of '{user}' may write to it"))
    else:
        on_event(LogLine(f"the token of '{user}' may write to the '{namespace}' namespace"))
    return user


def check_bucket(storage: StorageSpec, *, env: Mapping[str, str], on_event: EventSink = ignore_event) -> str:
    """The bucket exists and accepts (and lets us delete) a small object under the job's prefix; returns its name.
    Raises StorageError naming storage (keys) or storage.bucket."""
    config = s3_config(env)
    require_keys(config, family=StorageError, field="storage")
    bucket = storage.bucket or env.get("BUCKET_NAME")
    if not bucket:
        raise StorageError("no bucket name: set storage.bucket in the job or BUCKET_NAME", field="storage.bucket")
    key = "/".join(part for part in (storage.prefix.strip("/"), f"{PROBE_NAME}-{uuid.uuid4().hex[:12]}") if part)
    try:
        client = s3_client(config)
        client.head_bucket(Bucket=bucket)
        client.put_object(Bucket=bucket, Key=key, Body=b"ok")
        client.delete_object(Bucket=bucket, Key=key)
    except s3_failures() as exc:
        raise s3_error(exc, family=StorageError, where=f"checking s3://{bucket}/", field="storage", config=config,
                       bucket=bucket, bucket_field="storage.bucket", secrets=[env.get("HF_TOKEN")]) from None
    on_event(LogLine(f"s3://{bucket}/ accepts uploads"))
    return bucket
