"""The only place SimpleTuner is started: a subprocess of the trainer env (core/adapters/trainer_env.py: its
environment, its process group, its stop), in the job's own working directory, its progress read from SimpleTuner's
raw webhooks by a receiver on 127.0.0.1.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from core.adapters import GpuFacts, ProcessMark, TrainerEnv
from core.cancel import Cancel, StopFlag
from core.errors import TrainingError
from core.events import (
    CheckpointSaved,
    EvalLoss,
    Event,
    EventSink,
    LogLine,
    TrainerFailed,
    TrainerStage,
    TrainerStarted,
    TrainingProgress,
    ValidationImage,
    ignore_event,
)
from core.jobdir import JobDir
from core.outputs import SAMPLE_IMAGE, SAMPLE_SHORTNAME, checkpoint_step, checkpoints, sample_step, validation_files
from core.settings import TOOLS_DIR, Settings
from core.simpletuner import expected_output
from core.training.accelerate_config import CPU_RANKS_ENV, accelerate_config, free_port, write_accelerate_config
from core.training.config import RUNS_DIR, TrainerFiles
from core.training.control import TrainingControl, can_sample
from core.training.eval_loss import EvalLossReader
from core.training.samples import LIBRARY_FILE
from core.training.tensorboard import TensorBoardLog

POLL_S = 0.1
EVAL_READ_S = 1.0
"""How often the evaluation losses SimpleTuner logged are read (core/training/eval_loss.py)."""


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def translate_event(raw: Mapping[str, Any]) -> list[Event]:
    """One raw SimpleTuner webhook payload -> our typed events (docs/simpletuner-notes.md lists the shapes seen)."""
    kind = raw.get("type")
    if kind == "training.status":
        progress = raw.get("progress") or {}
        metrics = progress.get("metrics") or {}
        step = progress.get("current")
        total = progress.get("total")
        if step is None or total is None or not step:
            return []  # the opening status (step 0) carries no training step
        return [TrainingProgress(
            step=int(step), total_steps=int(total), loss=_number(metrics.get("loss")),
            learning_rate=_number(metrics.get("learning_rate")), eta_s=_number(progress.get("eta_seconds")),
            percent=_number(progress.get("percent")),
        )]
    if kind == "training.checkpoint":
        checkpoint = raw.get("checkpoint") or {}
        path = str(checkpoint.get("path") or "")
        return [CheckpointSaved(path=path, step=checkpoint_step(path),
                                is_final=bool(checkpoint.get("is_final")))]
    if kind == "lifecycle.stage":
        stage = raw.get("stage") or {}
        return [TrainerStage(key=str(stage.get("key", "")), status=str(stage.get("status", "")),
                             label=str(stage.get("label") or stage.get("title") or ""))]
    if kind == "error":
        return [TrainerFailed(title=str(raw.get("title", "")), message=str(raw.get("message", "")))]
    if kind in ("log.message", "notification"):
        message = raw.get("message") or raw.get("title") or ""
        return [LogLine(message=str(message), severity=str(raw.get("severity") or raw.get("level") or "info"))] \
            if message else []
    return []


class WebhookReceiver:
    """A tiny HTTP server on 127.0.0.1 that SimpleTuner posts its raw webhook events to."""

    def __init__(self, on_raw):
        on_raw_event = on_raw

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                try:
                    payload = json.loads(body or b"{}")
                except json.JSONDecodeError:
                    return
                if isinstance(payload, dict):
                    on_raw_event(payload)

            def log_message(self, *args) -> None:
                """Quiet: the job's events are the log."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="webhook-receiver")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/webhook"

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class TrainingOutcome:
    steps: int = 0
    total_steps: int | None = None
    losses: list[float] = field(default_factory=list)
    checkpoints: list[Path] = field(default_factory=list)
    """The checkpoint-N folders left in the output at the end (SimpleTuner prunes old ones)."""
    validation_images: list[ValidationImage] = field(default_factory=list)
    eval_losses: list[tuple[int, float]] = field(default_factory=list)
    """(step, evaluation loss on the held-out images), in step order."""
    elapsed_s: float = 0.0
    error: TrainerFailed | None = None

    @property
    def final_loss(self) -> float | None:
        return self.losses[-1] if self.losses else None

    def record(self, event: Event) -> None:
        if isinstance(event, TrainingProgress):
            self.steps = max(self.steps, event.step)
            self.total_steps = event.total_steps
            if event.loss is not None:
                self.losses.append(event.loss)
        elif isinstance(event, ValidationImage):
            self.validation_images.append(event)
        elif isinstance(event, EvalLoss):
            self.eval_losses.append((event.step, event.loss))
        elif isinstance(event, TrainerFailed):
            self.error = event


