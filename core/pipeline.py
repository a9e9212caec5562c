"""The training job, stage by stage: spec -> dataset -> preflight -> trainer config -> train -> publish.

Read `run_job` first: it is the whole product in one function. Every stage reports StageEvents to `on_event`
and raises a typed JobError (core/errors.py) that the faces turn into their own error shape.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.dataset import stage_dataset
from core.errors import DatasetError, JobError
from core.events import EventSink, StageEvent, ignore_event
from core.jobdir import JobDir
from core.preflight import preflight
from core.result import JobResult, Metrics
from core.settings import Settings
from core.spec import JobSpec
from core.trainer import LORA_FILE, detect_device, train
from core.trainer_config import OWNED_FLAGS, build_trainer_files


def run_job(spec: JobSpec, workdir: Path, on_event: EventSink = ignore_event, *, settings: Settings | None = None,
            cancel: threading.Event | None = None, allow_local_paths: bool = True) -> JobResult:
    """Run one job in `workdir` (created; nothing is written outside it) and return its result."""
    settings = settings or Settings.from_env()
    job = JobDir(Path(workdir).absolute()).create()
    warnings = spec.warnings() + _owned_flag_warnings(spec)

    with stage("dataset", on_event):
        manifest = stage_dataset(spec, job.dataset, settings=settings, on_event=on_event,
                                 allow_local_paths=allow_local_paths)
    with stage("preflight", on_event):
        report = preflight(manifest, spec)
        if report.errors:
            raise DatasetError(report.errors[0], field="dataset")
    with stage("configure", on_event):
        device, gpu_count = detect_device(settings)
        files = build_trainer_files(spec, images_dir=manifest.root, job=job, device=device)
    result = JobResult(status="dry_run", job_dir=job.root, preflight=report.to_dict(),
                       trainer_files=files.to_dict(), warnings=warnings + report.warnings)
    if spec.dry_run:
        return result

    with stage("train", on_event):
        outcome = train(files, job, settings=settings, device=device, gpu_count=gpu_count,
                        hf_token=hub_token(spec, settings) if settings.online else None,
                        on_event=on_event, cancel=cancel, timeout_s=spec.timeout_s)
    result.status = "succeeded"
    result.output_dir, result.lora_path, result.log_path = job.output, job.output / LORA_FILE, job.log
    result.checkpoints = outcome.checkpoints
    result.metrics = Metrics(steps=outcome.steps, total_steps=outcome.total_steps, loss=outcome.final_loss,
                             losses=outcome.losses, elapsed_s=outcome.elapsed_s)
    return result


def hub_token(spec: JobSpec, settings: Settings) -> str | None:
    """The job's own token wins over the endpoint's HF_TOKEN."""
    if spec.hub and spec.hub.token:
        return spec.hub.token.get_secret_value()
    return settings.hf_token.get_secret_value() if settings.hf_token else None


@contextmanager
def stage(name: str, on_event: EventSink) -> Iterator[None]:
    """Report a stage's start and end; a failure is tagged with the stage it happened in."""
    on_event(StageEvent(stage=name, status="started"))
    try:
        yield
    except JobError as error:
        on_event(StageEvent(stage=name, status="failed", message=error.message))
        raise
    on_event(StageEvent(stage=name, status="completed"))


def _owned_flag_warnings(spec: JobSpec) -> list[str]:
    return [f"config.{name}: ignored; this job keeps its files in its own directory"
            for name in OWNED_FLAGS if name in spec.config]
