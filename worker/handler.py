"""One RunPod job: parse it, run the core pipeline in a thread of its own, report progress, answer, clean up.

Why an async function (not a generator, not a sync function), from runpod 1.12's code (docs/runpod-notes.md):
- cancel: runpod stops a job by cancelling its asyncio task, which only reaches an async handler (CancelledError
  at its `await`); a sync handler cannot be stopped. We then set the pipeline's Cancel, which stops the
  running stage within seconds (a download, SimpleTuner's process group), wait for that, and remove the job's folder.
- final output: a plain return value keeps our error shape and `refresh_worker`; a generator's error is turned into
  a string and its final output into the list of what it yielded, and `--test_input` does not iterate generators.
- progress: `progress_update` (throttled, worker/progress.py) works the same from any handler, and `--rp_serve_api`
  awaits an async handler on its event loop, which the pipeline's thread (asyncio.to_thread) leaves free.

Each job runs in DATA_DIR/jobs/<job id>, removed when the job ends: what must outlive it (the LoRA, the log) has
been published or uploaded by then, so a training job must name a destination (hub, storage, or the endpoint's
bucket). A job's dataset.path is read only under DATASET_ROOT, by default the sample datasets in worker/samples.
The endpoint's policy for a job (its JOB_DEFAULT_* config, that destination, EXECUTION_TIMEOUT_S) is core/endpoint.py's.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from core.cancel import Cancel
from core.endpoint import endpoint_job, endpoint_settings
from core.errors import JobError
from core.events import Event, EventSink, JobWarning
from core.generation import Playground, parse_generate_job, run_generate_job
from core.jobdir import job_folder
from core.publishing import outputs_stored
from core.result import JobResult
from core.secrets import job_secrets
from core.settings import Settings
from core.spec import JobSpec, unwrap_input
from worker.output import error_as_text, error_output, job_output
from worker.progress import ProgressReporter, format_status

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
CANCEL_WAIT_S = 30.0
"""How long a cancelled job waits for its pipeline thread (SimpleTuner gets 5 s after SIGTERM, then SIGKILL)."""


def worker_settings(env: Mapping[str, str]) -> Settings:
    """Settings.from_env, with the sample datasets as the dataset root when DATASET_ROOT is unset."""
    return endpoint_settings(Settings.from_env(env), samples=SAMPLES_DIR)


def job_directory(settings: Settings, job_id: str) -> Path:
    """DATA_DIR/jobs/<job id>, the id made safe as a folder name (and as the storage key's job part)."""
    return job_folder(settings.data_root, job_id)


def remove_job_dir(path: Path) -> None:
    def report(_function, failed: str, error: BaseException) -> None:
        print(f"worker: could not remove {failed}: {error}", file=sys.stderr, flush=True)

    if path.exists():
        shutil.rmtree(path, onexc=report)


def status_sender(job: Mapping[str, Any], env: Mapping[str, str]) -> Callable[[dict[str, Any]], None]:
    """Where a job's status goes: RunPod's progress_update when the worker runs under RunPod's job API (elsewhere it
    would post to a URL that does not exist), and always one log line."""
    update: Callable[[dict[str, Any], Any], None] | None = None
    if env.get("RUNPOD_WEBHOOK_POST_OUTPUT"):
        from runpod.serverless import progress_update

        update = progress_update

    def send(status: dict[str, Any]) -> None:
        if update is not None:
            update(dict(job), status)
        print(f"worker: {job.get('id')} {format_status(status)}", file=sys.stderr, flush=True)

    return send


def _run_pipeline(spec: JobSpec, workdir: Path, on_event: EventSink, *, settings: Settings,
                  cancel: Cancel) -> JobResult:
    """The blocking part, on its own thread; `cancel` stops it at any stage (core/pipeline.py)."""
    from core.pipeline import check_job, run_job  # the dataset and publishing imports load with the first job

    run = check_job if spec.dry_run else run_job
    return run(spec, workdir, on_event, settings=settings, cancel=cancel, allow_local_paths=False)


async def _wait_stopped(runner: asyncio.Future, *, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while not runner.done() and time.monotonic() < deadline:
        try:
            await asyncio.wait({runner}, timeout=max(deadline - time.monotonic(), 0.01))
        except asyncio.CancelledError:
            continue  # the job is stopping already; another stop request changes nothing
    if not runner.done():
        print(f"worker: the cancelled job's pipeline did not stop within {limit_s:g} s", file=sys.stderr, flush=True)
    elif not runner.cancelled() and runner.exception() is not None:
        print(f"worker: job stopped: {runner.exception()}", file=sys.stderr, flush=True)


async def run_pipeline(spec: JobSpec, workdir: Path, on_event: EventSink, *, settings: Settings) -> JobResult:
    """run_job on a thread; a cancelled task stops it (SimpleTuner's process group is killed) before it re-raises."""
    cancel = Cancel()
    runner = asyncio.ensure_future(asyncio.to_thread(_run_pipeline, spec, workdir, on_event, settings=settings,
                                                     cancel=cancel))
    try:
        await asyncio.wait({runner})  # unlike `await runner`, a cancel here leaves the runner to finish
    except asyncio.CancelledError:
        cancel.set()
        await _wait_stopped(runner, limit_s=CANCEL_WAIT_S)
        raise
    return runner.result()


async def handler(job: dict[str, Any]) -> dict[str, Any]:
    """runpod's handler: one job in, its output (or {"error": ...}) out."""
    env = os.environ
    secrets = job_secrets(job.get("input"), env=env)  # a job refused unparsed still has its token hidden
    try:
        settings = worker_settings(env)
        if is_generate_job(job.get("input")):
            return await generate(job, settings=settings, secrets=secrets)
        spec, warnings = endpoint_job(job, settings)  # the endpoint's defaults, destination and deadline
    except JobError as error:
        return error_output(error, secrets=secrets)
    secrets = job_secrets(spec, settings=settings)
    workdir = job_directory(settings, str(job.get("id") or ""))
    await asyncio.to_thread(remove_job_dir, workdir)  # a retried job id starts clean
    reporter = ProgressReporter(send=status_sender(job, env), secrets=secrets)
    said: list[str] = []  # warnings the stages report as events (a resumed data order, a repo's visibility)

    def on_event(event: Event) -> None:
        reporter.on_event(event)
        if isinstance(event, JobWarning):
            said.append(f"{event.field}: {event.message}" if event.field else event.message)

    if _playground is not None:  # a warm generation process would hold GPU memory the training needs
        await asyncio.to_thread(_playground.stop, reason="a training starts")
    publisher = asyncio.create_task(reporter.run())
    ended: JobResult | BaseException | None = None
    try:
        ended = await run_pipeline(spec, workdir, on_event, settings=settings)
        return job_output(ended, warnings=[*warnings, *said], secrets=secrets)
    except JobError as error:
        ended = error
        return error_output(error, secrets=secrets)
    except Exception as error:  # a bug of ours: answer it like any failure, with a fresh worker next
        ended = error
        traceback.print_exc()
        return error_output(error, secrets=secrets)
    finally:
        publisher.cancel()
        # A trained LoRA or checkpoint that is stored nowhere else is never deleted (core/publishing/safekeeping.py).
        if outputs_stored(workdir / "output", ended):
            await asyncio.to_thread(remove_job_dir, workdir)
        else:
            print(f"worker: kept {workdir}: its outputs are stored nowhere else", file=sys.stderr, flush=True)


_playground: Playground | None = None
"""The worker's generation process: warm from one generate job to the next on this worker."""


def is_generate_job(raw: Any) -> bool:
    raw = unwrap_input(raw)
    return isinstance(raw, Mapping) and raw.get("mode") == "generate"


async def generate(job: dict[str, Any], *, settings: Settings, secrets: list[str]) -> dict[str, Any]:
    """A `{"mode": "generate"}` job (core/generation/playground.py): images from a published LoRA, as bucket URLs or
    base64."""
    global _playground
    workdir = job_directory(settings, str(job.get("id") or ""))
    stop = threading.Event()  # RunPod's cancel reaches the render: the process ends and frees the GPU and the lock
    try:
        spec = parse_generate_job(unwrap_input(job.get("input")))
        _playground = _playground or Playground(settings=settings)
        runner = asyncio.ensure_future(asyncio.to_thread(run_generate_job, spec, workdir=workdir, settings=settings,
                                                         playground=_playground, cancel=stop))
        try:
            await asyncio.wait({runner})
        except asyncio.CancelledError:
            stop.set()
            await _wait_stopped(runner, limit_s=CANCEL_WAIT_S)
            raise
        return runner.result()
    except JobError as error:
        return error_output(error, secrets=secrets)
    except Exception as error:  # a bug of ours: the same error shape, and a fresh worker next
        traceback.print_exc()
        return error_output(error, secrets=secrets)
    finally:
        await asyncio.to_thread(remove_job_dir, workdir)


async def local_api_handler(job: dict[str, Any]) -> dict[str, Any]:
    """The handler for runpod's local FastAPI (`--rp_serve_api`): the same answers, the error payload as JSON text."""
    return error_as_text(await handler(job))
