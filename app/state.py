"""The server-side run registry: one training at a time, living in a thread on the server, its events buffered.

A browser only ever polls a snapshot, so closing or reloading the page re-attaches to the same run, and no
request waits for training. Publishing a finished run is a run of its own kind ("publish") with the same shape.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

from pydantic import SecretStr, ValidationError

from app.history import RESUMABLE, RunHistory, RunRecord, places, record_of
from app.run import Run, new_run_id
from core.errors import ErrorCode, JobCancelled, JobError
from core.events import CheckpointSaved, Event, StageEvent
from core.generation import Playground, build_tiny_model
from core.jobdir import job_folder
from core.pipeline import publish, run_job
from core.result import JobResult
from core.secrets import job_secrets
from core.settings import Settings
from core.spec import HubSpec, JobSpec, parse_job, unwrap_input, validation_error

TINY_MODEL_NAME = "tiny-sdxl"
logger = logging.getLogger("app.state")


def tiny_model_dir(settings: Settings) -> Path:
    """Where the built-in tiny model lives; built on first use."""
    return settings.data_root / "models" / TINY_MODEL_NAME


class RunRegistry:
    """The app's one registry: at most one training and one publish at a time, kept after they end."""

    def __init__(self, *, settings: Settings, env: Mapping[str, str] | None = None,
                 before_training: Callable[[], None] | None = None):
        self.settings = settings
        self.before_training = before_training
        """Raises a JobError when a training may not start now (the UI's: an auto-caption run is writing captions)."""
        self.env = os.environ if env is None else env  # the endpoint's keys: kept out of every run's view
        self._lock = threading.Lock()
        self._training: Run | None = None
        self._publishing: Run | None = None
        self._succeeded: Run | None = None
        self.playground = Playground(settings=settings)
        self.history = RunHistory(settings.data_root)
        """Every training of this data folder, kept across restarts (app/history.py)."""
        self._resumed_from: dict[str, str] = {}
        """The warm generation process (Playground tab); stopped before a training starts."""

    def training(self) -> Run | None:
        """The latest training run, running or ended."""
        return self._training

    def publishing(self) -> Run | None:
        return self._publishing

    def last_trained(self) -> Run | None:
        """The latest training that produced a LoRA."""
        return self._succeeded

    def busy(self) -> bool:
        return bool(self._training and self._training.running)

    def runs(self) -> list[RunRecord]:
        """The run history, newest first; a run some earlier process left `running` reads `interrupted`."""
        return self.history.records(live=self._live())

    def _live(self) -> set[str]:
        return {self._training.id} if self._training is not None and self._training.running else set()

    def resume(self, run_id: str) -> Run:
        """Start a new run of an interrupted (or cancelled, failed) run's job from the last checkpoint it left."""
        record = self.history.get(run_id.strip(), live=self._live())
        if record is None:
            raise JobError(f"no run {run_id!r} in the history", field="run",
                           code=ErrorCode.INVALID_INPUT, stage="train")
        checkpoint = record.last_checkpoint() if record.status in RESUMABLE else None
        if checkpoint is None:
            raise JobError(f"run {run_id} has no checkpoint to resume from ({record.status})", field="run",
                           code=ErrorCode.INVALID_INPUT, stage="train")
        spec = parse_job({**unwrap_input(record.job), "resume_from": str(checkpoint)})
        run = self.start_training(spec, resumed_from=str(checkpoint))
        self.history.save(replace(record, status="resumed"), secrets=run.secrets)
        return run

    def start_training(self, spec: JobSpec, *, resumed_from: str | None = None) -> Run:
        """Start `spec` in the background; refused while another training runs. The Publish tab pushes, so the
        job's own hub section is left for it."""
        spec = spec.model_copy(update={"hub": None})
        if self.before_training is not None:
            self.before_training()
        with self._lock:
            current = self._training
            if current is not None and current.running:
                snap = current.snapshot()
                where = f" (step {snap.step}/{snap.total_steps})" if snap.total_steps else f" ({snap.stage})"
                raise JobError(f"a training is already running: {current.id}{where}. Wait for it to finish or "
                               "cancel it on the Train tab", code=ErrorCode.BUSY, stage="train")
            run_id = new_run_id()
            run = Run(kind="train", spec=spec, id=run_id, job_dir=job_folder(self.settings.data_root, run_id),
                      secrets=self._secrets(spec))
            self._training = run
            if resumed_from:
                self._resumed_from[run.id] = resumed_from
        self._remember(run)
        self.playground.stop(reason="a training starts")  # its GPU memory is the training's
        self._start(run, self._train)
        return run

    def cancel_training(self) -> bool:
        """Ask the running training to stop; True when there was one."""
        run = self._training
        if run is None or not run.running:
            return False
        run.cancel.set()
        run.note("cancel requested: stopping SimpleTuner")
        return True

    def start_publish(self, *, repo_id: str, private: bool, token: str | None, checkpoint: str | int = "last") -> Run:
        """Push the latest trained LoRA (or the checkpoint `checkpoint` picks: "last", "best" or a step) to
        `repo_id`; refused while a training or another push runs."""
        with self._lock:
            if self._training is not None and self._training.running:
                raise JobError("a training is running: publish when it has finished", code=ErrorCode.BUSY,
                               stage="publish")
            if self._publishing is not None and self._publishing.running:
                raise JobError("a push to the Hub is already running", code=ErrorCode.BUSY, stage="publish")
            trained = self._succeeded
            if trained is None or trained.result is None:
                raise JobError("nothing to publish yet: train a LoRA first (Train tab)", field="run", stage="publish")
            try:
                hub = HubSpec(repo_id=repo_id, private=private, token=SecretStr(token) if token else None,
                              checkpoint=checkpoint)
            except ValidationError as exc:
                raise validation_error(exc, prefix="hub.", whole="hub.repo_id", stage="publish") from None
            spec = trained.spec.model_copy(update={"hub": hub, "storage": None})
            run = Run(kind="publish", spec=spec, job_dir=trained.job_dir, secrets=self._secrets(spec),
                      result=trained.result)
            self._publishing = run
        self._start(run, self._publish)
        return run

    def shutdown(self, *, timeout_s: float = 30.0) -> None:
        """Stop a running training (its SimpleTuner process group with it) before the app exits."""
        self.playground.stop(reason="the app exits")
        run = self._training
        if run is not None and run.running:
            run.cancel.set()
            if run.thread is not None:
                run.thread.join(timeout_s)

    # -- the background work ------------------------------------------------------------------------------------

    def _remember(self, run: Run, *, published: list[str] | None = None) -> None:
        """The run's record in the history, as it stands now."""
        self.history.save(record_of(run, resumed_from=self._resumed_from.get(run.id), published=published),
                          secrets=run.secrets)

    def _secrets(self, spec: JobSpec) -> list[str]:
        return job_secrets(spec, env=self.env, settings=self.settings)

    def _start(self, run: Run, work: Callable[[Run], JobResult]) -> None:
        def body() -> None:
            try:
                result = work(run)
            except JobCancelled as exc:
                run.finish(status="cancelled", error=exc.to_payload())
            except JobError as exc:
                run.finish(status="failed", error=exc.to_payload())
            except Exception as exc:  # a bug, not a job error: the run ends failed and the server stays up
                logger.exception("run %s crashed", run.id)
                run.finish(status="failed", error={"code": ErrorCode.INTERNAL_ERROR.value, "stage": run.kind,
                                                   "field": None, "message": f"{type(exc).__name__}: {exc}"})
            else:
                run.finish(status="succeeded", result=result)
                if run.kind == "train":
                    self._succeeded = run
                elif self._succeeded is not None and self._succeeded.job_dir == run.job_dir:
                    self._remember(self._succeeded, published=places(result.to_output()))
            if run.kind == "train":
                self._remember(run)

        run.thread = threading.Thread(target=body, name=f"run-{run.kind}-{run.id}", daemon=True)
        run.thread.start()

    def _train(self, run: Run) -> JobResult:
        tiny = tiny_model_dir(self.settings)
        if Path(run.spec.base_model) == tiny and not (tiny / "model_index.json").exists():
            run.on_event(StageEvent("setup", "started", f"building the tiny demo model in {tiny}"))
            build_tiny_model(tiny, settings=self.settings)
            run.on_event(StageEvent("setup", "completed"))
        def on_event(event: Event) -> None:
            run.on_event(event)
            if isinstance(event, CheckpointSaved):  # what a restarted app offers to resume from
                self._remember(run)

        return run_job(run.spec, run.job_dir, on_event, settings=self.settings, cancel=run.cancel)

    def _publish(self, run: Run) -> JobResult:
        if run.result is None:  # publish runs are made from a finished training only
            raise JobError("nothing to publish yet: train a LoRA first (Train tab)", field="run", stage="publish")
        return publish(run.spec, run.result, settings=self.settings, on_event=run.on_event)
