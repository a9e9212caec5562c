"""A failed publish loses nothing: when the outputs could not go where the job asked (the Hub kept refusing the
commit through its retries), they go to the next place this job or endpoint has, and the error says exactly where.

The places, in order: one the job already reached (its `storage` upload, or the Hub when only the bucket failed),
the endpoint's bucket (BUCKET_NAME with the BUCKET_* keys), then a folder on the network volume
(VOLUME_DIR, default RUNPOD_VOLUME when a network volume is mounted there): `<volume>/kept-outputs/<job id>/`.
With none of them the error says the files are only in the job's folder on this machine, which the worker then keeps
(worker/handler.py).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from core.errors import JobError
from core.events import EventSink, JobWarning, LogLine, ignore_event
from core.outputs import FETCHED_MARKER, checkpoints
from core.publishing.bucket import output_files, upload_outputs
from core.publishing.destinations import endpoint_bucket
from core.result import JobResult
from core.settings import Settings

KEPT_FOLDER = "kept-outputs"


def keep_outputs(error: JobError, result: JobResult, *, settings: Settings,
                 extra_files: Mapping[str, Path], secrets: Sequence[str | None], on_event: EventSink = ignore_event,
                 ) -> JobError:
    """`error` (a failed publish), its message saying where the outputs are now and `salvaged` holding
    {"kept_at", "files"}; the outputs stored on the way when no destination of the job has them."""
    job_id = Path(result.job_dir).name
    kept: dict | None = None
    if result.storage:
        kept = {"kept_at": f"s3://{result.storage['bucket']}/{result.storage['prefix']}/",
                "files": result.storage["files"]}
    elif result.hub:
        kept = {"kept_at": result.hub["url"], "files": result.hub["files"]}
    elif (bucket := endpoint_bucket(settings)) and result.output_dir:
        try:
            stored = upload_outputs(result.output_dir, destination=bucket, job_id=job_id,
                                    extra_files=dict(extra_files), on_event=on_event, secrets=secrets)
            kept = {"kept_at": f"s3://{stored['bucket']}/{stored['prefix']}/", "files": stored["files"]}
        except JobError as failed:
            on_event(JobWarning(f"keeping the outputs in the endpoint's bucket failed too: {failed.message}",
                                field="storage"))
    if kept is None and settings.volume_dir and result.output_dir:
        kept = _to_volume(result.output_dir, settings.volume_dir / KEPT_FOLDER / job_id, extra_files, on_event)
    if kept is None:
        error.message += (f"; the outputs are only in the job's folder on this machine: {result.output_dir} "
                          "(kept, not deleted)")
        return error
    error.message += f"; nothing is lost: the outputs are in {kept['kept_at']}"
    error.salvaged = kept
    on_event(LogLine(f"outputs kept in {kept['kept_at']}"))
    return error


def _to_volume(output_dir: Path, target: Path, extra_files: Mapping[str, Path], on_event: EventSink) -> dict | None:
    try:
        files = output_files(output_dir, include_checkpoints=True, extra_files=extra_files)
        for rel, path in files.items():
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / rel)
    except (OSError, JobError) as failed:
        on_event(JobWarning(f"keeping the outputs on the volume at {target} failed: {failed}", field="VOLUME_DIR"))
        return None
    return {"kept_at": str(target), "files": {rel: str(target / rel) for rel in files}}


def outputs_stored(output_dir: Path, ended: JobResult | BaseException | None) -> bool:
    """Whether a job folder may be deleted: nothing was trained in it (no LoRA, no checkpoint), or what was trained
    is stored elsewhere (published, uploaded, kept by keep_outputs, a partial job's checkpoint uploaded)."""
    trained = any(output_dir.glob("*.safetensors")) or any(
        not (folder / FETCHED_MARKER).exists() for folder in checkpoints(output_dir))  # complete or not
    if not trained:
        return True
    if isinstance(ended, JobResult):
        return ended.status in ("succeeded", "dry_run") or bool(ended.resume_from)
    salvaged = getattr(ended, "salvaged", None)
    return isinstance(salvaged, dict) and ("kept_at" in salvaged or ("hub" in salvaged and "error" not in salvaged))
