"""The training job, stage by stage: spec -> dataset -> preflight -> trainer config -> base model -> train -> publish.

Read `run_job` first: it is the whole product in one function. Every stage reports StageEvents to `on_event`
and raises a typed JobError (core/errors.py) that the faces turn into their own error shape.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.base_model import fetch_base_model
from core.dataset import stage_dataset
from core.errors import DatasetError, JobError, TrainingCancelled, TrainingError
from core.events import Event, EventSink, StageEvent, ignore_event
from core.jobdir import JobDir
from core.model_card import CardFacts
from core.preflight import preflight
from core.publish import publish_to_hub
from core.result import JobResult, Metrics
from core.resume import fetch_checkpoint
from core.settings import Settings
from core.spec import JobSpec
from core.storage import upload_outputs
from core.trainer import LORA_FILE, detect_device, train
from core.trainer_config import OWNED_FLAGS, build_trainer_files


def run_job(spec: JobSpec, workdir: Path, on_event: EventSink = ignore_event, *, settings: Settings | None = None,
            cancel: threading.Event | None = None, allow_local_paths: bool = True) -> JobResult:
    """Run one job in `workdir` (created; nothing is written outside it) and return its result."""
    settings = settings or Settings.from_env()
    report_only, on_event = on_event, _stopping_on_cancel(on_event, cancel)
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
        resumed_at = 0
        if spec.resume_from:
            checkpoint = fetch_checkpoint(spec.resume_from, job.output, settings=settings, on_event=on_event,
                                          token=hub_token(spec, settings))
            resumed_at = int(checkpoint.name.rsplit("-", 1)[-1])
        files = build_trainer_files(spec, images_dir=manifest.root, job=job, device=device,
                                    resume=bool(spec.resume_from))
    result = JobResult(status="dry_run", job_dir=job.root, preflight=report.to_dict(),
                       trainer_files=files.to_dict(), warnings=warnings + report.warnings)
    if spec.dry_run:
        return result

    with stage("model", on_event):
        fetch_base_model(spec, settings=settings, token=hub_token(spec, settings), on_event=on_event, cancel=cancel)
    try:
        with stage("train", on_event):
            outcome = train(files, job, settings=settings, device=device, gpu_count=gpu_count,
                            hf_token=hub_token(spec, settings) if settings.online else None,
                            on_event=on_event, cancel=cancel, timeout_s=spec.timeout_s, start_step=resumed_at)
    except TrainingError as error:
        # A cancelled run still publishes what it has when asked: its events must not stop it again.
        error.salvaged = salvage(spec, result, settings=settings, on_event=report_only)
        raise
    result.status = "succeeded"
    result.output_dir, result.lora_path, result.log_path = job.output, job.output / LORA_FILE, job.log
    result.checkpoints = outcome.checkpoints
    result.validation = [(Path(image.path).relative_to(job.output).as_posix(), image.prompt)
                         for image in outcome.validation_images]
    result.metrics = Metrics(steps=outcome.steps, total_steps=outcome.total_steps, loss=outcome.final_loss,
                             losses=outcome.losses, elapsed_s=outcome.elapsed_s)
    return publish(spec, result, settings=settings, on_event=on_event)


def publish(spec: JobSpec, result: JobResult, *, settings: Settings, on_event: EventSink = ignore_event) -> JobResult:
    """Push a finished run where the job asks: the Hub (hub) and/or a bucket (storage). Also the UI's
    "Push to Hub" button, after training."""
    token = hub_token(spec, settings)
    job = JobDir(result.job_dir)
    extra_files = {"training.log": job.log, "config/config.json": job.config / "config.json",
                   "config/multidatabackend.json": job.config / "multidatabackend.json"}
    extra_files = {name: path for name, path in extra_files.items() if path.is_file()}
    if spec.hub:
        with stage("publish", on_event):
            result.hub = publish_to_hub(result.output_dir, hub=spec.hub, token=token, on_event=on_event,
                                        facts=card_facts(spec, result), extra_files=extra_files).to_dict()
    if spec.storage:
        with stage("upload", on_event):
            result.storage = upload_outputs(result.output_dir, storage=spec.storage, job_id=job.root.name,
                                            env=os.environ, extra_files=extra_files, on_event=on_event,
                                            secrets=[token])
    return result


def salvage(spec: JobSpec, result: JobResult, *, settings: Settings, on_event: EventSink) -> dict | None:
    """A run cut short still yields something: with hub.on_failure, publish the latest checkpoint's LoRA."""
    checkpoints = sorted((p for p in JobDir(result.job_dir).output.glob("checkpoint-*") if (p / LORA_FILE).is_file()),
                         key=lambda p: int(p.name.rsplit("-", 1)[-1]) if p.name.rsplit("-", 1)[-1].isdigit() else -1)
    if not (spec.hub and spec.hub.on_failure and checkpoints):
        return None
    latest = checkpoints[-1]
    partial = JobResult(status="partial", job_dir=result.job_dir, output_dir=latest, lora_path=latest / LORA_FILE,
                        log_path=JobDir(result.job_dir).log, preflight=result.preflight,
                        trainer_files=result.trainer_files,
                        warnings=[f"published {latest.name}: training did not finish"])
    partial.metrics.steps = int(latest.name.rsplit("-", 1)[-1])
    try:
        return publish(spec.model_copy(update={"storage": None}), partial, settings=settings,
                       on_event=on_event).to_output()
    except JobError as error:
        return {"error": error.to_payload()}  # reported beside the training error, never as a success


