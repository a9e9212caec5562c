"""The server-side run registry: the trainings, each living in a thread on the server, its events buffered, and the
queue of trainings waiting for their GPUs (app/run_queue.py).

A browser only ever polls a snapshot, so closing or reloading the page re-attaches to the same run, and no
request waits for training. Publishing a finished run is a run of its own kind ("publish") with the same shape.

Every run of the data folder is known from the history on disk (app/history.py); one of them is the chosen run
(app/chosen_run.py) that the Publish and Playground tabs work on: the one picked on the Runs tab, else the newest
that succeeded. An app that starts finds any trainer an earlier app left at work (its process group, recorded in the
history) and stops it: one trainer per GPU, and the run reads `interrupted`, resumable from its last checkpoint.

The machine's GPUs (its CPU, without one: one slot) are shared out between trainings: a queued run starts when the
GPUs it asks for are free (app/run_queue.py's `assign`), each training sees only its own (CUDA_VISIBLE_DEVICES, so
its memory plan is its devices'), and runs on disjoint GPUs train side by side. The playground renders on a GPU no
training holds.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

from pydantic import SecretStr, ValidationError

from app.chosen_run import ChosenRun, save_result
from app.history import INTERRUPTED, RESUMABLE, RunHistory, RunRecord, places, record_of
from app.run import Run, new_run_id
from app.run_queue import CPU_SLOT, QueuedRun, RunQueue, assign, demand
from core.adapters import visible_gpu_ids
from core.errors import ErrorCode, JobCancelled, JobError
from core.events import CheckpointSaved, Event, StageEvent, TrainerStarted
from core.generation import Playground, build_tiny_model
from core.jobdir import job_folder
from core.pipeline import publish, run_job
from core.result import JobResult
from core.secrets import job_secrets, scrub
from core.settings import Settings
from core.spec import HubSpec, JobSpec, parse_job, unwrap_input, validation_error

TINY_MODEL_NAME = "tiny-sdxl"
ORPHAN_STOP_GRACE_S = 10.0
RETRY_S = 5.0
"""A queued run that could not start (captions being written, another app's trainer): tried again this often."""
"""A trainer left by an earlier app: SIGTERM, then SIGKILL after this long."""
logger = logging.getLogger("app.state")


def tiny_model_dir(settings: Settings) -> Path:
    """Where the built-in tiny model lives; built on first use."""
    return settings.data_root / "models" / TINY_MODEL_NAME


class RunRegistry:
    """The app's one registry: its trainings (one per share of the GPUs), the queue, one publish at a time."""

    def __init__(self, *, settings: Settings, env: Mapping[str, str] | None = None,
                 before_training: Callable[[], None] | None = None):
        self.settings = settings
        self.before_training = before_training
        """Raises a JobError when a training may not start now (the UI's: an auto-caption run is writing captions)."""
        self.env = os.environ if env is None else env  # the endpoint's keys: kept out of every run's view
        self._lock = threading.RLock()
        self._trainings: dict[str, Run] = {}
        """This app's trainings, in the order they started, running or ended."""
        self._held: dict[str, tuple[str, ...]] = {}
        """The devices each running training holds."""
        self.devices: list[str] = visible_gpu_ids(settings) or [CPU_SLOT]
        """The machine's GPUs (CUDA ids), or the one CPU slot: what trainings share."""
        self.queue = RunQueue(settings.data_root)
        """Trainings waiting for their GPUs, kept across restarts."""
        self.queue_notes: list[str] = []
        """Why queued runs could not start (a job that no longer validates): the Runs tab shows them."""
        self._retry: threading.Timer | None = None
        self._closing = False
        self._playground_devices: str | None = None
        self._publishing: Run | None = None
        self._succeeded: Run | None = None
        self.playground = Playground(settings=settings)
        """The warm generation process (Playground tab); stopped before a training starts."""
        self.history = RunHistory(settings.data_root)
        """Every training of this data folder, kept across restarts (app/history.py)."""
        self._resumed_from: dict[str, str] = {}
        self._chosen: str | None = None
        """The run picked on the Runs tab (None: the newest that succeeded)."""
        self.stopped_at_start = self._stop_orphans()
        """The runs whose trainer an earlier app left at work, stopped as this one started."""
        self.schedule()  # the queue an earlier app left goes on

    def training(self) -> Run | None:
        """The training the Train tab follows: the chosen run when this app trains or trained it, else the latest."""
        runs = self._trainings
        if self._chosen is not None and self._chosen in runs:
            return runs[self._chosen]
        return next(reversed(runs.values()), None) if runs else None

    def trainings(self) -> list[Run]:
        """The trainings running now, in the order they started."""
        return [run for run in list(self._trainings.values()) if run.running]

    def devices_of(self, run_id: str) -> tuple[str, ...]:
        """The devices a running training holds (() once it has ended)."""
        return self._held.get(run_id, ())

    def publishing(self) -> Run | None:
        return self._publishing

    def last_trained(self) -> Run | None:
        """The latest training of this app that produced a LoRA (the tabs use chosen(): it outlives the app)."""
        return self._succeeded

    def chosen(self) -> ChosenRun | None:
        """The run the Publish and Playground tabs work on: the one chosen, else the newest that succeeded."""
        record = self.history.get(self._chosen, live=self._live()) if self._chosen else None
        if record is None:
            record = next((r for r in self.runs() if r.status == "succeeded"), None)
        return ChosenRun.of(record) if record is not None else None

    def choose(self, run_id: str) -> ChosenRun:
        """Make `run_id` the chosen run."""
        record = self.history.get(run_id.strip(), live=self._live()) if run_id and run_id.strip() else None
        if record is None:
            raise JobError(f"no run {run_id!r} in the history", field="run", code=ErrorCode.INVALID_INPUT,
                           stage="runs")
        self._chosen = record.id
        return ChosenRun.of(record)

    def delete(self, run_id: str) -> RunRecord:
        """Remove a run: its job folder (outputs, checkpoints, its hard links into the cache: the cache's own entries
        stay) and its record. Refused while it trains, while its trainer is still at work, or while it is pushed."""
        with self._lock:
            record = self.history.get(run_id.strip(), live=self._live()) if run_id and run_id.strip() else None
            if record is None:
                raise JobError(f"no run {run_id!r} in the history", field="run", code=ErrorCode.INVALID_INPUT,
                               stage="runs")
            if record.status == "running" or record.trainer_running():
                raise JobError(f"run {record.id} is running: cancel it on the Train tab before deleting it",
                               field="run", code=ErrorCode.BUSY, stage="runs")
            pushing = self._publishing
            if pushing is not None and pushing.running and Path(pushing.job_dir) == Path(record.job_dir):
                raise JobError(f"run {record.id} is being pushed to the Hub: delete it once the push has ended",
                               field="run", code=ErrorCode.BUSY, stage="runs")
            folder = Path(record.job_dir)
            jobs = (self.settings.data_root / "jobs").resolve()
            if folder.resolve().is_relative_to(jobs) and folder.resolve() != jobs:  # never anything else
                shutil.rmtree(folder, ignore_errors=True)
            self.history.delete(record.id)
            if self._chosen == record.id:
                self._chosen = None
            self._trainings.pop(record.id, None)
            if self._succeeded is not None and self._succeeded.id == record.id:
                self._succeeded = None
        return record

    def busy(self) -> bool:
        """A training is running."""
        return bool(self.trainings())

    def free_devices(self) -> list[str]:
        """The devices no running training holds."""
        held = {device for devices in self._held.values() for device in devices}
        return [device for device in self.devices if device not in held]

    def runs(self) -> list[RunRecord]:
        """The run history, newest first; a run some earlier process left `running` reads `interrupted`."""
        return self.history.records(live=self._live())

    def _live(self) -> set[str]:
        return {run.id for run in self.trainings()}

    def _stop_orphans(self) -> list[str]:
        """Stop every trainer that an earlier app of this data folder left at work (the app was killed before its
        trainer's watchdog could stop it): its run then reads `interrupted`, and Resume starts the only trainer."""
        stopped = []
        for record in self.history.records():
            mark = record.trainer_mark()
            if record.status != "running" or mark is None or not mark.alive():
                continue
            logger.warning("run %s: its trainer (process group %s) outlived the app that started it; stopping it",
                           record.id, mark.pgid)
            mark.stop(grace_s=ORPHAN_STOP_GRACE_S)
            self.history.save(replace(record, status=INTERRUPTED, ended_at=record.ended_at,
                                      error="the app stopped while this run trained; its trainer was stopped when "
                                            "the app started again"), secrets=[])
            stopped.append(record.id)
        return stopped

    def _orphan_training(self) -> RunRecord | None:
        """A run of no app of ours whose trainer is at work (another app on this data folder)."""
        live = self._live()
        return next((r for r in self.runs() if r.status == "running" and r.id not in live), None)

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
        """Start `spec` in the background now, on the GPUs it asks for (config.num_processes, else all); refused
        while they are held by another training (add it to the queue instead). The Publish tab pushes, so the
        job's own hub section is left for it."""
        spec = spec.model_copy(update={"hub": None})
        need = self._demand(spec)
        self._may_train()
        with self._lock:
            free = self.free_devices()
            if need > len(free):
                running = self.trainings()
                current = self.training() if self.training() in running else next(iter(running), None)
                snap = current.snapshot() if current is not None else None
                where = "" if snap is None else f" (step {snap.step}/{snap.total_steps})" if snap.total_steps \
                    else f" ({snap.stage})"
                raise JobError(f"a training is already running: {current.id if current else ''}{where}. Wait for it "
                               "to finish, "
                               "cancel it on the Train tab, or add this one to the queue", code=ErrorCode.BUSY,
                               stage="train")
            return self._launch(spec, run_id=new_run_id(), devices=tuple(free[:need]), resumed_from=resumed_from)

    def enqueue(self, spec: JobSpec) -> QueuedRun:
        """Put `spec` at the end of the queue (kept across restarts); it starts when the GPUs it asks for are free,
        at once when they are free now. Secrets are not written: the environment's are used when it starts."""
        spec = spec.model_copy(update={"hub": None})
        self._demand(spec)  # more GPUs than the machine has: refused now, not when its turn comes
        model = Path(spec.base_model).name if Path(spec.base_model).is_absolute() else spec.base_model
        label = f"{spec.model_family} · {model} · trigger word {spec.trigger_word or '(none)'}"
        entry = QueuedRun(id=new_run_id(), job=scrub(spec.to_job_json(), secrets=self._secrets(spec)),
                          gpus=spec.num_processes, label=label)
        self.queue.add(entry)
        self.schedule()
        return entry

    def queued(self) -> list[QueuedRun]:
        """The runs waiting their turn, the first to start first."""
        return self.queue.entries()

    def move_queued(self, run_id: str, *, by: int) -> None:
        """Move a queued run up (by -1) or down (+1)."""
        if not self.queue.move(run_id, by=by):
            raise JobError(f"run {run_id!r} is not in the queue (it may have started)", field="queue",
                           code=ErrorCode.INVALID_INPUT, stage="queue")
        self.schedule()

    def dequeue(self, run_id: str) -> QueuedRun:
        """Take a run out of the queue before it starts."""
        entry = self.queue.remove(run_id)
        if entry is None:
            raise JobError(f"run {run_id!r} is not in the queue (it may have started: cancel it on the Train tab)",
                           field="queue", code=ErrorCode.INVALID_INPUT, stage="queue")
        self.schedule()
        return entry

    def schedule(self) -> list[Run]:
        """Start every queued run whose GPUs are free now, in queue order (app/run_queue.py's `assign`)."""
        started: list[Run] = []
        with self._lock:
            waiting = self.queue.entries()
            if not waiting:
                return started
            try:
                self._may_train()
            except JobError as exc:  # captions being written, another app's trainer: try again shortly
                logger.info("the queue waits: %s", exc.message)
                self._retry_later()
                return started
            devices_for = assign([(entry.id, entry.gpus) for entry in waiting], devices=self.devices,
                                 busy=[d for held in self._held.values() for d in held])
            for entry in waiting:
                if entry.id not in devices_for:
                    continue
                self.queue.remove(entry.id)
                try:
                    spec = parse_job(entry.job)
                except JobError as exc:
                    self.queue_notes.append(f"queued run {entry.id} was dropped: {exc.message}")
                    logger.warning("queued run %s was dropped: %s", entry.id, exc.message)
                    continue
                started.append(self._launch(spec, run_id=entry.id, devices=devices_for[entry.id]))
        return started

    def _retry_later(self) -> None:
        if self._retry is not None and self._retry.is_alive():
            return
        self._retry = threading.Timer(RETRY_S, self.schedule)
        self._retry.daemon = True
        self._retry.start()

    def _demand(self, spec: JobSpec) -> int:
        """The devices `spec` takes; more GPUs than the machine has is refused naming config.num_processes."""
        if self.devices != [CPU_SLOT] and spec.num_processes and spec.num_processes > len(self.devices):
            raise JobError(f"config.num_processes {spec.num_processes} asks for more GPUs than this machine's "
                           f"{len(self.devices)}", field="config.num_processes", code=ErrorCode.INVALID_INPUT,
                           stage="queue")
        return demand(spec.num_processes, devices=self.devices)

    def _may_train(self) -> None:
        """Raises when no training may start now: the before_training hook, or another app's trainer at work."""
        if self.before_training is not None:
            self.before_training()
        orphan = self._orphan_training()
        if orphan is not None:
            mark = orphan.trainer_mark()
            raise JobError(f"the trainer of run {orphan.id} is still at work (process group "
                           f"{mark.pgid if mark else '?'}) and no app follows it: restart the app to stop it",
                           code=ErrorCode.BUSY, stage="train")

    def _launch(self, spec: JobSpec, *, run_id: str, devices: tuple[str, ...],
                resumed_from: str | None = None) -> Run:
        """Start one training on `devices` (called under the lock, the devices free)."""
        run = Run(kind="train", spec=spec, id=run_id, job_dir=job_folder(self.settings.data_root, run_id),
                  secrets=self._secrets(spec))
        self._trainings[run.id] = run
        self._held[run.id] = devices
        if resumed_from:
            self._resumed_from[run.id] = resumed_from
        if devices != (CPU_SLOT,):
            run.note(f"on GPU{'s' if len(devices) > 1 else ''} {', '.join(devices)}")
        self._remember(run)
        if self.devices == [CPU_SLOT] or self._playground_devices is None \
                or self._playground_devices in devices:
            self.playground.stop(reason="a training starts")  # its GPU memory is the training's
            self._playground_devices = None
        self._start(run, self._train)
        return run

    def playground_device(self) -> str | None:
        """Pin the playground to a GPU no training holds (its warm process moves when its GPU was taken); refused
        while every GPU trains. None on the CPU."""
        with self._lock:
            free = self.free_devices()
            if not free:
                raise JobError("a training is running: Generate once it has ended (or cancel it on the Train tab)"
                               + ("" if len(self.devices) == 1 else "; every GPU is training"),
                               code=ErrorCode.BUSY, stage="generate")
            if self.devices == [CPU_SLOT]:
                return None
            if self._playground_devices not in free:
                self._playground_devices = free[-1]  # the last: queued runs take the first free ones
                self.playground.use_devices(self._playground_devices)
            return self._playground_devices

    def cancel_training(self, run_id: str | None = None) -> bool:
        """Ask a running training (`run_id`, else the one the Train tab follows) to stop; True when it ran."""
        run = self._trainings.get(run_id) if run_id else self.training()
        if run is None or not run.running:
            return False
        run.cancel.set()
        run.note("cancel requested: stopping SimpleTuner")
        return True

    def request_checkpoint(self) -> str:
        """Ask the running training to save a checkpoint at its next step; what the user is told."""
        return self._request(lambda run: run.control.request_checkpoint(), done="a checkpoint is saved")

    def request_samples(self) -> str:
        """Ask the running training to render its sample prompts at its next step; what the user is told."""
        return self._request(lambda run: run.control.request_samples(), done="the samples are rendered")

    def _request(self, ask: Callable[[Run], str | None], *, done: str) -> str:
        run = self.training()  # the run the Train tab follows
        refused = "no training is running" if run is None or not run.running else ask(run)
        if refused:
            return f"Not asked: {refused}."
        run.note(f"asked: {done} at the next step")  # type: ignore[union-attr]  # running, checked above
        return f"Asked: {done} at the next step."

    def start_publish(self, *, repo_id: str, private: bool, token: str | None, checkpoint: str | int = "last") -> Run:
        """Push the chosen run's LoRA (or the checkpoint `checkpoint` picks: "last", "best" or a step) to
        `repo_id`; refused while a training or another push runs."""
        trained = self.chosen()
        with self._lock:
            if self._publishing is not None and self._publishing.running:
                raise JobError("a push to the Hub is already running", code=ErrorCode.BUSY, stage="publish")
            if trained is None or trained.result is None:
                raise JobError("nothing to publish yet: train a LoRA first (Train tab)" if trained is None else
                               f"run {trained.id} has no trained LoRA ({trained.record.status}): choose a run that "
                               "succeeded on the Runs tab", field="run", stage="publish")
            try:
                hub = HubSpec(repo_id=repo_id, private=private, token=SecretStr(token) if token else None,
                              checkpoint=checkpoint)
            except ValidationError as exc:
                raise validation_error(exc, prefix="hub.", whole="hub.repo_id", stage="publish") from None
            spec = trained.spec.model_copy(update={"hub": hub, "storage": None})
            run = Run(kind="publish", spec=spec, job_dir=trained.job_dir, secrets=self._secrets(spec),
                      result=trained.result, id=trained.id)
            self._publishing = run
        self._start(run, self._publish)
        return run

    def shutdown(self, *, timeout_s: float = 30.0) -> None:
        """Stop a running training (its SimpleTuner process group with it) before the app exits."""
        self.playground.stop(reason="the app exits")
        if self._retry is not None:
            self._retry.cancel()
        self._closing = True  # the queue waits for the next app
        runs = self.trainings()
        for run in runs:
            run.cancel.set()
        for run in runs:
            if run.thread is not None:
                run.thread.join(timeout_s)

    # -- the background work ------------------------------------------------------------------------------------

    def _remember(self, run: Run, *, published: list[str] | None = None) -> None:
        """The run's record in the history, as it stands now."""
        self.history.save(record_of(run, resumed_from=self._resumed_from.get(run.id), published=published),
                          secrets=run.secrets)

    def _keep_result(self, run: Run, result: JobResult) -> None:
        """The result beside the run's outputs: what a restarted app publishes and tries."""
        try:
            save_result(result, secrets=run.secrets)
        except OSError as exc:  # the run stays listed; a restarted app rebuilds its result from the folder
            logger.warning("run %s: its result was not saved: %s", run.id, exc)

    def _published(self, run_id: str, urls: list[str], *, secrets: list[str]) -> None:
        """Add where a push went to the run's record."""
        record = self.history.get(run_id, live=self._live())
        if record is not None:
            self.history.save(replace(record, published=list(dict.fromkeys([*record.published, *urls]))),
                              secrets=secrets)

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
                    self._succeeded, self._chosen = run, run.id
                    self._keep_result(run, result)
                else:
                    self._published(run.id, places(result.to_output()), secrets=run.secrets)
            if run.kind == "train":
                self._remember(run)
                self._held.pop(run.id, None)
                if not self._closing:
                    self.schedule()  # its GPUs go to the next in the queue

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
            # Its trainer's process group (what a restarted app stops), and what a restarted app resumes from.
            if isinstance(event, (TrainerStarted, CheckpointSaved)):
                self._remember(run)

        return run_job(run.spec, run.job_dir, on_event, settings=self.run_settings(run.id), cancel=run.cancel,
                       control=run.control)

    def run_settings(self, run_id: str) -> Settings:
        """The settings a training runs with: CUDA_VISIBLE_DEVICES set to its own GPUs, so its trainer sees only
        those and its memory plan is theirs."""
        devices = self._held.get(run_id, ())
        if not devices or devices == (CPU_SLOT,):
            return self.settings
        return replace(self.settings, cuda_visible_devices=",".join(devices))

    def _publish(self, run: Run) -> JobResult:
        if run.result is None:  # publish runs are made from a finished training only
            raise JobError("nothing to publish yet: train a LoRA first (Train tab)", field="run", stage="publish")
        return publish(run.spec, run.result, settings=self.settings, on_event=run.on_event)
