"""The training job, stage by stage: validate (destinations, GPU plan) -> dataset (the base model downloads alongside)
-> (caption) -> (reg_images) -> preflight -> (resume) -> configure -> model -> train -> publish / upload.

Read `run_job` first: it is the whole product in one function. Every stage reports StageEvents to `on_event` and
raises a typed JobError (core/errors.py), tagged with the stage it came through, that the faces turn into their own
error shape. One Cancel (core/cancel.py) carries the user's cancel and the job's deadline (timeout_s, for the whole
job) into every stage: each one stops within seconds.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from core.adapters import GpuFacts, plan_device
from core.cache import JobReuse
from core.cancel import Cancel
from core.dataset import Manifest, caption_options, concepts_of
from core.errors import JobCancelled, JobError, JobTimeout, PreflightError, PublishError, TrainingError
from core.events import Event, EventSink, ExpertStarted, JobWarning, StageEvent, ignore_event
from core.generation import caption_stage, end_samples, render_reg_images
from core.jobdir import JobDir
from core.models import ModelFetch, check_local_models
from core.outputs import PIPELINE_DIR, checkpoint_step, latest_checkpoint, lora_file
from core.publishing import (
    CardExpert,
    CardFacts,
    CheckpointUploads,
    JobWebhook,
    add_lora_files,
    base_model_license,
    card_pairs,
    check_destinations,
    checkpoint_folder,
    destinations_of,
    fallback_destinations,
    keep_outputs,
    publish_to_hub,
    upload_outputs,
)
from core.result import ExpertResult, JobResult, Metrics
from core.secrets import job_secrets
from core.settings import Settings
from core.simpletuner import FULL, Expert, kind_of, trained_component
from core.spec import JobSpec, prompt_text
from core.training import (
    AUTO,
    OWNED_FLAGS,
    RUNS_DIR,
    DeadlineStop,
    SampleDataset,
    TrainerFiles,
    TrainingControl,
    TrainingOutcome,
    apply_goal,
    auto_sources,
    build_trainer_files,
    choose_sample_pairs,
    copy_local_checkpoint,
    ends_partial,
    fetch_checkpoint,
    fetch_finished_lora,
    fetch_latest_checkpoint,
    gpu_plan,
    gpu_report,
    is_local,
    plan_goal,
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
            cancel: Cancel | threading.Event | None = None, allow_local_paths: bool = True,
            control: TrainingControl | None = None) -> JobResult:
    """Run one job in `workdir` (created; nothing is written outside it) and return its result. `cancel`'s set()
    stops it in any stage; so does the end of spec.timeout_s, counted from now (training gets what is left).
    `settings` is the environment, read by the face (Settings.from_env): nothing here reads the process's own.
    `control`: asks the running training for a checkpoint or samples now (core/training/control.py).
    A training job with a webhook (its own, or the endpoint's) tells it what happens, signed
    (core/publishing/webhook.py); its result counts the deliveries."""
    try:
        hooks = None if spec.dry_run else JobWebhook.for_job(spec, settings, job_id=Path(workdir).name,
                                                             secrets=job_secrets(spec, settings=settings))
    except JobError as error:  # checked before anything else runs: part of the validate stage
        error.stage = "validate"
        on_event(StageEvent(stage="validate", status="failed", message=error.message))
        raise
    if hooks is None:
        return _run_job(spec, workdir, on_event, settings=settings, cancel=cancel,
                        allow_local_paths=allow_local_paths, control=control)
    hooks.started(spec)
    try:
        result = _run_job(spec, workdir, hooks.watching(on_event), settings=settings, cancel=cancel,
                          allow_local_paths=allow_local_paths, control=control)
    except BaseException as error:
        hooks.failed(error)
        hooks.close()
        raise
    hooks.finished(result)
    result.webhook = hooks.close()
    return result


def _run_job(spec: JobSpec, workdir: Path, on_event: EventSink, *, settings: Settings,
             cancel: Cancel | threading.Event | None, allow_local_paths: bool,
             control: TrainingControl | None) -> JobResult:
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
    if spec.source.reg_generate:  # class images the base model renders (or the cache has), for the preflight to count
        with stage("reg_images", on_event, cancel):
            manifest = render_reg_images(spec, manifest, job=job, plan=plan, settings=settings, on_event=on_event,
                                         cancel=cancel, model_ready=model.wait)
    with stage("preflight", on_event, cancel):
        # An edit job's samples edit pairs of its dataset: held back from training (samples.hold_out) or not.
        manifest, pairs = choose_sample_pairs(spec, manifest, job=job)
        spec = with_pair_prompts(spec, pairs)
        goal = plan_goal(spec, manifest)  # steps follow the staged dataset's size; the job's own values win
        spec = apply_goal(spec, goal)
        report = preflight(manifest, spec, defaults=resolved_defaults(spec, plan=plan), processes=processes,
                           on_event=on_event, goal=goal)
        if report.errors:
            raise PreflightError(report.errors[0], report=report.to_dict())
        sample_dataset = write_sample_dataset(pairs, [prompt_text(item) for item in spec.samples.prompts]
                                              if spec.samples else [], job=job)  # shared by the runs
    # One SimpleTuner run, or one per expert of a two-expert model (each its own output; dataset and caches shared).
    runs = [_prepare_run(run_spec, run_dir, manifest=manifest, settings=settings, token=token, device=device,
                         gpu=gpu, on_event=on_event, cancel=cancel, allow_local_paths=allow_local_paths,
                         record_finished=len(spec.expert_runs) > 1, sample_dataset=sample_dataset,
                         processes=processes)
            for run_spec, run_dir in _runs(spec, job)]
    files = runs[0].files
    report.gpu = gpu_report(plan, gpu, total_steps=report.total_steps, resolution=report.resolution,
                            price_per_hour=settings.gpu_price_per_hour, experts=len(runs))
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
    guard = DeadlineStop(cancel, margin_s=settings.deadline_margin_s, on_event=report_only)  # near it: stop at one
    outcomes: list[TrainingOutcome] = []
    uploaded: list[dict] = []  # the checkpoints that reached a destination while training, every run's
    for index, run in enumerate(runs, start=1):
        if run.expert is not None and len(runs) > 1:
            on_event(ExpertStarted(index=index, count=len(runs), name=run.expert.name, label=run.expert.label,
                                   finished_at=run.finished_at))
        if run.finished_at is not None:  # trained by an earlier job: its LoRA was fetched
            outcomes.append(TrainingOutcome(steps=run.finished_at, total_steps=run.finished_at))
            continue
        # Checkpoints go to the job's destination as they are written.
        uploads = CheckpointUploads.for_job(run.spec, settings, job=run.job, on_event=report_only)
        try:
            with stage("train", on_event, cancel), uploads:
                outcomes.append(train(run.files, run.job, settings=settings, device=device, gpu=gpu,
                                      processes=processes, hf_token=token if settings.online else None,
                                      on_event=uploads.watching(guard.watching(on_event)), cancel=guard,
                                      start_step=run.resumed_at, control=control))
                if run.record_finished:
                    uploads.record_finished(step=outcomes[-1].steps)
            uploaded += [done.to_dict() for done in uploads.uploaded]
        except (TrainingError, JobCancelled, JobTimeout) as error:
            if ends_partial(spec, deadline=guard.fired, cancelled=isinstance(error, JobCancelled), job=run.job):
                return stopped_early(run.spec, result, run.job, uploads, settings=settings, on_event=report_only,
                                     why="before the time limit" if guard.fired else "by a cancel",
                                     auto=len(runs) > 1)
            # A run cut short still publishes what it has when asked: its events must not stop it again.
            error.salvaged = salvage(spec, result, settings=settings, on_event=report_only, output=run.job.output)
            raise
    result = _trained(result, outcomes, job, experts=[run.expert for run in runs if run.expert is not None])
    # The last step's samples too; a two-expert model's are each expert's SimpleTuner validation, in its folder.
    result.samples = [] if result.experts else end_samples(spec, result, settings=settings, on_event=report_only)
    result.uploaded_checkpoints = uploaded
    result.cache = reuse.finish(trained=True, on_event=report_only)  # keeps what missed, says what was reused
    return publish(spec, result, settings=settings, on_event=on_event, cancel=cancel)


@dataclass
class PreparedRun:
    """One SimpleTuner run of a job, configured: the whole job, or one expert of a two-expert model."""

    spec: JobSpec
    job: JobDir
    files: TrainerFiles
    expert: Expert | None = None
    resumed_at: int = 0
    """The step of the checkpoint it continues; 0 for a fresh start."""
    finished_at: int | None = None
    """An expert an earlier job finished (resume_from "auto"): its step; it is not trained again."""
    record_finished: bool = False
    """An expert of a job training both: its finished LoRA goes beside its checkpoints for "auto" to find."""


def _runs(spec: JobSpec, job: JobDir) -> list[tuple[JobSpec, JobDir]]:
    """The job's SimpleTuner runs: itself, or each expert it trains, in order, with its own folders."""
    if not spec.expert_runs:
        return [(spec, job)]
    return [(spec.for_expert(expert), job.for_expert(expert.folder).create()) for expert in spec.expert_runs]


def _prepare_run(spec: JobSpec, job: JobDir, *, manifest: Manifest, settings: Settings, token: str | None,
                 device: str, gpu: GpuFacts, on_event: EventSink, cancel: Cancel, allow_local_paths: bool,
                 record_finished: bool, sample_dataset: SampleDataset | None, processes: int) -> PreparedRun:
    """The resume and configure stages of one run: its checkpoint (or, for a finished expert, its LoRA) fetched,
    SimpleTuner's files resolved."""
    expert = spec.expert_runs[0] if spec.expert_runs else None
    run = PreparedRun(spec=spec, job=job, files=None, expert=expert,  # type: ignore[arg-type]  # set below
                      record_finished=record_finished)
    checkpoint = None
    if spec.resume_from:
        with stage("resume", on_event, cancel):
            if record_finished and spec.resume_from == AUTO:
                run.finished_at = finished_expert(spec, job, settings=settings, token=token, on_event=on_event,
                                                  cancel=cancel)
            if run.finished_at is None:
                checkpoint = resume_checkpoint(spec, job, settings=settings, token=token, on_event=on_event,
                                               cancel=cancel, allow_local_paths=allow_local_paths)
                run.resumed_at = (checkpoint_step(checkpoint) or 0) if checkpoint else 0
    with stage("configure", on_event, cancel):
        sample_image = sample_input_image(spec, manifest, job=job, settings=settings, cancel=cancel)
        run.files = build_trainer_files(spec, images_dir=manifest.root, job=job, device=device, gpu=gpu,
                                        system_memory_gb=settings.system_memory_gb, hub_cache=settings.hub_cache,
                                        resume=checkpoint is not None, clips_dir=manifest.clips_root,
                                        stills=bool(manifest.images), sample_image=sample_image,
                                        inputs_dirs=manifest.pairs.folders if manifest.pairs else None,
                                        sample_dataset=sample_dataset, processes=processes,
                                        concepts=concepts_of(manifest, repeats=spec.source.repeats)
                                        if not isinstance(spec.dataloader, list) else None,
                                        subsets=manifest.subsets,
                                        wandb=settings.wandb_api_key is not None)
    return run


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
    return fetch_latest_checkpoint(_auto_sources(spec, settings), job.output, settings=settings, on_event=on_event,
                                   token=token, cancel=cancel)


def finished_expert(spec: JobSpec, job: JobDir, *, settings: Settings, token: str | None, on_event: EventSink,
                    cancel: Cancel) -> int | None:
    """For resume_from "auto" in a job training both experts: the step an earlier job finished this expert at
    (its LoRA fetched into its output folder), or None when it still has to train."""
    return fetch_finished_lora(_auto_sources(spec, settings), job.output, settings=settings, on_event=on_event,
                               token=token, cancel=cancel)


def _auto_sources(spec: JobSpec, settings: Settings) -> list[str]:
    """Where "auto" looks: the job's own Hub repo and bucket; an expert's own checkpoint folder in them."""
    where = destinations_of(spec, settings)
    return auto_sources(hub_repo=where.hub.repo_id if where.hub else None,
                        bucket=where.bucket.bucket if where.bucket else None,
                        prefix=where.bucket.prefix if where.bucket else "",
                        folder=checkpoint_folder(spec) if spec.experts else "")


def stopped_early(spec: JobSpec, result: JobResult, job: JobDir, uploads: CheckpointUploads, *, settings: Settings,
                  on_event: EventSink, why: str = "before the time limit", auto: bool = False) -> JobResult:
    """Training stopped early (core/training/deadline.py's rule: the deadline, or a cancel of a job that keeps its
    checkpoints): its latest checkpoint at the job's destination, and a `partial` result whose resume_from
    continues it (`auto`: "auto", the one a job training both experts takes)."""
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
    result.resume_from = (AUTO if auto else done.resume_from) if done else None
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


def _trained(result: JobResult, outcomes: list[TrainingOutcome], job: JobDir, *,
             experts: list[Expert]) -> JobResult:
    """The dry-run result of a job filled in with what its training made: one run's, or each expert's (each in
    its own folder of the output)."""
    result.status = "succeeded"
    result.output_dir, result.log_path = job.output, job.log
    result.kind = kind_of(result.trainer_files.get("config.json", {}))
    folders = [job.output / expert.folder for expert in experts] or [job.output]
    if result.kind == FULL:  # a diffusers folder, no LoRA file
        result.model_dir = job.output / PIPELINE_DIR
    else:
        result.lora_path = lora_file(folders[0])
    result.checkpoints = [path for outcome in outcomes for path in outcome.checkpoints]
    result.validation = [(Path(image.path).relative_to(job.output).as_posix(), image.prompt)
                         for outcome in outcomes for image in outcome.validation_images]
    losses = [loss for outcome in outcomes for loss in outcome.losses]
    result.metrics = Metrics(steps=sum(o.steps for o in outcomes), total_steps=sum(o.total_steps or 0 for o in outcomes)
                             or None, loss=losses[-1] if losses else None, losses=losses,
                             elapsed_s=sum(o.elapsed_s for o in outcomes),
                             eval_losses=[item for outcome in outcomes for item in outcome.eval_losses])
    result.experts = [ExpertResult(name=expert.name, folder=expert.folder, lora_path=lora_file(folder),
                                   steps=outcome.steps, loss=outcome.final_loss, trained=bool(outcome.losses))
                      for expert, folder, outcome in zip(experts, folders, outcomes, strict=True)] if experts else []
    return result


def publish(spec: JobSpec, result: JobResult, *, settings: Settings, on_event: EventSink = ignore_event,
            cancel: Cancel | None = None) -> JobResult:
    """Push a finished run where the job asks: the Hub (hub) and/or a bucket (storage). Also the UI's
    "Push to Hub" button, after training. `cancel` stops each destination between files and Hub calls."""
    # The checkpoint hub.checkpoint picks, and the sample images that go up with it.
    result, sample_files = published_view(spec, result, root=JobDir(result.job_dir).output)
    # The ComfyUI-format file beside the diffusers one, named after the repo; a failure is only a warning.
    on_event(StageEvent(stage="comfyui", status="started"))
    add_lora_files(spec, result, settings=settings, on_event=on_event)
    on_event(StageEvent(stage="comfyui", status="completed"))
    where = destinations_of(spec, settings)
    secrets = job_secrets(spec, settings=settings)
    job = JobDir(result.job_dir)
    output_dir = result.output_dir or job.output  # a trained result names it (a picked checkpoint's folder, or this)
    extra_files = {"training.log": job.log, "config/config.json": job.config / "config.json",
                   **{f"config/{e.folder}/{name}": job.for_expert(e.folder).config / name for e in result.experts
                      for name in ("config.json", "multidatabackend.json")},
                   "config/multidatabackend.json": job.config / "multidatabackend.json"}
    extra_files = {name: path for name, path in extra_files.items() if path.is_file()} | sample_files \
        | tensorboard_files(job.output)
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


def tensorboard_files(output: Path) -> dict[str, Path]:
    """The run's TensorBoard event files (SimpleTuner's logging_dir, `runs/` of each run's output), by their place in
    the output: they go up with it, and the Hub shows them in the repo's Metrics tab."""
    return {path.relative_to(output).as_posix(): path for path in sorted(output.glob(f"**/{RUNS_DIR}/**/*tfevents*"))
            if path.is_file()}


def salvage(spec: JobSpec, result: JobResult, *, settings: Settings, on_event: EventSink,
            output: Path | None = None) -> dict | None:
    """A run cut short still yields something: with hub.on_failure, publish the latest checkpoint's LoRA (of
    `output`, the run that was cut: an expert's own folder)."""
    # Publishable, complete or not: SimpleTuner writes the LoRA before the training state.
    latest = latest_checkpoint(output or JobDir(result.job_dir).output, complete=False, with_lora=True)
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
    pairs = result.preflight.get("pairs") or {}  # an edit run: a few of its pairs, before and after
    job = JobDir(result.job_dir)
    examples = card_pairs(job.dataset, input_folders=list(pairs.get("input_folders") or []),
                          out=job.root / "card") if pairs else []
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
        experts=[CardExpert(folder=expert.folder, label=f"{expert.name}-noise",
                            comfyui_file=expert.comfyui_path.name if expert.comfyui_path else None)
                 for expert in result.experts],
        pairs=examples, dataset_pairs=int(pairs.get("pairs") or 0), job_dir=str(result.job_dir),
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
