"""The training job, stage by stage: validate (destinations, GPU plan) -> dataset (the base model downloads alongside)
-> (caption) -> preflight -> (resume) -> configure -> model -> train -> publish / upload.

Read `run_job` first: it is the whole product in one function. Every stage reports StageEvents to `on_event` and
raises a typed JobError (core/errors.py), tagged with the stage it came through, that the faces turn into their own
error shape. One Cancel (core/cancel.py) carries the user's cancel and the job's deadline (timeout_s, for the whole
job) into every stage: each one stops within seconds.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.adapters import plan_device
from core.cache import JobReuse
from core.cancel import Cancel
from core.dataset import caption_options
from core.errors import JobCancelled, JobError, JobTimeout, PreflightError, PublishError, TrainingError
from core.events import Event, EventSink, JobWarning, StageEvent, ignore_event
from core.generation import caption_stage, end_samples
from core.jobdir import JobDir
from core.models import ModelFetch, check_local_models
from core.outputs import PIPELINE_DIR, checkpoint_step, latest_checkpoint, lora_file
from core.publishing import (
    CardFacts,
    CheckpointUploads,
    add_lora_files,
    base_model_license,
    check_destinations,
    destinations_of,
    fallback_destinations,
    keep_outputs,
    publish_to_hub,
    upload_outputs,
)
from core.result import JobResult, Metrics
from core.secrets import job_secrets
from core.settings import Settings
from core.simpletuner import FULL, kind_of, trained_component
from core.spec import JobSpec
from core.training import (
    AUTO,
    OWNED_FLAGS,
    DeadlineStop,
    TrainingOutcome,
    auto_sources,
    build_trainer_files,
    choose_sample_pairs,
    copy_local_checkpoint,
    ends_partial,
    fetch_checkpoint,
    fetch_latest_checkpoint,
    gpu_plan,
    gpu_report,
    is_local,
    preflight,
    published_view,
    resolved_defaults,
    sample_input_image,
    train,
    with_pair_prompts,
    world_size,
    write_sample_dataset,
)


def run_job(spec: JobSpec, workdir: Path, on_event: EventSink = ignore_event, *, settings: Settings,
            cancel: Cancel | threading.Event | None = None, allow_local_paths: bool = True) -> JobResult:
    """Run one job in `workdir` (created; nothing is written outside it) and return its result. `cancel`'s set()
    stops it in any stage; so does the end of spec.timeout_s, counted from now (training gets what is left).
    `settings` is the environment, read by the face (Settings.from_env): nothing here reads the process's own."""
    cancel = Cancel.of(cancel, timeout_s=spec.timeout_s)
    job = JobDir(Path(workdir).absolute()).create()
    token = hub_token(spec, settings)
    reuse = JobReuse.for_job(spec, settings=settings)  # what earlier jobs on this volume staged or computed
    model = ModelFetch(spec, settings=settings, token=token, on_event=reuse.watching(on_event), cancel=cancel)
    report_only, on_event = model.report, _stopping_on_cancel(model.report, cancel)
    with stage("validate", on_event, cancel):  # before any download or GPU minute: the outputs can go somewhere
        check_local_models(spec, settings, any_folder=allow_local_paths)
        destination_warnings = check_destinations(spec, settings, on_event=on_event)
        device, gpu = plan_device(settings, dry_run=spec.dry_run, processes=spec.num_processes)
        processes = world_size(device=device, gpu_count=gpu.count, processes=spec.num_processes)
        plan = gpu_plan(spec, device=device, gpu=gpu, system_memory_gb=settings.system_memory_gb,
                        hub_cache=settings.hub_cache)  # a job the GPU cannot hold stops here, naming what fits

    model.start()  # the base model and the caption model download while the dataset stages
    with stage("dataset", on_event, cancel):
        manifest = reuse.stage_dataset(spec.source, job.dataset, captions=caption_options(spec), token=token,
                                       settings=settings, cancel=cancel, on_event=on_event,
                                       allow_local_paths=allow_local_paths)
    captioned = None  # before preflight: it checks the captions the training will read
    if spec.captioning:
        with stage("caption", on_event, cancel):
            captioned = caption_stage(spec, manifest, job=job, settings=settings, token=token, on_event=on_event,
                                      cancel=cancel, model_ready=model.wait_caption_model)
    with stage("preflight", on_event, cancel):
        # An edit job's samples edit pairs of its dataset: held back from training (samples.hold_out) or not.
        manifest, pairs = choose_sample_pairs(spec, manifest, job=job)
        spec = with_pair_prompts(spec, pairs)
        report = preflight(manifest, spec, defaults=resolved_defaults(spec, plan=plan), processes=processes,
                           on_event=on_event)
        if report.errors:
            raise PreflightError(report.errors[0], report=report.to_dict())
    resumed_at, checkpoint = 0, None
    if spec.resume_from:
        with stage("resume", on_event, cancel):
            checkpoint = resume_checkpoint(spec, job, settings=settings, token=token, on_event=on_event,
                                           cancel=cancel, allow_local_paths=allow_local_paths)
            resumed_at = (checkpoint_step(checkpoint) or 0) if checkpoint else 0
    with stage("configure", on_event, cancel):
        sample_image = sample_input_image(spec, manifest, job=job, settings=settings, cancel=cancel)
        files = build_trainer_files(spec, images_dir=manifest.root, job=job, device=device, gpu=gpu,
                                    system_memory_gb=settings.system_memory_gb, hub_cache=settings.hub_cache,
                                    resume=checkpoint is not None, clips_dir=manifest.clips_root,
                                    stills=bool(manifest.images), sample_image=sample_image,
                                    inputs_dirs=manifest.pairs.folders if manifest.pairs else None,
                                    sample_dataset=write_sample_dataset(pairs, spec.samples.prompts if spec.samples
                                                                       else [], job=job), processes=processes)
        report.gpu = gpu_report(plan, gpu, total_steps=report.total_steps, resolution=report.resolution,
                                price_per_hour=settings.gpu_price_per_hour)
    result = JobResult(status="dry_run", job_dir=job.root, preflight=report.to_dict(), trainer_files=files.to_dict(),
                       captioning=captioned,
                       warnings=spec.warnings() + _owned_flag_warnings(spec) + report.warnings + destination_warnings
                       + files.warnings)
    for warning in files.warnings:
        on_event(JobWarning(warning, field="samples"))
    if spec.dry_run:
        result.cache = reuse.finish(trained=False)
        return result

    with stage("model", on_event, cancel):
        model.wait()
    reuse.restore(spec, files.backends, manifest, settings=settings, on_event=report_only)
    # Checkpoints go to the job's destination as they are written; near the deadline training stops at one.
    uploads = CheckpointUploads.for_job(spec, settings, job=job, on_event=report_only)
    guard = DeadlineStop(cancel, margin_s=settings.deadline_margin_s, on_event=report_only)
    try:
        with stage("train", on_event, cancel), uploads:
            outcome = train(files, job, settings=settings, device=device, gpu=gpu, processes=processes,
                            hf_token=token if settings.online else None, on_event=uploads.watching(
                                guard.watching(on_event)), cancel=guard, start_step=resumed_at)
    except (TrainingError, JobCancelled, JobTimeout) as error:
        if ends_partial(spec, deadline=guard.fired, cancelled=isinstance(error, JobCancelled), job=job):
            return stopped_early(spec, result, job, uploads, settings=settings, on_event=report_only,
                                 why="before the time limit" if guard.fired else "by a cancel")
        # A run cut short still publishes what it has when asked: its events must not stop it again.
        error.salvaged = salvage(spec, result, settings=settings, on_event=report_only)
        raise
    result = _trained(result, outcome, job)
    result.samples = end_samples(spec, result, settings=settings, on_event=report_only)  # the last step's too
    result.uploaded_checkpoints = [done.to_dict() for done in uploads.uploaded]
    result.cache = reuse.finish(trained=True, on_event=report_only)  # keeps what missed, says what was reused
    return publish(spec, result, settings=settings, on_event=on_event, cancel=cancel)