def trackers_env(files: TrainerFiles, settings: Settings) -> dict[str, str]:
    """What the trackers need in SimpleTuner's environment: WANDB_API_KEY (never in a file or a log; the allow-list
    passes no key on its own) and W&B switched on, only when the run reports to wandb and the key is set."""
    chosen = {token.strip().lower() for token in str(files.config.get("--report_to") or "").split(",")}
    if "wandb" not in chosen or settings.wandb_api_key is None:
        return {}
    return {"WANDB_API_KEY": settings.wandb_api_key.get_secret_value(), "WANDB_MODE": "online"}


FIXED_FAMILIES = frozenset({"ltxvideo"})
"""Families SimpleTuner 4.10.1 cannot train as shipped: their runs start tools/simpletuner_train.py, which applies
the family's fix and runs SimpleTuner's train.py (LTX-Video: its text-embedding cache builds LTXPipeline without
the scheduler it requires)."""
FIXED_TRAIN_SCRIPT = TOOLS_DIR / "simpletuner_train.py"


def launch_command(trainer: TrainerEnv, *, config_file: Path, family: str | None = None) -> list[str]:
    """What `simpletuner train` runs, started by us: its CLI puts accelerate in a session of its own (setsid) and
    does not pass SIGTERM on, so a cancel could never reach the training process through it. Every launch setting
    is in `config_file` (core/training/accelerate_config.py): accelerate then never reads a default_config.yaml.
    A family in FIXED_FAMILIES runs train.py through its fix."""
    accelerate = trainer.program("accelerate", what="SimpleTuner")
    script = trainer.require_installed("simpletuner/train.py", what="SimpleTuner")
    if family in FIXED_FAMILIES:
        script = FIXED_TRAIN_SCRIPT
    return [str(accelerate), "launch", "--config_file", str(config_file), str(script)]


def write_launch_config(files: TrainerFiles, job: JobDir, *, device: str, gpu: GpuFacts | None,
                        processes: int) -> Path:
    """This run's accelerate config (processes, GPUs, precision, a free rendezvous port) in the job's config
    folder; its path."""
    config = accelerate_config(device=device, processes=processes, gpu_ids=gpu.ids if gpu else (),
                               mixed_precision=str(files.config.get("--mixed_precision", "no")), port=free_port())
    return write_accelerate_config(job.config, config)


def _log_tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return ""
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - 16384))
        return b"\n".join(handle.read().splitlines()[-lines:]).decode("utf-8", "replace")


def _error_from_log(tail: str) -> str | None:
    """SimpleTuner's last error line in the log, for failures that never reached its webhook."""
    for line in reversed(tail.splitlines()):
        if re.search(r"(Error|Exception)\b.*:", line) and "Traceback" not in line:
            return line.strip()
    return None