def card_facts(spec: JobSpec, result: JobResult) -> CardFacts:
    return CardFacts(
        repo_id=spec.hub.repo_id if spec.hub else "", base_model=spec.base_model, model_family=spec.model_family,
        trigger_word=spec.trigger_word, steps=result.metrics.steps, final_loss=result.metrics.loss,
        elapsed_s=result.metrics.elapsed_s, dataset_size=result.preflight.get("images_usable"),
        config=result.trainer_files.get("config.json", {}),
        validation=[(path, prompt) for path, prompt in result.validation if prompt],  # not the unconditional ones
        license=spec.hub.license if spec.hub else None, tags=list(spec.hub.tags) if spec.hub else [],
    )


def hub_token(spec: JobSpec, settings: Settings) -> str | None:
    """The job's own token wins over the endpoint's HF_TOKEN."""
    if spec.hub and spec.hub.token:
        return spec.hub.token.get_secret_value()
    return settings.hf_token.get_secret_value() if settings.hf_token else None


@contextmanager
def stage(name: str, on_event: EventSink) -> Iterator[None]:
    """Report a stage's start and end; a failure is tagged with the stage it happened in."""
    try:
        on_event(StageEvent(stage=name, status="started"))
        yield
    except JobError as error:
        on_event(StageEvent(stage=name, status="failed", message=error.message))
        raise
    on_event(StageEvent(stage=name, status="completed"))


def _stopping_on_cancel(on_event: EventSink, cancel: threading.Event | None) -> EventSink:
    """Stop the job at its next event once cancelled, so a cancelled download never goes on to train. Only on the
    job's own thread: SimpleTuner's events arrive on the webhook receiver's, and train() stops it itself."""
    if cancel is None:
        return on_event
    job_thread = threading.get_ident()
    current = {"stage": "job"}

    def sink(event: Event) -> None:
        on_event(event)
        if isinstance(event, StageEvent):
            if event.status == "failed":
                return  # the stage is ending already
            current["stage"] = event.stage
        if cancel.is_set() and threading.get_ident() == job_thread:
            raise TrainingCancelled(f"cancelled during the {current['stage']} stage")

    return sink


def _owned_flag_warnings(spec: JobSpec) -> list[str]:
    return [f"config.{name}: ignored; this job keeps its files in its own directory"
            for name in OWNED_FLAGS if name in spec.config]
