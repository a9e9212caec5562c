"""One background run (a training or a push): its status (core/status.py folds the events), the history a page
shows beside it (log, losses, validation images, checkpoints, warnings), all redacted of the job's secrets."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from core.events import (
    CheckpointSaved,
    DownloadProgress,
    EvalLoss,
    Event,
    JobWarning,
    LogLine,
    StageEvent,
    TrainerFailed,
    TrainerStage,
    TrainerStarted,
    TrainingProgress,
    ValidationImage,
)
from core.jobdir import new_job_id
from core.result import JobResult
from core.secrets import scrub
from core.spec import JobSpec
from core.status import JobStatus, apply, transferred
from core.training import TrainingControl

LOG_LINES = 300


def new_run_id() -> str:
    """A run's id, which names its job folder (core/jobdir.py)."""
    return new_job_id()


@dataclass(frozen=True)
class RunSnapshot:
    """What a page shows of a run at one moment. Holds no secret."""

    id: str
    kind: str
    status: str
    """running | succeeded | failed | cancelled."""
    version: int
    progress: JobStatus
    """Where the run stands (stage as a user reads it, step, loss, ETA, bytes), its message redacted."""
    losses: list[tuple[int, float]]
    log: list[str]
    validation: list[tuple[str, str]]
    checkpoints: list[str]
    warnings: list[str]
    error: dict[str, Any] | None
    output: dict[str, Any] | None
    lora_path: str | None
    """The trained LoRA on this machine (output's model_checkpoint becomes a URL once published)."""
    job_dir: str
    started_at: float
    ended_at: float | None
    cancel_requested: bool
    eval_losses: list[tuple[int, float]] = field(default_factory=list)
    """The evaluation loss on the held-out images at each checkpoint (a dataset with some)."""

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def stage(self) -> str:
        return self.progress.stage

    @property
    def detail(self) -> str:
        """The status message, with a download's bytes."""
        done = transferred(self.progress)
        return f"{self.progress.message}: {done}" if done else self.progress.message

    @property
    def step(self) -> int:
        return self.progress.step or 0

    @property
    def total_steps(self) -> int | None:
        return self.progress.total_steps

    @property
    def eta_s(self) -> float | None:
        return self.progress.eta_s

    @property
    def percent(self) -> float:
        if self.status == "succeeded":
            return 100.0
        # The last step is not the end: saving, validation and the exit follow. 100 means finished.
        return min(99.0, 100.0 * self.step / self.total_steps) if self.total_steps else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON for the API. No object in it has a "path" key: Gradio would take it for a file to serve."""
        output = without_path_keys({key: value for key, value in (self.output or {}).items() if key != "files"}) or None
        return {
            "id": self.id, "kind": self.kind, "status": self.status, "stage": self.stage, "detail": self.detail,
            "step": self.step, "total_steps": self.total_steps, "percent": round(self.percent, 1),
            "eta_s": self.eta_s, "losses": [{"step": s, "loss": v} for s, v in self.losses],
            "eval_losses": [{"step": s, "loss": v} for s, v in self.eval_losses],
            "validation": [{"file": p, "caption": c} for p, c in self.validation],
            "checkpoints": self.checkpoints, "warnings": self.warnings, "error": self.error, "output": output,
            "job_dir": self.job_dir, "lora_file": self.lora_path, "log_tail": self.log[-40:],
            "cancel_requested": self.cancel_requested,
        }


def without_path_keys(value: Any) -> Any:
    """`value` with every "path" key renamed "file", at any depth (the output's validation and samples entries have
    one): Gradio serves any object with a "path" key as a file, and these paths are relative to the job folder."""
    if isinstance(value, dict):
        return {("file" if key == "path" else key): without_path_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_path_keys(item) for item in value]
    return value


@dataclass
class Run:
    """One background run. `on_event` is its event sink; everything it records is redacted of `secrets`."""

    kind: str
    spec: JobSpec
    job_dir: Path
    secrets: list[str] = field(default_factory=list)
    id: str = field(default_factory=new_run_id)
    cancel: threading.Event = field(default_factory=threading.Event)
    control: TrainingControl = field(default_factory=TrainingControl)
    """Asks its SimpleTuner for a checkpoint or samples now (core/training/control.py)."""
    status: str = "running"
    result: JobResult | None = None
    error: dict[str, Any] | None = None
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _version: int = 0
    _status: JobStatus = field(default_factory=JobStatus)
    _losses: list[tuple[int, float]] = field(default_factory=list)
    _eval_losses: list[tuple[int, float]] = field(default_factory=list)
    _log: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_LINES))
    _validation: list[tuple[str, str]] = field(default_factory=list)
    _checkpoints: list[str] = field(default_factory=list)
    _warnings: list[str] = field(default_factory=list)
    thread: threading.Thread | None = None
    trainer: dict[str, int] | None = None
    """SimpleTuner's process group once started (TrainerStarted): what the history records to find it again."""

    def clean(self, text: str) -> str:
        return scrub(text, secrets=self.secrets)

    def note(self, message: str) -> None:
        """A line of the app's own in the run's log."""
        with self._lock:
            self._version += 1
            self._log.append(f"{time.strftime('%H:%M:%S')} {self.clean(message)}")

    def on_event(self, event: Event) -> None:
        with self._lock:
            self._version += 1
            self._status = apply(self._status, event)
            if isinstance(event, TrainerStarted):
                self.trainer = {"pid": event.pid, "pgid": event.pgid, "started": event.started}
                self._log.append(f"{time.strftime('%H:%M:%S')} [trainer] started (process group {event.pgid})")
            else:
                self._record(event)

    def _record(self, event: Event) -> None:
        """The run's history: what its log, loss plot and gallery show (the status is folded in on_event)."""
        stamp = time.strftime("%H:%M:%S")
        if isinstance(event, (TrainingProgress, EvalLoss)):
            self._record_loss(event, stamp=stamp)
            return
        if isinstance(event, StageEvent):
            suffix = f": {self.clean(event.message)}" if event.message else ""
            self._log.append(f"{stamp} [{event.stage}] {event.status}{suffix}")
            return
        if isinstance(event, TrainerStage):
            self._log.append(f"{stamp} [trainer] {event.key} {event.status}")
            return
        if isinstance(event, ValidationImage):
            caption = f"step {event.step}: {event.prompt}" if event.step is not None else event.prompt
            self._validation.append((event.path, self.clean(caption)))
            self._log.append(f"{stamp} validation image {Path(event.path).name}")
            return
        if isinstance(event, DownloadProgress):  # the status line only, not the log: these come twice a second
            return
        if isinstance(event, CheckpointSaved):
            self._checkpoints.append(event.path)
            self._log.append(f"{stamp} checkpoint saved: {Path(event.path).name}")
            return
        if isinstance(event, JobWarning):
            self._warnings.append(self.clean(event.message))
            self._log.append(f"{stamp} warning: {self.clean(event.message)}")
            return
        if isinstance(event, TrainerFailed):
            self._log.append(f"{stamp} error: {self.clean(event.title)}: {self.clean(event.message)}")
            return
        if isinstance(event, LogLine):
            if self.kind == "train" and event.severity.lower() in ("info", "debug"):
                return  # SimpleTuner's info chatter stays in training.log (its own box on the Train tab)
            self._log.append(f"{stamp} {self.clean(event.message)}")
            return
        self._log.append(f"{stamp} {self.clean(str(event.to_dict()))}")

    def _record_loss(self, event: TrainingProgress | EvalLoss, *, stamp: str) -> None:
        """A training step (its loss, if it says one), or the evaluation loss at a checkpoint."""
        if isinstance(event, EvalLoss):
            self._eval_losses.append((event.step, event.loss))
            self._log.append(f"{stamp} step {event.step} evaluation loss {event.loss:.4f}")
            return
        if event.loss is not None:
            self._losses.append((event.step, event.loss))
        loss = f" loss {event.loss:.4f}" if event.loss is not None else ""
        self._log.append(f"{stamp} step {event.step}/{event.total_steps}{loss}")

    def finish(self, *, status: str, result: JobResult | None = None, error: dict[str, Any] | None = None) -> None:
        with self._lock:
            self._version += 1
            self.status, self.result, self.ended_at = status, result, time.time()
            if error is not None:
                self.error = scrub({key: value for key, value in error.items() if key != "salvaged"},
                                   secrets=self.secrets)
                self._log.append(f"{time.strftime('%H:%M:%S')} {status}: {self.error.get('message', '')}")
            if result is not None:
                self._warnings.extend(self.clean(w) for w in result.warnings if self.clean(w) not in self._warnings)

    def snapshot(self) -> RunSnapshot:
        with self._lock:
            return RunSnapshot(
                id=self.id, kind=self.kind, status=self.status, version=self._version,
                progress=replace(self._status, message=self.clean(self._status.message)),
                losses=list(self._losses), eval_losses=list(self._eval_losses), log=list(self._log),
                validation=list(self._validation),
                checkpoints=list(self._checkpoints), warnings=list(self._warnings), error=self.error,
                output=self._output(), job_dir=str(self.job_dir),
                lora_path=str(self.result.lora_path) if self.result and self.result.lora_path else None,
                started_at=self.started_at, ended_at=self.ended_at, cancel_requested=self.cancel.is_set(),
            )

    def _output(self) -> dict[str, Any] | None:
        """The result's JSON, its messages scrubbed; its URLs (Hub, presigned storage) are the result itself."""
        if self.result is None:
            return None
        output = self.result.to_output()
        return {**output, **{name: scrub(output[name], secrets=self.secrets)
                             for name in ("warnings", "preflight", "trainer_files") if name in output}}

    @property
    def running(self) -> bool:
        return self.status == "running"