def resume_checkpoint(spec: JobSpec, job: JobDir, *, settings: Settings, token: str | None, on_event: EventSink,
                      cancel: Cancel, allow_local_paths: bool = False) -> Path | None:
    """The checkpoint resume_from names, in the job's output folder; for "auto" the latest at the job's own
    destination, or None (a fresh start) when there is none yet. A local folder (the UI's Resume) only where
    local paths are allowed, and only under DATA_DIR."""
    if spec.resume_from is None:
        return None
    if allow_local_paths and is_local(spec.resume_from):
        return copy_local_checkpoint(spec.resume_from, job.output, root=settings.data_root, on_event=on_event)
    if spec.resume_from != AUTO:
        return fetch_checkpoint(spec.resume_from, job.output, settings=settings, on_event=on_event, token=token,
                                cancel=cancel)
    where = destinations_of(spec, settings)
    sources = auto_sources(hub_repo=where.hub.repo_id if where.hub else None,
                           bucket=where.bucket.bucket if where.bucket else None,
                           prefix=where.bucket.prefix if where.bucket else "")
    return fetch_latest_checkpoint(sources, job.output, settings=settings, on_event=on_event, token=token,
                                   cancel=cancel)


def stopped_early(spec: JobSpec, result: JobResult, job: JobDir, uploads: CheckpointUploads, *, settings: Settings,
                  on_event: EventSink, why: str = "before the time limit") -> JobResult:
    """Training stopped early (core/training/deadline.py's rule: the deadline, or a cancel of a job that keeps its
    checkpoints): its latest checkpoint at the job's destination, and a `partial` result whose resume_from
    continues it."""
    latest = latest_checkpoint(job.output, complete=True)  # resumable: what resume_from continues
    if latest is None:
        raise JobTimeout(f"stopped before the time limit (timeout_s={spec.timeout_s}) with no checkpoint written yet: "
                         "raise timeout_s or lower config.checkpointing_steps", stage="train")
    done = uploads.ensure(latest, uploads.destinations or fallback_destinations(spec, settings, on_event=on_event))
    step = checkpoint_step(latest) or 0
    result.status, result.output_dir, result.log_path = "partial", latest, job.log
    result.lora_path = lora_file(latest) if lora_file(latest).is_file() else None
    result.metrics = Metrics(steps=step, total_steps=result.metrics.total_steps)
    result.uploaded_checkpoints = [u.to_dict() for u in uploads.uploaded]
    result.resume_from = done.resume_from if done else None
    result.warnings.append(f"training stopped at step {step} {why}: send resume_from "
                           f"{result.resume_from!r} (or \"auto\") to continue" if done else
                           f"training stopped at step {step} {why}; {latest.name} could not be "
                           "uploaded, it is only in the job's folder")
    return result


