"""The training job, stage by stage: spec -> dataset -> preflight -> (resume) -> trainer config -> base model -> train
-> publish.

Read `run_job` first: it is the whole product in one function. Every stage reports StageEvents to `on_event` and
raises a typed JobError (core/errors.py), tagged with the stage it came through, that the faces turn into their own
error shape. One Cancel (core/cancel.py) carries the user's cancel and the job's deadline (timeout_s, for the whole
job) into every stage: each one stops within seconds.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.base_model import fetch_base_model
from core.cancel import Cancel
from core.dataset import caption_options, stage_dataset
from core.errors import JobCancelled, JobError, JobTimeout, PreflightError, TrainingError
from core.events import Event, EventSink, StageEvent, ignore_event
from core.jobdir import JobDir
from core.lora_files import add_lora_files
from core.model_card import CardFacts
from core.model_license import base_model_license
from core.preflight import preflight
from core.publish import publish_to_hub
from core.result import JobResult, Metrics
from core.resume import fetch_checkpoint
from core.secrets import job_secrets
from core.settings import Settings
from core.spec import JobSpec
from core.storage import upload_outputs
from core.trainer import LORA_FILE, TrainingOutcome, detect_device, train
from core.trainer_config import OWNED_FLAGS, build_trainer_files


def run_job(spec: JobSpec, workdir: Path, on_event: EventSink = ignore_event, *, settings: Settings | None = None,
            cancel: Cancel | threading.Event | None = None, allow_local_paths: bool = True) -> JobResult:
    """Run one job in `workdir` (created; nothing is written outside it) and return its result. `cancel`'s set()
    stops it in any stage; so does the end of spec.timeout_s, counted from now (training gets what is left)."""
    settings = settings or Settings.from_env()
    cancel = Cancel.of(cancel, timeout_s=spec.timeout_s)
    report_only, on_event = on_event, _stopping_on_cancel(on_event, cancel)
    job = JobDir(Path(workdir).absolute()).create()
    token = hub_token(spec, settings)

    with stage("dataset", on_event, cancel):
        manifest = stage_dataset(spec.dataset, job.dataset, captions=caption_options(spec), token=token,
                                 settings=settings, cancel=cancel, on_event=on_event,
                                 allow_local_paths=allow_local_paths)
    with stage("preflight", on_event, cancel):
        report = preflight(manifest, spec)
        if report.errors:
            raise PreflightError(report.errors[0], report=report.to_dict())
    resumed_at = 0
    if spec.resume_from:
        with stage("resume", on_event, cancel):
            checkpoint = fetch_checkpoint(spec.resume_from, job.output, settings=settings, on_event=on_event,
                                          token=token, cancel=cancel)
            resumed_at = int(checkpoint.name.rsplit("-", 1)[-1])
    with stage("configure", on_event, cancel):
        device, gpu_count = detect_device(settings)
        files = build_trainer_files(spec, images_dir=manifest.root, job=job, device=device,
                                    resume=bool(spec.resume_from))
    result = JobResult(status="dry_run", job_dir=job.root, preflight=report.to_dict(), trainer_files=files.to_dict(),
                       warnings=spec.warnings() + _owned_flag_warnings(spec) + report.warnings)
    if spec.dry_run:
        return result

    with stage("model", on_event, cancel):
        fetch_base_model(spec, settings=settings, token=token, on_event=on_event, cancel=cancel)
    try:
        with stage("train", on_event, cancel):
            outcome = train(files, job, settings=settings, device=device, gpu_count=gpu_count,
                            hf_token=token if settings.online else None, on_event=on_event, cancel=cancel,
                            start_step=resumed_at)
    except (TrainingError, JobCancelled, JobTimeout) as error:
        # A run cut short still publishes what it has when asked: its events must not stop it again.
        error.salvaged = salvage(spec, result, settings=settings, on_event=report_only)
        raise
    return publish(spec, _trained(result, outcome, job), settings=settings, on_event=on_event, cancel=cancel)


def check_job(spec: JobSpec, workdir: Path, on_event: EventSink = ignore_event, *, settings: Settings | None = None,
              cancel: Cancel | threading.Event | None = None, allow_local_paths: bool = True) -> JobResult:
    """The job up to the base model, as a dry run: the dataset staged and checked (a PreflightError carries the
    whole report), a checkpoint to resume from fetched, SimpleTuner's files resolved; nothing trained. The command
    line's `check`, the worker's dry run and the UI's *Check dataset*."""
    return run_job(spec.model_copy(update={"dry_run": True}), workdir, on_event, settings=settings, cancel=cancel,
                   allow_local_paths=allow_local_paths)


