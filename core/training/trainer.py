"""The only place SimpleTuner is started: a subprocess of the trainer env, in the job's own working directory and
process group, its progress read from SimpleTuner's raw webhooks by a receiver on 127.0.0.1.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from core.cancel import Cancel, StopFlag
from core.errors import SetupError, TrainingError
from core.events import (
    CheckpointSaved,
    Event,
    EventSink,
    LogLine,
    TrainerFailed,
    TrainerStage,
    TrainingProgress,
    ValidationImage,
    ignore_event,
)
from core.jobdir import JobDir
from core.settings import OFFLINE_ENV, Settings
from core.simpletuner import VALIDATION_SUFFIXES, expected_output
from core.training.config import TrainerFiles

LORA_FILE = "pytorch_lora_weights.safetensors"
CANCEL_GRACE_S = 5.0
POLL_S = 0.1
# The only variables a training process gets from ours (an allow-list: SimpleTuner expands `{env:NAME}`, and a
# hook or library could read anything else): the system, the caches, CUDA/NCCL and the offline/telemetry switches.
_ENV_ALLOWED = re.compile(
    r"^(PATH|HOME|USER|LOGNAME|LANG|LANGUAGE|TZ|TERM|TMPDIR|TMP|TEMP|HOSTNAME|LD_LIBRARY_PATH|XDG_CACHE_HOME"
    r"|SSL_CERT_FILE|SSL_CERT_DIR|REQUESTS_CA_BUNDLE|CURL_CA_BUNDLE|HTTPS?_PROXY|NO_PROXY|https?_proxy|no_proxy"
    r"|HF_HOME|HF_HUB_CACHE|HF_ENDPOINT|HF_HUB_OFFLINE|HF_HUB_DISABLE_[A-Z_]+|HF_HUB_ENABLE_HF_TRANSFER"
    r"|HF_DATASETS_OFFLINE|HF_DATASETS_CACHE|TRANSFORMERS_OFFLINE|TRANSFORMERS_CACHE|DIFFUSERS_OFFLINE"
    r"|WANDB_MODE|TORCH_HOME|MASTER_ADDR|MASTER_PORT|SIMPLETUNER_LOG_LEVEL"
    r"|LC_[A-Z]+|CUDA_[A-Z0-9_]+|NCCL_[A-Z0-9_]+|NVIDIA_[A-Z0-9_]+|TORCH_[A-Z0-9_]+|PYTORCH_[A-Z0-9_]+"
    r"|TORCHINDUCTOR_[A-Z0-9_]+|TRITON_[A-Z0-9_]+|OMP_[A-Z_]+|MKL_[A-Z_]+)$"
)
# Never passed on, even when the allow-list's patterns match: names that hold a credential.
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|_KEY$|^KEY|_AUTH|AUTH_", re.IGNORECASE)


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
        match = re.search(r"checkpoint-(\d+)", path)
        return [CheckpointSaved(path=path, step=int(match.group(1)) if match else None,
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
        elif isinstance(event, TrainerFailed):
            self.error = event


def trainer_env(settings: Settings, *, device: str, hf_token: str | None,
                base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The training process's environment: the allow-listed part of ours (a pure function of `base`), plus the
    launcher's and offline settings; the Hub token only when given (a download that needs it)."""
    base = os.environ if base is None else base
    env = {key: value for key, value in base.items() if _ENV_ALLOWED.match(key) and not _SECRET_NAME.search(key)}
    env["PATH"] = f"{settings.trainer_bin}{os.pathsep}{base.get('PATH', '/usr/bin:/bin')}"
    env["VIRTUAL_ENV"] = str(settings.trainer_venv)
    env.pop("PYTHONPATH", None)
    if not settings.online:
        env.update(OFFLINE_ENV)
    env.update({"HF_HUB_DISABLE_TELEMETRY": "1", "WANDB_MODE": "disabled", "SIMPLETUNER_DISABLE_COLORS": "1",
                "SIMPLETUNER_DISABLE_TQDM": "1", "PYTHONUNBUFFERED": "1"})
    if settings.hf_home:
        env["HF_HOME"] = str(settings.hf_home)
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    if hf_token:
        env["HF_TOKEN"] = hf_token  # gated base models; only ever through the environment
    return env