def check_job(spec: JobSpec, workdir: Path, on_event: EventSink = ignore_event, *, settings: Settings,
              cancel: Cancel | threading.Event | None = None, allow_local_paths: bool = True) -> JobResult:
    """The job up to the base model, as a dry run: the dataset staged and checked (a PreflightError carries the
    whole report), a checkpoint to resume from fetched, SimpleTuner's files resolved; nothing trained. The command
    line's `check`, the worker's dry run and the UI's *Check dataset*."""
    return run_job(spec.model_copy(update={"dry_run": True}), workdir, on_event, settings=settings, cancel=cancel,
                   allow_local_paths=allow_local_paths)


def _trained(result: JobResult, outcome: TrainingOutcome, job: JobDir) -> JobResult:
    """The dry-run result of a job filled in with what its training made."""
    result.status = "succeeded"
    result.output_dir, result.log_path = job.output, job.log
    result.kind = kind_of(result.trainer_files.get("config.json", {}))
    if result.kind == FULL:  # a diffusers folder, no LoRA file
        result.model_dir = job.output / PIPELINE_DIR
    else:
        result.lora_path = lora_file(job.output)
    result.checkpoints = outcome.checkpoints
    result.validation = [(Path(image.path).relative_to(job.output).as_posix(), image.prompt)
                         for image in outcome.validation_images]
    result.metrics = Metrics(steps=outcome.steps, total_steps=outcome.total_steps, loss=outcome.final_loss,
                             losses=outcome.losses, elapsed_s=outcome.elapsed_s)
    return result


