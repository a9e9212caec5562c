"""The Hugging Face Hub, in one place: its endpoint, the one retry policy for its passing failures, the one
translation of huggingface_hub's errors into the job's typed errors, and the rules for repo ids and repo paths.

Every stage that talks to the Hub (a dataset repo, resume, the base model, publishing) goes through here, so a
refused token reads the same and carries the same code (`hub_auth`) whichever stage met it; only the error's class,
and so its stage, differs: the caller says which (a `HubTarget`). docs/hub-and-s3.md lists the codes.

huggingface_hub is imported inside the functions: it reads HF_HUB_DISABLE_XET, HF_HUB_DISABLE_TELEMETRY and
HF_HUB_OFFLINE once, at import, so a process must set them first. The endpoint is read at call time.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from core.errors import ErrorCode, JobCancelled, JobError, exception_chain
from core.events import EventSink, LogLine, ignore_event
from core.secrets import mask_secret_values, redact
from core.settings import DEFAULT_HF_ENDPOINT, hub_endpoint

if TYPE_CHECKING:
    from huggingface_hub import HfApi

DEFAULT_ENDPOINT = DEFAULT_HF_ENDPOINT
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
"""Answers worth another try: the Hub or its storage is busy or briefly down."""
QUOTA_STATUS = frozenset({402, 413, 507})
QUOTA_WORDS = ("quota", "storage limit", "exceeded", "payment required", "upgrade your plan")
TOKEN_VARS = "hub.token or HF_TOKEN"  # noqa: S105 (where a token goes, not a token)

# The codes a Hub failure ends with, in every stage (the error's class says which stage); their meanings are
# core/errors.py's.
AUTH, NOT_FOUND, CONFLICT = ErrorCode.HUB_AUTH, ErrorCode.HUB_NOT_FOUND, ErrorCode.HUB_CONFLICT
QUOTA, UNAVAILABLE = ErrorCode.HUB_QUOTA, ErrorCode.HUB_UNAVAILABLE
OFFLINE, FAILED = ErrorCode.HUB_OFFLINE, ErrorCode.HUB_FAILED
CODES = {code: code.meaning for code in (AUTH, NOT_FOUND, CONFLICT, QUOTA, UNAVAILABLE, OFFLINE, FAILED)}


# -- repo ids and paths -------------------------------------------------------------------------------------------

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}\Z")
"""'namespace/name', each part at most 96 characters of letters, digits, '-', '_', '.'; not starting with one of
the last three (the Hub's own rule, with huggingface_hub's bans below)."""


def is_repo_id(value: str) -> bool:
    """A Hub repo id ('user-or-org/name') that the Hub accepts: no '..' or '--', no trailing '.git' or '.'."""
    return bool(REPO_ID.fullmatch(value)) and ".." not in value and "--" not in value \
        and not value.endswith((".git", "."))


def check_repo_id(value: str, *, family: type[JobError], field: str, kind: str = "model") -> str:
    """`value` when it is a repo id; else a `family` error naming `field`."""
    if not is_repo_id(value):
        raise family(f"'{value}' is not a {kind} repo id ('user-or-org/name': letters, digits, '-', '_', '.')",
                     field=field)
    return value


def repo_path(rel: str, *, family: type[JobError], field: str) -> str:
    """`rel` as a path inside a repo ('a/b.txt'); a `family` error naming `field` when it leaves the repo or names
    git's own folder."""
    parts = [part for part in rel.replace("\\", "/").split("/") if part not in ("", ".")]
    if not parts or ".." in parts or parts[0] == ".git":
        raise family(f"'{rel}' is not a path inside a repo", field=field)
    return "/".join(parts)


# -- retries ------------------------------------------------------------------------------------------------------


class CancelFlag(Protocol):
    """What a cancel flag needs to offer here: threading.Event's wait and is_set (core/cancel.py's Cancel, or a
    plain threading.Event)."""

    def wait(self, timeout: float | None = None) -> bool: ...

    def is_set(self) -> bool: ...


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a passing failure is tried again: `attempts` in all, waiting `backoff_s`, then
    twice that, and so on, up to `max_backoff_s` (defaults: 4 attempts, 2 + 4 + 8 s of waiting)."""

    attempts: int = 4
    backoff_s: float = 2.0
    max_backoff_s: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.backoff_s < 0:
            raise ValueError(f"a retry policy needs at least 1 attempt and no negative wait, got {self}")

    def delay(self, failed: int) -> float:
        """The wait after the `failed`-th failed attempt (1-based)."""
        return min(self.backoff_s * 2 ** (failed - 1), self.max_backoff_s)


RETRY = RetryPolicy()


@dataclass(frozen=True)
class HubTarget:
    """One stage's business with one repo: what its errors say and which class (stage) they have."""

    repo_id: str
    family: type[JobError]
    """The stage's error class: PublishError, ModelDownloadError, DownloadError, ResumeError."""
    field: str
    """The job field that named the repo."""
    endpoint: str = dataclasses.field(default_factory=hub_endpoint)
    repo_type: str = "model"
    token: str | None = dataclasses.field(default=None, repr=False)
    token_field: str | None = None
    """The field an auth error names (publish: hub.token); default `field`."""
    revision: str | None = None
    revision_field: str | None = None
    """The field a missing revision names; default `field`."""
    write: bool = False
    """Publishing: auth errors speak of the write role, not of licenses."""


