"""What a running job shows in its RunPod status: stage, step/total, loss, ETA.

Events come from the pipeline's thread and from SimpleTuner's webhook threads, many a second, while runpod's
`progress_update` starts a thread and an HTTP request per call (FACTS.md section 2). So an event only updates one
state (the latest wins) and one coroutine sends that state at most once per interval, and only when it changed.

Stages a user sees: downloading (dataset, checkpoint to resume), checking (preflight, trainer config), loading
(SimpleTuner starting, base model), caching (text embeds, VAE latents), training, validating, publishing.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from core.events import (
    CheckpointSaved,
    DownloadProgress,
    Event,
    StageEvent,
    TrainerFailed,
    TrainerStage,
    TrainingProgress,
    ValidationImage,
)

INTERVAL_S = 1.0
# The pipeline's stages (core/pipeline.py) as a user reads them, with what the status says when one starts.
PIPELINE_STAGES: dict[str, tuple[str, str]] = {
    "dataset": ("downloading", "staging the dataset"),
    "preflight": ("checking", "checking the dataset"),
    "configure": ("checking", "writing the SimpleTuner config"),
    "model": ("downloading", "downloading the base model"),
    "train": ("loading", "starting SimpleTuner"),
    "publish": ("publishing", "publishing the LoRA"),
    "upload": ("publishing", "uploading the outputs"),
}
# Fields that only mean something during one stage; dropped when the stage changes.
STAGE_ONLY_FIELDS = {"downloading": ("bytes_done", "bytes_total")}


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def trainer_stage(key: str) -> str | None:
    """SimpleTuner's lifecycle stage key -> the stage a user sees (None: it does not change the stage)."""
    if "validation" in key:
        return "validating"
    if "cach" in key or "embed" in key or "data_backend" in key:
        return "caching"
    if "checkpoint_save" in key or "model_save" in key or key == "training_complete":
        return "training"
    if key.startswith("init"):
        return "loading"
    return None


def describe(event: Event) -> dict[str, Any] | None:
    """The status fields one event sets (None: the event changes nothing a user sees)."""
    if isinstance(event, TrainingProgress):
        return {"stage": "training", "message": f"step {event.step}/{event.total_steps}", "step": event.step,
                "total_steps": event.total_steps, "percent": _rounded(event.percent, 1),
                "loss": _rounded(event.loss, 6), "eta_s": _rounded(event.eta_s, 1)}
    if isinstance(event, StageEvent):
        stage, opening = PIPELINE_STAGES.get(event.stage, (event.stage, event.stage))
        if event.status == "started":
            return {"stage": stage, "message": event.message or opening}
        if event.status == "failed":
            return {"message": f"{event.stage} failed: {event.message}"}
        return {"message": event.message} if event.message else None
    if isinstance(event, DownloadProgress):
        return {"stage": "downloading", "message": f"downloading {event.source}", "bytes_done": event.bytes_done,
                "bytes_total": event.bytes_total}
    if isinstance(event, TrainerStage):
        if "resume" in event.key:
            # SimpleTuner reports this stage on every run; only "running" means it really resumes a checkpoint.
            return {"stage": "loading", "message": "resuming from the checkpoint"} if event.status == "running" \
                else None
        stage = trainer_stage(event.key)
        fields: dict[str, Any] = {"message": event.label or event.key.replace("_", " ")}
        if stage:
            fields["stage"] = stage
        return fields
    if isinstance(event, CheckpointSaved):
        return {"message": f"saved checkpoint-{event.step}" if event.step is not None else "saved a checkpoint"}
    if isinstance(event, ValidationImage):
        return {"message": f"validation image at step {event.step}"}
    if isinstance(event, TrainerFailed):
        return {"message": event.title}
    return None


class ProgressReporter:
    """Collects a job's events into its status and sends it through `send` at most once per `interval_s`."""

    def __init__(self, *, send: Callable[[dict[str, Any]], None], interval_s: float = INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic):
        self._send = send
        self._interval_s = interval_s
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()  # events arrive on the pipeline's and the webhook receiver's threads
        self._state: dict[str, Any] = {}
        self._version = 0
        self._sent_version = 0
        self.sent = 0

    def on_event(self, event: Event) -> None:
        """The pipeline's event sink: cheap, thread-safe, never sends by itself."""
        fields = describe(event)
        if not fields:
            return
        with self._lock:
            stage = fields.get("stage")
            if stage and stage != self._state.get("stage"):
                for name in STAGE_ONLY_FIELDS.get(self._state.get("stage", ""), ()):
                    self._state.pop(name, None)
            self._state.update({key: value for key, value in fields.items() if value is not None})
            self._version += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {**self._state, "elapsed_s": round(self._clock() - self._started, 1)}

    def flush(self) -> bool:
        """Send the state if it changed since the last send; True when it sent."""
        with self._lock:
            if self._version == self._sent_version:
                return False
            self._sent_version = self._version
            payload = {**self._state, "elapsed_s": round(self._clock() - self._started, 1)}
        try:
            self._send(payload)
        except Exception as exc:  # a status update must never fail the job it reports on
            print(f"worker: progress update failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            return False
        self.sent += 1
        return True

    async def run(self) -> None:
        """Send the latest state once per interval until cancelled (the handler cancels it when the job ends)."""
        while True:
            await asyncio.sleep(self._interval_s)
            self.flush()


def format_status(status: dict[str, Any]) -> str:
    """One log line for a status: what a developer sees where RunPod's status is not shown (local runs)."""
    parts = [f"[{status.get('stage', '?')}] {status.get('message', '')}"]
    if status.get("loss") is not None:
        parts.append(f"loss={status['loss']:.4f}")
    if status.get("eta_s") is not None:
        parts.append(f"eta={status['eta_s']:.0f}s")
    parts.append(f"elapsed={status.get('elapsed_s', 0):.0f}s")
    return " ".join(parts)
