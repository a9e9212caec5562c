"""S3-compatible storage, in one place: the client built from the environment, and the one translation of boto3's
failures into the job's typed errors. Datasets (s3:// URLs), resume (s3:// checkpoints) and the outputs upload all
use it, so a refused key reads the same and carries the same code (`s3_auth`) in every stage; the caller says which
stage (the error class). docs/hub-and-s3.md lists the variables and codes.

The settings (endpoint, keys, region) are core/settings.py's `S3Config`, read once with the rest of the environment
(`Settings.s3`): RunPod's BUCKET_* set wins over AWS_*; with no keys at all boto3's own chain (profile, instance
role) applies.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.errors import ErrorCode, JobError, exception_chain
from core.secrets import mask_secret_values, redact
from core.settings import DEFAULT_REGION, KEY_VARS, S3Config, region_of, s3_config

__all__ = ["CODES", "DEFAULT_REGION", "KEY_VARS", "S3Config", "region_of", "require_keys", "s3_client", "s3_config",
           "s3_error", "s3_failures"]


# The codes an S3 failure ends with, in every stage; their meanings are core/errors.py's.
AUTH, NO_BUCKET, NOT_FOUND = ErrorCode.S3_AUTH, ErrorCode.S3_NO_BUCKET, ErrorCode.S3_NOT_FOUND
UNAVAILABLE, FAILED = ErrorCode.S3_UNAVAILABLE, ErrorCode.S3_FAILED
CODES = {code: code.meaning for code in (AUTH, NO_BUCKET, NOT_FOUND, UNAVAILABLE, FAILED)}
ACCESS_CODES = frozenset({"403", "401", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                          "InvalidToken", "ExpiredToken", "AllAccessDisabled"})
MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
BUSY_CODES = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "503", "500"})


def s3_client(config: S3Config):
    """A boto3 S3 client for `config` (its own session: nothing global). boto3 retries 5xx, throttling and dropped
    connections itself (standard mode, 5 attempts)."""
    import boto3  # imported here: only jobs that touch S3 pay for it
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=config.endpoint_url,
        aws_access_key_id=config.access_key_id,
        aws_secret_access_key=config.secret_access_key,
        aws_session_token=config.session_token,
        region_name=config.region,
        config=Config(signature_version="s3v4", retries={"max_attempts": 5, "mode": "standard"}),
    )


def require_keys(config: S3Config, *, family: type[JobError], field: str) -> None:
    """Refuse, naming the variables, when `config` has no keys (an upload never falls back to a machine's role)."""
    if not config.has_keys:
        raise family(f"S3 needs {KEY_VARS} in the environment", field=field, code=AUTH)


def s3_failures(*also: type[BaseException]) -> tuple[type[BaseException], ...]:
    """The exception types boto3 and botocore raise for a failed request, `s3_error` translates each; plus `also`
    (`except s3_failures(OSError):`, a form type checkers follow, unlike `except (*s3_failures(), OSError)`)."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    return ClientError, BotoCoreError, Boto3Error, *also


def s3_error(exc: BaseException, *, family: type[JobError], where: str, field: str, config: S3Config,
             bucket: str | None = None, bucket_field: str | None = None,
             secrets: Sequence[str | None] = ()) -> JobError:
    """A boto3/botocore failure as a `family` error with one of CODES: `where` ("s3://bucket/key", "upload to
    s3://bucket/prefix/") starts the message, `field` names the job field (`bucket_field` for a missing bucket).
    Never carries the keys or `secrets`."""
    from botocore import exceptions as boto


    def clean(text: str) -> str:
        text = mask_secret_values(redact(text, [*config.secrets, *secrets])).strip()
        text = text.splitlines()[0] if text else ""
        return text if len(text) < 300 else text[:300] + "..."

    def typed(code: ErrorCode, problem: str, *, at: str = field) -> JobError:
        return family(clean(f"{where}: {problem}"), field=at, code=code)

    chain = exception_chain(exc)
    client_error = next((cause for cause in chain if isinstance(cause, boto.ClientError)), None)
    if client_error is not None:
        error = client_error.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = client_error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        said = f"{code or 'error'} ({status})" + (f": {error['Message']}" if error.get("Message") else "")
        if code == "NoSuchBucket" or (client_error.operation_name == "HeadBucket" and status == 404):
            name = f"'{bucket}'" if bucket else "the bucket"
            return typed(NO_BUCKET, f"no such bucket: {name} does not exist at {config.where}; create it first",
                         at=bucket_field or field)
        if status in (401, 403) or code in ACCESS_CODES:
            return typed(AUTH, f"access denied ({said}): check {KEY_VARS}")
        if status == 404 or code in MISSING_CODES:
            return typed(NOT_FOUND, "not found")
        if (status or 0) >= 500 or code in BUSY_CODES:
            return typed(UNAVAILABLE, f"{config.where} kept failing: {said}")
        return typed(FAILED, f"S3 error {said}")
    if any(isinstance(cause, (boto.NoCredentialsError, boto.PartialCredentialsError)) for cause in chain):
        return typed(AUTH, f"no S3 credentials: set {KEY_VARS}")
    unreachable = (boto.ConnectionError, boto.HTTPClientError, ConnectionError, TimeoutError)
    if any(isinstance(cause, unreachable) for cause in chain):
        return typed(UNAVAILABLE, f"cannot reach {config.where}: {type(exc).__name__}: {exc}")
    return typed(FAILED, f"{type(exc).__name__}: {exc}")
