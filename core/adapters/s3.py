"""S3-compatible storage, in one place: the client built from the environment, and the one translation of boto3's
failures into the job's typed errors. Datasets (s3:// URLs), resume (s3:// checkpoints) and the outputs upload all
use it, so a refused key reads the same and carries the same code (`s3_auth`) in every stage; the caller says which
stage (the error class). docs/hub-and-s3.md lists the variables and codes.

Settings come from the mapping the caller gives (os.environ at the edge), never read behind its back: RunPod's
BUCKET_* set wins over AWS_*; with no keys at all boto3's own chain (profile, instance role) applies.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from core.errors import JobError, exception_chain
from core.secrets import mask_secret_values, redact

DEFAULT_REGION = "us-east-1"
KEY_VARS = "BUCKET_ACCESS_KEY_ID and BUCKET_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"

# The codes an S3 failure ends with, in every stage.
AUTH, NO_BUCKET, NOT_FOUND = "s3_auth", "s3_no_bucket", "s3_not_found"
UNAVAILABLE, FAILED = "s3_unavailable", "s3_failed"
CODES = {
    AUTH: "no keys, or keys the endpoint refuses (401/403, AccessDenied, InvalidAccessKeyId, SignatureDoesNotMatch)",
    NO_BUCKET: "the bucket does not exist at that endpoint",
    NOT_FOUND: "no object under that key",
    UNAVAILABLE: "the endpoint cannot be reached, or kept answering 5xx through boto3's retries",
    FAILED: "any other answer",
}
ACCESS_CODES = frozenset({"403", "401", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                          "InvalidToken", "ExpiredToken", "AllAccessDisabled"})
MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
BUSY_CODES = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "503", "500"})


@dataclass(frozen=True)
class S3Config:
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str = DEFAULT_REGION

    @property
    def has_keys(self) -> bool:
        return bool(self.access_key_id and self.secret_access_key)

    @property
    def secrets(self) -> list[str | None]:
        """Values no message may carry."""
        return [self.secret_access_key, self.session_token, self.access_key_id]

    @property
    def where(self) -> str:
        return self.endpoint_url or "AWS S3"


def s3_config(env: Mapping[str, str]) -> S3Config:
    """S3 settings from the environment: endpoint BUCKET_ENDPOINT_URL (else AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL),
    keys BUCKET_ACCESS_KEY_ID / BUCKET_SECRET_ACCESS_KEY (AWS_* ones first when no BUCKET_ENDPOINT_URL is set),
    AWS_SESSION_TOKEN, region BUCKET_REGION, else the one in the endpoint's host name (AWS, Backblaze, DigitalOcean
    Spaces, as runpod's rp_upload reads it), else AWS_REGION / AWS_DEFAULT_REGION, else us-east-1."""
    def get(*names: str) -> str | None:
        for name in names:
            value = (env.get(name) or "").strip()
            if value:
                return value
        return None

    if get("BUCKET_ENDPOINT_URL"):
        key_names = ("BUCKET_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID")
        secret_names = ("BUCKET_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY")
    else:
        key_names = ("AWS_ACCESS_KEY_ID", "BUCKET_ACCESS_KEY_ID")
        secret_names = ("AWS_SECRET_ACCESS_KEY", "BUCKET_SECRET_ACCESS_KEY")
    endpoint = get("BUCKET_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
    return S3Config(
        endpoint_url=endpoint,
        access_key_id=get(*key_names),
        secret_access_key=get(*secret_names),
        session_token=get("AWS_SESSION_TOKEN"),
        region=get("BUCKET_REGION") or region_of(endpoint or "") or get("AWS_REGION", "AWS_DEFAULT_REGION")
        or DEFAULT_REGION,
    )


def region_of(endpoint: str) -> str | None:
    """The region in an AWS/Backblaze (`s3.<region>.`) or DigitalOcean Spaces URL; None for any other."""
    match = re.search(r"[./]s3\.(?!amazonaws\.)([a-z0-9-]+)\.", endpoint) or re.search(
        r"//([a-z0-9-]+)\.digitaloceanspaces\.com", endpoint)
    return match.group(1) if match else None


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

    def typed(code: str, problem: str, *, at: str = field) -> JobError:
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