def call_hub[T](call: Callable[[], T], *, target: HubTarget, what: str, retry: RetryPolicy = RETRY,
                cancel: CancelFlag | None = None, on_event: EventSink = ignore_event) -> T:
    """`call()`, tried again on a passing failure (408/429/5xx, a dropped connection, an HTML error page) as `retry`
    says; every other failure, or the last one, raised as the target's typed error. `what` ("creating the repo")
    goes into the messages. A set `cancel` stops it before an attempt or during a wait (a cancelled error)."""
    for attempt in range(1, retry.attempts + 1):
        if cancel is not None and cancel.is_set():
            raise stop_error(cancel, doing=f"while {what}", stage=target.family.stage)
        try:
            return call()
        except JobError:
            raise
        except Exception as exc:  # every client failure is classified here, then re-raised typed
            status, transient = classify(exc)
            if not transient or attempt == retry.attempts:
                raise hub_error(exc, target=target, what=what, attempts=attempt) from None
            wait = retry.delay(attempt)
            said = f"answered {status}" if status else "gave no usable answer"
            on_event(LogLine(f"the Hub {said} while {what}; retrying in {wait:.1f}s "
                             f"(attempt {attempt + 1} of {retry.attempts})", severity="warning"))
            if _waited_out(cancel, wait):
                raise stop_error(cancel, doing=f"while {what}", stage=target.family.stage) from None
    raise AssertionError("unreachable")


def _waited_out(cancel: CancelFlag | None, seconds: float) -> bool:
    """Wait `seconds`; True when `cancel` was set meanwhile (the wait ends at once then)."""
    if cancel is None:
        time.sleep(seconds)
        return False
    return bool(cancel.wait(seconds)) or cancel.is_set()


def stop_error(cancel: CancelFlag | None, *, doing: str, stage: str) -> JobError:
    """The error a set `cancel` ends the work with: its own when it has one (a Cancel tells a cancel from its
    deadline), else JobCancelled."""
    own = getattr(cancel, "error", None)
    return (own(doing, stage=stage) if callable(own) else None) or JobCancelled(f"cancelled {doing}", stage=stage)


# -- repo operations whose refusals are answers -------------------------------------------------------------------