def launch_command(settings: Settings, *, mixed_precision: str, gpu_count: int) -> list[str]:
    """What `simpletuner train` runs, started by us: its CLI puts accelerate in a session of its own (setsid) and
    does not pass SIGTERM on, so a cancel could never reach the training process through it."""
    accelerate = settings.trainer_bin / "accelerate"
    scripts = sorted(settings.trainer_venv.glob("lib/python3*/site-packages/simpletuner/train.py"))
    if not accelerate.exists() or not scripts:
        raise SetupError(f"SimpleTuner is not installed in the trainer env {settings.trainer_venv} "
                         "(run `make setup`, or set TRAINER_VENV)", field="TRAINER_VENV")
    return [str(accelerate), "launch", f"--mixed_precision={mixed_precision}",
            f"--num_processes={max(gpu_count, 1)}", "--num_machines=1", "--dynamo_backend=no", str(scripts[-1])]


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(process: subprocess.Popen, *, grace_s: float = CANCEL_GRACE_S) -> None:
    """SIGTERM the whole process group, SIGKILL what is left after the grace period, reap the leader."""
    pgid = process.pid
    _kill_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and (process.poll() is None or _group_alive(pgid)):
        time.sleep(POLL_S)
    _kill_group(pgid, signal.SIGKILL)
    process.wait()
    while _group_alive(pgid) and time.monotonic() < deadline + grace_s:
        time.sleep(POLL_S)


def _step_of(name: str) -> int | None:
    match = re.match(r"step_(\d+)_", name)
    return int(match.group(1)) if match else None


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


def train(files: TrainerFiles, job: JobDir, *, settings: Settings, device: str, gpu_count: int = 0,  # noqa: C901 (the one subprocess lifecycle: start, watch, stop, classify the end)
          hf_token: str | None = None, on_event: EventSink = ignore_event,
          cancel: Cancel | StopFlag | None = None, start_step: int = 0) -> TrainingOutcome:
    """Run SimpleTuner on these files until it finishes, fails (TrainingError), or `cancel` stops it (its process
    group is killed; JobCancelled, or JobTimeout at the job's deadline). `start_step`: the checkpoint a resumed run
    continues from (SimpleTuner first re-reports that step, with no loss of its own)."""
    command = launch_command(settings, mixed_precision=str(files.config.get("--mixed_precision", "no")),
                             gpu_count=gpu_count if device == "cuda" else 0)
    cancel = Cancel.of(cancel)
    outcome = TrainingOutcome(steps=start_step)
    lock = threading.Lock()  # the receiver serves each request on its own thread

    def on_raw(payload: dict) -> None:
        with lock:
            _handle(payload)

    seen_images: set[Path] = set()

    def _new_validation_images() -> list[Event]:
        folder = job.output / "validation_images"
        # Images, and videos for the video families (Wan writes step_<N>_<name>_<i>_<WxH>.mp4): reported alike.
        found = sorted({p for p in folder.iterdir() if p.suffix.lower() in VALIDATION_SUFFIXES} - seen_images) \
            if folder.is_dir() else []
        seen_images.update(found)
        prompt = str(files.config.get("--validation_prompt") or "")
        # SimpleTuner also renders an unconditional image (no prompt) beside each prompted one.
        return [ValidationImage(path=str(path), step=_step_of(path.name),
                                prompt="" if "_unconditional_" in path.name else prompt) for path in found]

    def _handle(payload: dict) -> None:
        events = translate_event(payload)
        if any(isinstance(e, TrainerStage) and "validation" in e.key and e.status == "completed" for e in events):
            events += _new_validation_images()
        for event in events:
            if isinstance(event, TrainingProgress) and event.step <= outcome.steps:
                continue  # SimpleTuner repeats a step's status around a checkpoint: one event per step
            outcome.record(event)
            on_event(event)

    with WebhookReceiver(on_raw) as receiver, job.log.open("ab") as log:
        files.write(job, webhook_url=receiver.url)
        env = trainer_env(settings, device=device, hf_token=hf_token)
        env.update(CONFIG_BACKEND="json", CONFIG_PATH=str(job.config / "config"))  # SimpleTuner adds ".json"
        started = time.monotonic()
        process = subprocess.Popen(
            command, cwd=job.trainer, env=env, stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        stopped = False
        try:
            while process.poll() is None:
                if cancel.is_set():
                    stopped = True
                    stop_group(process)
                    break
                cancel.wait(POLL_S)
        finally:
            if process.poll() is None or _group_alive(process.pid):
                stop_group(process, grace_s=1.0)  # an exception here must not leave SimpleTuner running
        outcome.elapsed_s = time.monotonic() - started
    outcome.checkpoints = sorted({p for p in job.output.glob("checkpoint-*") if p.is_dir()},
                                 key=lambda p: int(p.name.split("-")[-1]) if p.name.split("-")[-1].isdigit() else 0)
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
