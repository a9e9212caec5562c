"""S3-compatible storage: upload a run's output folder to a bucket and hand back presigned download URLs.

The bucket and its S3 settings are the job's destination (core/publishing/destinations.py `destinations_of`); the
client and the typed errors are core/adapters/s3.py's. Keys are `<prefix>/<job_id>/<relative path>`. Text files are
scrubbed of secrets before they leave. A cancel (or the job's deadline) stops the upload between files and, through
boto3's byte callback, between the chunks of a file.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from core.adapters import CancelFlag, s3_client, s3_error, s3_failures, stop_error
from core.errors import StorageError
from core.events import EventSink, JobWarning, LogLine, ignore_event
from core.outputs import checkpoint_step
from core.publishing.destinations import BucketDestination
from core.secrets import scrub_file

JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def upload_outputs(
    output_dir: Path,
    *,
    destination: BucketDestination,
    job_id: str,
    extra_files: dict[str, Path] | None = None,
    on_event: EventSink = ignore_event,
    include_checkpoints: bool = True,
    secrets: Sequence[str | None] = (),
    cancel: CancelFlag | None = None,
) -> dict:
    """Upload every file of `output_dir` (checkpoint folders only when asked) plus `extra_files` (repo-style
    relative path -> local file; they replace output files of the same path) to `destination` (destinations_of).
    Returns {"bucket", "prefix", "files": {relative path: presigned GET URL valid storage.expires_s}}.

    `secrets` are values to scrub from uploaded text files and error messages besides the bucket keys
    (the caller passes the HF tokens: job_secrets). Failures are StorageErrors with core/adapters/s3.py's codes; a
    set `cancel` raises the job's stop error (cancelled / timeout) at the next file or chunk."""
    bucket, config, storage = destination.require(), destination.s3, destination.spec
    if not JOB_ID.match(job_id):
        raise StorageError(f"job id {job_id!r} cannot be part of an object key", field="job_id")
    known_secrets = [*config.secrets, *secrets]
    prefix = "/".join(part for part in (storage.prefix.strip("/"), job_id) if part)
    files = output_files(Path(output_dir), include_checkpoints=include_checkpoints, extra_files=extra_files or {})
    if not files:
        raise StorageError(f"nothing to upload: {output_dir} has no files", field="output_dir")

    # The pipeline reports the stage itself; these lines say what happens inside it.
    on_event(LogLine(f"uploading {len(files)} files to s3://{bucket}/{prefix}/"))

    def check(_sent: int = 0) -> None:
        if cancel is not None and cancel.is_set():
            raise stop_error(cancel, doing=f"while uploading to s3://{bucket}/{prefix}/", stage=StorageError.stage)

    try:
        client = s3_client(config)
        client.head_bucket(Bucket=bucket)  # a missing bucket or refused keys, said before any upload
        urls: dict[str, str] = {}
        for rel, path in files.items():
            check()
            key = f"{prefix}/{rel}"
            content_type = mimetypes.guess_type(rel)[0] or "application/octet-stream"
            scrubbed = scrub_file(path, known_secrets)
            if scrubbed is not None:
                on_event(JobWarning(f"{rel} contained a secret: the uploaded copy has it masked", field=rel))
                client.put_object(Bucket=bucket, Key=key, Body=scrubbed, ContentType=content_type)
            else:
                client.upload_file(str(path), bucket, key, ExtraArgs={"ContentType": content_type}, Callback=check)
            urls[rel] = client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=storage.expires_s
            )
    except s3_failures(OSError) as exc:  # OSError: a file that cannot be read, said the same way
        raise s3_error(exc, family=StorageError, where=f"upload to s3://{bucket}/{prefix}/", field="storage",
                       config=config, bucket=bucket, bucket_field="storage.bucket", secrets=known_secrets) from None
    on_event(LogLine(f"uploaded {len(urls)} files to s3://{bucket}/{prefix}/"))
    return {"bucket": bucket, "prefix": prefix, "files": urls}


TRAINER_CACHE_DIR = "cache"
"""The folder SimpleTuner keeps its working files in under an output folder (output/cache/conditioning_data/: the
first frames of an image-to-video run's clips): not an output, so never uploaded (the Hub commit leaves it out too)."""


def output_files(output_dir: Path, *, include_checkpoints: bool, extra_files: Mapping[str, Path]) -> dict[str, Path]:
    """relative path -> file: everything under output_dir (checkpoint-N/ only when asked), then extra_files."""
    files: dict[str, Path] = {}
    if output_dir.is_dir():
        for path in sorted(p for p in output_dir.rglob("*") if p.is_file()):
            rel = path.relative_to(output_dir).as_posix()
            # checkpoint-N/ at the top, or in an expert's folder (high_noise/checkpoint-N/)
            if not include_checkpoints and any(checkpoint_step(part) is not None for part in rel.split("/")[:2]):
                continue
            if TRAINER_CACHE_DIR in rel.split("/")[:2]:  # SimpleTuner's working cache (an I2V run's first frames)
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