def create_or_reuse_repo(api: HfApi, repo_id: str, *, private: bool, repo_type: str = "model") -> tuple[bool, bool]:
    """Create the repo, or reuse the one there (the Hub's 409): (whether it is private, whether it was reused).
    Any other refusal is raised as huggingface_hub's error, for `call_hub` to translate."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=False)
        return private, False
    except HfHubHTTPError as exc:
        if exc.response is None or exc.response.status_code != 409:
            raise
    return bool(api.repo_info(repo_id, repo_type=repo_type).private), True


def list_folder_or_empty(api: HfApi, repo_id: str, path: str) -> list:
    """The entries of folder `path` in a repo; [] when there is no such folder (the Hub's 404)."""
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

    try:
        return list(api.list_repo_tree(repo_id, path_in_repo=path))
    except EntryNotFoundError:
        return []
    except HfHubHTTPError as exc:
        if exc.response is not None and exc.response.status_code == 404:
            return []
        raise


# -- errors -------------------------------------------------------------------------------------------------------


def is_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub read it at import (tests lift it for the local server)."""
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def offline_error(target: HubTarget, what: str) -> JobError:
    return _typed(target, OFFLINE, f"cannot reach the Hub while {what}: HF_HUB_OFFLINE is set in this process; "
                                   "unset it to use the Hub", field=target.field)


def classify(exc: BaseException) -> tuple[int | None, bool]:
    """(HTTP status or None, worth another try) for the deepest Hub answer behind `exc`."""
    import httpx2  # huggingface_hub 2.4's HTTP client
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    chain = exception_chain(exc)
    if any(isinstance(cause, OfflineModeIsEnabled) for cause in chain):
        return None, False
    for cause in chain:
        if isinstance(cause, HfHubHTTPError) and cause.response is not None:
            status = cause.response.status_code
            return status, status in TRANSIENT_STATUS
    for cause in chain:
        if isinstance(cause, (httpx2.TransportError, ConnectionError, TimeoutError)):
            return None, True
        if isinstance(cause, json.JSONDecodeError):
            return None, True  # an HTML error page from a proxy in front of the Hub, read as JSON
        if isinstance(cause, LocalEntryNotFoundError):
            return None, True  # hf_hub_download's word for "the Hub did not answer and the cache has no copy"
    return None, False


def _hub_says(exc: BaseException) -> str:
    from huggingface_hub.errors import HfHubHTTPError

    for cause in exception_chain(exc):
        if isinstance(cause, HfHubHTTPError):
            if cause.server_message:
                return cause.server_message.strip()
            text = str(cause).strip()
            return text.splitlines()[0] if text else ""
    return str(exc).strip()


def hub_error(exc: BaseException, *, target: HubTarget, what: str, attempts: int = 1) -> JobError:  # noqa: C901 (one ordered branch per Hub answer; the order is the rule)
    """A huggingface_hub (or httpx) failure as the target's typed error: one of CODES, a message saying what failed
    and what to do, the Hub's own words; never the token."""
    from huggingface_hub.errors import (
        GatedRepoError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    def clean(text: str) -> str:
        text = mask_secret_values(redact(text, [target.token])).strip()
        text = text.splitlines()[0] if text else ""
        return text if len(text) < 300 else text[:300] + "..."

    chain = exception_chain(exc)
    if is_offline_failure(exc):
        return offline_error(target, what)
    status, transient = classify(exc)
    says = clean(_hub_says(exc)) or "no message"
    answer = f"({status}: {says})"
    repo, noun = target.repo_id, target.repo_type
    auth_field = target.token_field or target.field
    no_token = "" if target.token else " (no token was given)"
    access = f"accept the {noun}'s license on its Hub page and give a token with access: {TOKEN_VARS}"

    def first(kind: type) -> bool:
        return any(isinstance(cause, kind) for cause in chain)

    if first(GatedRepoError):
        return _typed(target, AUTH, f"{repo} is a gated {noun} {answer}: {access}{no_token}", field=auth_field)
    if first(RevisionNotFoundError):
        return _typed(target, NOT_FOUND, f"{repo} has no revision '{target.revision}' {answer}",
                      field=target.revision_field or target.field)
    if first(RepositoryNotFoundError) or (status == 404 and not first(RemoteEntryNotFoundError)):
        # The Hub answers 401 for a private repo asked without a token: huggingface_hub calls that not found too.
        private = "" if target.token else " (or private: give a token with access)"
        return _typed(target, NOT_FOUND, f"{noun} repo {repo} not found{private} while {what} {answer}",
                      field=target.field)
    if status == 401:
        if target.write:
            message = (f"the Hub rejected the token while {what} {answer}: {TOKEN_VARS} must be a valid Hugging "
                       "Face token with the write role")
        else:
            message = (f"the Hub refused {repo} while {what} {answer}: the token is not valid, or the {noun} is "
                       f"gated or private: {access}{no_token}")
        return _typed(target, AUTH, message, field=auth_field)
    if status in QUOTA_STATUS or (status in (400, 403) and any(word in says.lower() for word in QUOTA_WORDS)):
        return _typed(target, QUOTA, f"the Hub refused {what} for lack of quota {answer}", field=target.field)
    if status == 403:
        if target.write:
            message = (f"the token may not write to {repo} while {what} {answer}: it needs the write role and "
                       f"access to the '{repo.split('/')[0]}' namespace")
        else:
            message = f"the token has no access to {repo} while {what} {answer}: {access}"
        return _typed(target, AUTH, message, field=auth_field)
    if status == 404:
        return _typed(target, NOT_FOUND, f"{repo}: a file is missing while {what} {answer}", field=target.field)
    if status in (409, 412):
        return _typed(target, CONFLICT, f"conflict on {repo} while {what} {answer}", field=target.field)
    if status in TRANSIENT_STATUS:
        return _typed(target, UNAVAILABLE, f"the Hub kept failing while {what}: {status}: {says} "
                                           f"({attempts} attempts)", field=target.field)
    if status is not None:
        return _typed(target, FAILED, f"the Hub answered {status} while {what}: {says}", field=target.field)
    detail = clean(f"{type(exc).__name__}: {exc}")
    if transient:
        return _typed(target, UNAVAILABLE, f"cannot reach the Hub at {target.endpoint} while {what} "
                                           f"({attempts} attempts): {detail}", field=target.field)
    return _typed(target, FAILED, f"{what} failed: {detail}", field=target.field)


def is_offline_failure(exc: BaseException) -> bool:
    from huggingface_hub.errors import OfflineModeIsEnabled

    return any(isinstance(cause, OfflineModeIsEnabled) for cause in exception_chain(exc))


def _typed(target: HubTarget, code: ErrorCode, message: str, *, field: str) -> JobError:
    # A stage may have a class of its own for a code (publish: HubAuthError, ...), so `except HubAuthError` works.
    kind = next((sub for sub in target.family.__subclasses__() if sub.code == code), target.family)
    return kind(message, field=field, code=code)


HUB_MODEL_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def is_hub_model_id(name: str) -> bool:
    """A Hub repo id ('org/name' or a bare canonical name), not a local folder."""
    return bool(HUB_MODEL_ID.match(name)) and ".." not in name and not name.startswith(".")
