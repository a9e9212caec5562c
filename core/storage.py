"""S3-compatible storage: upload a run's output folder to a bucket and hand back presigned download URLs.

Credentials follow runpod's rp_upload convention (BUCKET_ENDPOINT_URL, BUCKET_ACCESS_KEY_ID,
BUCKET_SECRET_ACCESS_KEY), read from the mapping the caller gives, never from os.environ behind its back.
Keys are `<prefix>/<job_id>/<relative path>`. Text files are scrubbed of secrets before they leave.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from core.errors import StorageError
from core.events import EventSink, JobWarning, LogLine, ignore_event
from core.secrets import redact, scrub_file
from core.spec import StorageSpec

CREDENTIAL_VARS = ("BUCKET_ENDPOINT_URL", "BUCKET_ACCESS_KEY_ID", "BUCKET_SECRET_ACCESS_KEY")
JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def upload_outputs(
    output_dir: Path,
    *,
    storage: StorageSpec,
    job_id: str,
    env: Mapping[str, str],
    extra_files: dict[str, Path] | None = None,
    on_event: EventSink = ignore_event,
    include_checkpoints: bool = True,
    secrets: Sequence[str | None] = (),
) -> dict:
    """Upload every file of `output_dir` (checkpoint folders only when asked) plus `extra_files` (repo-style
    relative path -> local file; they replace output files of the same path). Returns
    {"bucket", "prefix", "files": {relative path: presigned GET URL valid storage.expires_s}}.

    `secrets` are values to scrub from uploaded text files and error messages besides the bucket keys
    (the caller passes the HF token)."""
    missing = [name for name in CREDENTIAL_VARS if not env.get(name)]
    if missing:
        raise StorageError(f"S3 upload needs {', '.join(missing)} in the environment", field="storage")
    bucket = storage.bucket or env.get("BUCKET_NAME")
    if not bucket:
        raise StorageError("no bucket name: set storage.bucket in the job or BUCKET_NAME", field="storage.bucket")
    if not JOB_ID.match(job_id):
        raise StorageError(f"job id {job_id!r} cannot be part of an object key", field="job_id")
    known_secrets = [env.get("BUCKET_SECRET_ACCESS_KEY"), env.get("BUCKET_ACCESS_KEY_ID"), env.get("HF_TOKEN"),
                     *secrets]
    prefix = "/".join(part for part in (storage.prefix.strip("/"), job_id) if part)
    files = output_files(Path(output_dir), include_checkpoints=include_checkpoints, extra_files=extra_files or {})
    if not files:
        raise StorageError(f"nothing to upload: {output_dir} has no files", field="output_dir")

    # The pipeline reports the stage itself; these lines say what happens inside it.
    on_event(LogLine(f"uploading {len(files)} files to s3://{bucket}/{prefix}/"))
    try:
        client = _client(env)
        _check_bucket(client, bucket=bucket, endpoint=env["BUCKET_ENDPOINT_URL"])
        urls: dict[str, str] = {}
        for rel, path in files.items():
            key = f"{prefix}/{rel}"
            content_type = mimetypes.guess_type(rel)[0] or "application/octet-stream"
            scrubbed = scrub_file(path, known_secrets)
            if scrubbed is not None:
                on_event(JobWarning(f"{rel} contained a secret: the uploaded copy has it masked", field=rel))
                client.put_object(Bucket=bucket, Key=key, Body=scrubbed, ContentType=content_type)
            else:
                client.upload_file(str(path), bucket, key, ExtraArgs={"ContentType": content_type})
            urls[rel] = client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=storage.expires_s
            )
    except StorageError:
        raise  # already says what went wrong
    except Exception as exc:  # boto3/botocore raise many types; each one becomes a StorageError naming the bucket
        message = redact(f"upload to s3://{bucket}/{prefix}/ failed: {_describe(exc)}", known_secrets)
        raise StorageError(message, field="storage") from None
    on_event(LogLine(f"uploaded {len(urls)} files to s3://{bucket}/{prefix}/"))
    return {"bucket": bucket, "prefix": prefix, "files": urls}


def output_files(output_dir: Path, *, include_checkpoints: bool, extra_files: Mapping[str, Path]) -> dict[str, Path]:
    """relative path -> file: everything under output_dir (checkpoint-N/ only when asked), then extra_files."""
    files: dict[str, Path] = {}
    if output_dir.is_dir():
        for path in sorted(p for p in output_dir.rglob("*") if p.is_file()):
            rel = path.relative_to(output_dir).as_posix()
            if not include_checkpoints and rel.startswith("checkpoint-"):
                continue
            files[rel] = path
    for rel, path in extra_files.items():
        clean = _safe_relative(rel)
        if not Path(path).is_file():
            raise StorageError(f"extra file {path} for '{rel}' does not exist", field="extra_files")
        files[clean] = Path(path)
    return files


def _safe_relative(rel: str) -> str:
    parts = [part for part in rel.replace("\\", "/").split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        raise StorageError(f"'{rel}' is not a relative path inside the upload", field="extra_files")
    return "/".join(parts)


def _client(env: Mapping[str, str]):
    import boto3  # imported here: only jobs that upload pay for it
    from botocore.config import Config

    endpoint = env["BUCKET_ENDPOINT_URL"]
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=env["BUCKET_ACCESS_KEY_ID"],
        aws_secret_access_key=env["BUCKET_SECRET_ACCESS_KEY"],
        region_name=env.get("BUCKET_REGION") or _region_of(endpoint) or "us-east-1",
        config=Config(signature_version="s3v4", retries={"max_attempts": 5, "mode": "standard"}),
    )


def _region_of(endpoint: str) -> str | None:
    """The region in an AWS/Backblaze (`.s3.<region>.`) or DigitalOcean Spaces URL, as rp_upload reads it."""
    match = re.search(r"\.s3\.([a-z0-9-]+)\.", endpoint) or re.search(r"//([a-z0-9-]+)\.digitaloceanspaces\.com",
                                                                         endpoint)
    return match.group(1) if match else None


def _check_bucket(client, *, bucket: str, endpoint: str) -> None:
    from botocore.exceptions import ClientError

    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if status == 404 or code in {"404", "NoSuchBucket"}:
            raise StorageError(f"bucket '{bucket}' does not exist at {endpoint}: create it first",
                               field="storage.bucket") from None
        if status in (401, 403):
            raise StorageError(
                f"access to bucket '{bucket}' denied ({status}): check BUCKET_ACCESS_KEY_ID and "
                "BUCKET_SECRET_ACCESS_KEY", field="storage") from None
        raise


def _describe(exc: Exception) -> str:
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return f"{error.get('Code', 'error')} ({status}): {error.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"