def publish(spec: JobSpec, result: JobResult, *, settings: Settings, on_event: EventSink = ignore_event,
            cancel: Cancel | None = None) -> JobResult:
    """Push a finished run where the job asks: the Hub (hub) and/or a bucket (storage). Also the UI's
    "Push to Hub" button, after training. `cancel` stops each destination between files and Hub calls."""
    # The checkpoint hub.checkpoint picks, and the sample images that go up with it.
    result, sample_files = published_view(spec, result, root=JobDir(result.job_dir).output)
    # The ComfyUI-format file beside the diffusers one, named after the repo; a failure is only a warning.
    add_lora_files(spec, result, settings=settings, on_event=on_event)
    where = destinations_of(spec, settings)
    secrets = job_secrets(spec, settings=settings)
    job = JobDir(result.job_dir)
    output_dir = result.output_dir or job.output  # a trained result names it (a picked checkpoint's folder, or this)
    extra_files = {"training.log": job.log, "config/config.json": job.config / "config.json",
                   "config/multidatabackend.json": job.config / "multidatabackend.json"}
    extra_files = {name: path for name, path in extra_files.items() if path.is_file()} | sample_files
    failed: PublishError | None = None  # a destination that failed: the outputs then go to the next one
    if where.hub:
        try:
            with stage("publish", on_event, cancel):
                result.hub = publish_to_hub(output_dir, destination=where.hub, on_event=on_event,
                                            facts=card_facts(spec, result, settings=settings),
                                            extra_files=extra_files, cancel=cancel).to_dict()
        except PublishError as error:
            failed = error
    if where.bucket:
        try:
            with stage("upload", on_event, cancel):
                result.storage = upload_outputs(output_dir, destination=where.bucket, job_id=job.root.name,
                                                extra_files=extra_files, on_event=on_event, secrets=secrets,
                                                cancel=cancel)
        except PublishError as error:
            failed = failed or error
    if failed is not None:
        raise keep_outputs(failed, result, settings=settings, extra_files=extra_files, secrets=secrets,
                           on_event=on_event)
    return result


def salvage(spec: JobSpec, result: JobResult, *, settings: Settings, on_event: EventSink) -> dict | None:
    """A run cut short still yields something: with hub.on_failure, publish the latest checkpoint's LoRA."""
    # Publishable, complete or not: SimpleTuner writes the LoRA before the training state.
    latest = latest_checkpoint(JobDir(result.job_dir).output, complete=False, with_lora=True)
    if not (spec.hub and spec.hub.on_failure and latest is not None):
        return None
    partial = JobResult(status="partial", job_dir=result.job_dir, output_dir=latest, lora_path=lora_file(latest),
                        log_path=JobDir(result.job_dir).log, preflight=result.preflight,
                        trainer_files=result.trainer_files,
                        warnings=[f"published {latest.name}: training did not finish"])
    partial.metrics.steps = checkpoint_step(latest) or 0
    try:
        return publish(spec.model_copy(update={"storage": None}), partial, settings=settings,
                       on_event=on_event).to_output()
    except JobError as error:
        return {"error": error.to_payload()}  # reported beside the training error, never as a success


def card_facts(spec: JobSpec, result: JobResult, *, settings: Settings) -> CardFacts:
    base_license = base_model_license(base_model=spec.base_model, model_family=spec.model_family,
                                      chosen=spec.hub.license if spec.hub else None,
                                      hf_cache=settings.hub_cache)
    clips = result.preflight.get("clips") or {}
    return CardFacts(
        repo_id=spec.hub.repo_id if spec.hub else "", base_model=spec.base_model, model_family=spec.model_family,
        trigger_word=spec.trigger_word, steps=result.metrics.steps, final_loss=result.metrics.loss,
        elapsed_s=result.metrics.elapsed_s, dataset_size=result.preflight.get("images_usable"),
        config=result.trainer_files.get("config.json", {}),
        validation=[(path, prompt) for path, prompt in result.validation if prompt],  # not the unconditional ones
        tags=list(spec.hub.tags) if spec.hub else [], **(base_license.card_fields() if base_license else {}),
        comfyui_file=result.comfyui_path.name if result.comfyui_path else None, comfyui_note=result.comfyui_note,
        kind=result.kind, lycoris=spec.config.get("lycoris_config"),
        full_component=trained_component(result.model_dir) if result.model_dir else None,
        dataset_clips=int(clips.get("clips_usable") or 0), dataset_frames=int(clips.get("total_frames") or 0),
    )


def hub_token(spec: JobSpec, settings: Settings) -> str | None:
    """The job's Hub token (Settings.token): its own hub.token wins over the endpoint's HF_TOKEN."""
    return settings.token(spec.hub.token if spec.hub else None)


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
    """Stop the job at its next progress event once cancelled: a second net under the stages' own Cancel checks, for
    any library call that reports progress but cannot be interrupted itself. Only on the job's own thread
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