def train(files: TrainerFiles, job: JobDir, *, settings: Settings, device: str,  # noqa: C901 (the one subprocess lifecycle: start, watch, stop, classify the end)
          gpu: GpuFacts | None = None, processes: int = 1, hf_token: str | None = None,
          on_event: EventSink = ignore_event, cancel: Cancel | StopFlag | None = None,
          start_step: int = 0, control: TrainingControl | None = None) -> TrainingOutcome:
    """Run SimpleTuner on these files until it finishes, fails (TrainingError), or `cancel` stops it (its process
    group is killed; JobCancelled, or JobTimeout at the job's deadline). `gpu`: the GPUs the device plan chose;
    `processes`: how many train (accelerate_config.world_size). `start_step`: the checkpoint a resumed run
    continues from (SimpleTuner first re-reports that step, with no loss of its own). `control`: takes "checkpoint
    now" and "samples now" requests while this run trains (core/training/control.py; one process only)."""
    trainer = TrainerEnv(settings)
    command = launch_command(trainer, config_file=write_launch_config(files, job, device=device, gpu=gpu,
                                                                      processes=processes),
                             family=str(files.config.get("--model_family") or ""))
    cpu_ranks = CPU_RANKS_ENV if device != "cuda" and processes > 1 else {}
    cancel = Cancel.of(cancel)
    outcome = TrainingOutcome(steps=start_step)
    lock = threading.Lock()  # the receiver serves each request on its own thread

    def on_raw(payload: dict) -> None:
        with lock:
            _handle(payload)

    seen_images: set[Path] = set()
    metrics = TensorBoardLog(job.output / RUNS_DIR / str(files.config.get("--tracker_project_name") or "training"))

    def _new_validation_images() -> list[Event]:
        # Images, and videos for the video families (Wan writes step_<N>_<name>_<i>_<WxH>.mp4): reported alike.
        found = [path for path in validation_files(job.output) if path not in seen_images]
        seen_images.update(found)
        # SimpleTuner also renders an unconditional image (no prompt) beside each prompted one.
        return [ValidationImage(path=str(path), step=sample_step(path.name),
                                prompt="" if "_unconditional_" in path.name else image_prompt(path.name, files))
                for path in found]

    evals = EvalLossReader(job.output)

    def _read_eval_losses() -> None:
        with lock:
            seen = {step for step, _ in outcome.eval_losses}
            for event in evals.read():
                if event.step not in seen:  # a resumed run's file may hold the steps before it
                    outcome.record(event)
                    on_event(event)

    def _handle(payload: dict) -> None:
        events = translate_event(payload)
        if any(isinstance(e, TrainerStage) and "validation" in e.key and e.status == "completed" for e in events):
            events += _new_validation_images()
        for event in events:
            if isinstance(event, TrainingProgress) and event.step <= outcome.steps:
                continue  # SimpleTuner repeats a step's status around a checkpoint: one event per step
            outcome.record(event)
            metrics.on_event(event)
            on_event(event)

    with WebhookReceiver(on_raw) as receiver, job.log.open("ab") as log:
        files.write(job, webhook_url=receiver.url)
        control_env = control.attach(job.config, samples=can_sample(files.config)) \
            if control is not None and processes == 1 else {}
        started = time.monotonic()
        process = trainer.launch(command, device=device, hf_token=hf_token, cwd=job.trainer, stdout=log,
                                 stderr=subprocess.STDOUT,
                                 extra_env={"CONFIG_BACKEND": "json", **cpu_ranks, **control_env,
                                            **trackers_env(files, settings),
                                            "CONFIG_PATH": str(job.config / "config")})  # SimpleTuner adds ".json"
        stopped = False
        next_read = time.monotonic() + EVAL_READ_S
        try:
            mark = ProcessMark.of(process.pid)
            if mark is not None:  # what a restarted app checks before it calls this run interrupted
                on_event(TrainerStarted(pid=mark.pid, pgid=mark.pgid, started=mark.started))
            while process.poll() is None:
                if cancel.is_set():
                    stopped = True
                    trainer.stop(process)
                    break
                cancel.wait(POLL_S)
                if time.monotonic() >= next_read:
                    _read_eval_losses()
                    next_read = time.monotonic() + EVAL_READ_S
        finally:
            if control is not None:
                control.detach()
            if trainer.running(process):
                trainer.stop(process, grace_s=1.0)  # an exception here must not leave SimpleTuner running
        _read_eval_losses()
        outcome.elapsed_s = time.monotonic() - started
    outcome.checkpoints = checkpoints(job.output)  # every one left, complete or not
    tail = _log_tail(job.log)
    if stopped:
        cancel.check(f"during training at step {outcome.steps}", stage="train")
    if process.returncode != 0:
        message = outcome.error.message if outcome.error and outcome.error.message else _error_from_log(tail)
        title = outcome.error.title if outcome.error else "SimpleTuner failed"
        raise TrainingError(f"{title}: {message or f'exit code {process.returncode}'}",
                            exit_code=process.returncode, log_tail=tail)
    expected = expected_output(job.output, files.config)  # the LoRA file, or a full fine-tune's pipeline
    if not expected.exists():
        raise TrainingError(f"SimpleTuner finished without writing {expected.relative_to(job.output)}", exit_code=0,
                            log_tail=tail)
    return outcome


def image_prompt(name: str, files: TrainerFiles) -> str:
    """The prompt a validation image was rendered from: a sample's own (the prompt library's entry its file
    names), else the job's validation prompt."""
    match = SAMPLE_IMAGE.match(name)
    library = files.inline_files.get(LIBRARY_FILE)
    if match and isinstance(library, dict):
        entry = library.get(SAMPLE_SHORTNAME.format(int(match.group(2))))
        text = entry.get("prompt") if isinstance(entry, dict) else entry
        if text:
            return str(text)
    return str(files.config.get("--validation_prompt") or "")