def _trained(result: JobResult, outcome: TrainingOutcome, job: JobDir) -> JobResult:
    """The dry-run result of a job filled in with what its training made."""
    result.status = "succeeded"
    result.output_dir, result.lora_path, result.log_path = job.output, job.output / LORA_FILE, job.log
    result.checkpoints = outcome.checkpoints
    result.validation = [(Path(image.path).relative_to(job.output).as_posix(), image.prompt)
                         for image in outcome.validation_images]
    result.metrics = Metrics(steps=outcome.steps, total_steps=outcome.total_steps, loss=outcome.final_loss,
                             losses=outcome.losses, elapsed_s=outcome.elapsed_s)
    return result


def publish(spec: JobSpec, result: JobResult, *, settings: Settings, on_event: EventSink = ignore_event,
            cancel: Cancel | None = None) -> JobResult:
    """Push a finished run where the job asks: the Hub (hub) and/or a bucket (storage). Also the UI's
    "Push to Hub" button, after training. `cancel` is looked at before each destination."""
    # The ComfyUI-format file beside the diffusers one, named after the repo; a failure is only a warning.
    add_lora_files(spec, result, settings=settings, on_event=on_event)
    token = hub_token(spec, settings)
    job = JobDir(result.job_dir)
    extra_files = {"training.log": job.log, "config/config.json": job.config / "config.json",
                   "config/multidatabackend.json": job.config / "multidatabackend.json"}
    extra_files = {name: path for name, path in extra_files.items() if path.is_file()}
    if spec.hub:
        with stage("publish", on_event, cancel):
            result.hub = publish_to_hub(result.output_dir, hub=spec.hub, token=token, on_event=on_event,
                                        facts=card_facts(spec, result, settings=settings),
                                        extra_files=extra_files).to_dict()
    if spec.storage:
        with stage("upload", on_event, cancel):
            result.storage = upload_outputs(result.output_dir, storage=spec.storage, job_id=job.root.name,
                                            env=os.environ, extra_files=extra_files, on_event=on_event,
                                            secrets=job_secrets(spec, env=os.environ, settings=settings))
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


def card_facts(spec: JobSpec, result: JobResult, *, settings: Settings | None = None) -> CardFacts:
    hf_home = settings.hf_home if settings else None
    base_license = base_model_license(base_model=spec.base_model, model_family=spec.model_family,
                                 chosen=spec.hub.license if spec.hub else None,
                                 hf_cache=Path(hf_home) / "hub" if hf_home else None)
    return CardFacts(
        repo_id=spec.hub.repo_id if spec.hub else "", base_model=spec.base_model, model_family=spec.model_family,
        trigger_word=spec.trigger_word, steps=result.metrics.steps, final_loss=result.metrics.loss,
        elapsed_s=result.metrics.elapsed_s, dataset_size=result.preflight.get("images_usable"),
        config=result.trainer_files.get("config.json", {}),
        validation=[(path, prompt) for path, prompt in result.validation if prompt],  # not the unconditional ones
        tags=list(spec.hub.tags) if spec.hub else [], **(base_license.card_fields() if base_license else {}),
        comfyui_file=result.comfyui_path.name if result.comfyui_path else None, comfyui_note=result.comfyui_note,
    )


def hub_token(spec: JobSpec, settings: Settings) -> str | None:
    """The job's own token wins over the endpoint's HF_TOKEN."""
    if spec.hub and spec.hub.token:
        return spec.hub.token.get_secret_value()
    return settings.hf_token.get_secret_value() if settings.hf_token else None


@contextmanager
def stage(name: str, on_event: EventSink, cancel: Cancel | None = None) -> Iterator[None]:
    """Report a stage's start and end; a cancelled job stops as the stage starts. A JobError that comes through is
    tagged with this stage, so an error always names the stage that was running."""
    try:
        on_event(StageEvent(stage=name, status="started"))
        if cancel is not None:
            cancel.check(f"before the {name} stage")
        yield
    except JobError as error:
        error.stage = name
        on_event(StageEvent(stage=name, status="failed", message=error.message))
        raise
    on_event(StageEvent(stage=name, status="completed"))


def _stopping_on_cancel(on_event: EventSink, cancel: Cancel) -> EventSink:
    """Stop the job at its next progress event once cancelled: the sources that take no Cancel of their own (a Hub
    dataset, an s3:// download, a checkpoint to resume from) report progress as they go. Only on the job's own thread
    (SimpleTuner's events arrive on the webhook receiver's, and train() stops it itself); stage events are left to
    `stage()`."""
    job_thread = threading.get_ident()

    def sink(event: Event) -> None:
        on_event(event)
        if not isinstance(event, StageEvent) and threading.get_ident() == job_thread:
            cancel.check()

    return sink


def _owned_flag_warnings(spec: JobSpec) -> list[str]:
    return [f"config.{name}: ignored; this job keeps its files in its own directory"
            for name in OWNED_FLAGS if name in spec.config]
