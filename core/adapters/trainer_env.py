"""The trainer env (.venv-trainer: SimpleTuner, torch, diffusers): the one way core starts a process there.

    trainer = TrainerEnv(settings)
    done = trainer.run(TOOLS_DIR / "convert_lora.py", ["--family", "sdxl", folder], timeout_s=600)
    process = trainer.start(TOOLS_DIR / "caption_images.py", [request], device="cuda", stdout=subprocess.PIPE)
    trainer.stop(process)   # the whole process group: SIGTERM, then SIGKILL after a grace period

A tools/ script runs under the env's Python with `-P`, so the project root never lands on sys.path and no project
module can shadow a library's. Every process starts in its own process group (a library's worker processes are
stopped with it), led by tools/watchdog.py, which stops the group when the process that started it dies (a `kill -9`
of the app leaves no trainer behind), and gets `env()`: an allow-listed part of ours, never a secret unless the
caller passes it (the Hub token, for a gated model). A missing env is one SetupError naming TRAINER_VENV.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from core.errors import SetupError
from core.settings import TOOLS_DIR, Settings

STOP_GRACE_S = 5.0
WATCHDOG_SCRIPT = TOOLS_DIR / "watchdog.py"
"""Leads each process's group and stops it when the process that started it dies."""
POLL_S = 0.1
# Variables that keep SimpleTuner and its libraries off the network (docs/simpletuner-notes.md).
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "DIFFUSERS_OFFLINE": "1",
}
# Always set: no telemetry, no wandb, plain unbuffered output we can read line by line.
QUIET_ENV = {
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "WANDB_MODE": "disabled",
    "SIMPLETUNER_DISABLE_COLORS": "1",
    "SIMPLETUNER_DISABLE_TQDM": "1",
    "PYTHONUNBUFFERED": "1",
}
# The only variables a trainer-env process gets from ours (an allow-list: SimpleTuner expands `{env:NAME}`, and a
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


class TrainerEnv:
    """The trainer env of these settings. `base`: the environment the allow-list picks from (default os.environ;
    the UI passes its own)."""

    def __init__(self, settings: Settings, *, base: Mapping[str, str] | None = None):
        self.venv = settings.trainer_venv
        self.online = settings.online
        self.hf_home = settings.hf_home
        self.cuda_visible_devices = settings.cuda_visible_devices
        """The GPUs a process on the GPU may see: the settings' (a queued run's own share of the pod's), when set."""
        self._base = os.environ if base is None else base

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"

    def require(self) -> Path:
        """The env's Python; the one SetupError (field TRAINER_VENV) when the env is not there."""
        if not self.python.exists():
            raise _not_set_up(f"the trainer env is missing at {self.venv}")
        return self.python

    def installed(self, pattern: str) -> list[Path]:
        """Files of the env's site-packages matching `pattern` (e.g. "simpletuner/train.py"), sorted."""
        return sorted(self.venv.glob(f"lib/python3*/site-packages/{pattern}"))

    def require_installed(self, pattern: str, *, what: str) -> Path:
        """The last file of the env's site-packages matching `pattern`; a SetupError when `what` is not there."""
        self.require()
        found = self.installed(pattern)
        if not found:
            raise _not_set_up(f"{what} is not installed in the trainer env {self.venv}")
        return found[-1]

    def program(self, name: str, *, what: str) -> Path:
        """A program of the env's bin/ (accelerate); a SetupError when `what` is not there."""
        self.require()
        if not (self.bin / name).exists():
            raise _not_set_up(f"{what} is not installed in the trainer env {self.venv} (no bin/{name})")
        return self.bin / name

    def env(self, *, device: str = "cpu", hf_token: str | None = None, offline: bool | None = None,
            extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """A trainer-env process's environment: the allow-listed part of `base` with no credential in it, the env's
        bin first on PATH, offline unless the settings say online (`offline` overrides: a tool that never
        downloads), the CPU only for device "cpu", the Hub token only when given, then `extra`."""
        base = self._base
        env = {key: value for key, value in base.items() if _ENV_ALLOWED.match(key) and not _SECRET_NAME.search(key)}
        env["PATH"] = f"{self.bin}{os.pathsep}{base.get('PATH', '/usr/bin:/bin')}"
        env["VIRTUAL_ENV"] = str(self.venv)
        if (not self.online) if offline is None else offline:
            env.update(OFFLINE_ENV)
        env.update(QUIET_ENV)
        if self.hf_home:
            env["HF_HOME"] = str(self.hf_home)
        if device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
        elif self.cuda_visible_devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.cuda_visible_devices
        if hf_token:
            env["HF_TOKEN"] = hf_token  # gated base models; only ever through the environment
        env.update(extra or {})
        return env

    def run(self, script: Path, args: Sequence[str | Path] = (), *, timeout_s: float | None = None,
            device: str = "cpu", offline: bool | None = None, hf_token: str | None = None,
            extra_env: Mapping[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run a tools/ script to its end; its exit code and output (text). At `timeout_s` its whole process group
        is stopped and subprocess.TimeoutExpired raised."""
        process = self.start(script, args, device=device, offline=offline, hf_token=hf_token, extra_env=extra_env,
                             cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            stdout, stderr = process.communicate(timeout=timeout_s)
        except BaseException:
            self.stop(process, grace_s=1.0)  # a timeout or our own interruption: never left running
            for pipe in (process.stdout, process.stderr):
                if pipe is not None:
                    pipe.close()
            raise
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

    def start(self, script: Path, args: Sequence[str | Path] = (), *, device: str = "cpu",
              offline: bool | None = None, hf_token: str | None = None, extra_env: Mapping[str, str] | None = None,
              cwd: Path | None = None, stdin: int | IO[Any] | None = subprocess.DEVNULL,
              stdout: int | IO[Any] | None = None, stderr: int | IO[Any] | None = None, text: bool = False,
              bufsize: int = -1) -> subprocess.Popen:
        """Start a tools/ script under the env's Python with -P, in a process group of its own."""
        return self.launch([str(self.require()), "-P", str(script), *map(str, args)], device=device, offline=offline,
                           hf_token=hf_token, extra_env=extra_env, cwd=cwd, stdin=stdin, stdout=stdout,
                           stderr=stderr, text=text, bufsize=bufsize)

    def launch(self, command: Sequence[str], *, device: str = "cpu", offline: bool | None = None,
               hf_token: str | None = None, extra_env: Mapping[str, str] | None = None, cwd: Path | None = None,
               stdin: int | IO[Any] | None = subprocess.DEVNULL, stdout: int | IO[Any] | None = None,
               stderr: int | IO[Any] | None = None, text: bool = False, bufsize: int = -1) -> subprocess.Popen:
        """Start one of the env's own programs (SimpleTuner's accelerate launch) with `env()`, in a process group of
        its own, tied to this process: tools/watchdog.py leads the group and stops it when this process dies, by
        any signal (the returned process is the watchdog; its exit code is the program's)."""
        python = self.require()
        # The read end goes to the watchdog only; the write end stays here (os.pipe's ends are not inherited by
        # other children), so its end-of-file means this process is gone. Closed when the Popen is collected.
        read_end, write_end = os.pipe()
        try:
            process = subprocess.Popen(
                [str(python), "-P", str(WATCHDOG_SCRIPT), str(read_end), "--", *map(str, command)], cwd=cwd,
                stdin=stdin, stdout=stdout, stderr=stderr, text=text, bufsize=bufsize, start_new_session=True,
                pass_fds=(read_end,), env=self.env(device=device, hf_token=hf_token, offline=offline,
                                                   extra=extra_env))
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        weakref.finalize(process, os.close, write_end)
        return process

    @staticmethod
    def running(process: subprocess.Popen) -> bool:
        """The process, or any process of its group, is still there."""
        return process.poll() is None or _group_alive(process.pid)

    @staticmethod
    def stop(process: subprocess.Popen, *, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM the process's whole group, SIGKILL what is left after `grace_s`, reap the leader."""
        pgid = process.pid  # start_new_session: the leader's pid is the group's id
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and (process.poll() is None or _group_alive(pgid)):
            time.sleep(POLL_S)
        _signal_group(pgid, signal.SIGKILL)
        process.wait()
        while _group_alive(pgid) and time.monotonic() < deadline + grace_s:
            time.sleep(POLL_S)


def _not_set_up(what: str) -> SetupError:
    return SetupError(f"{what} (run `make setup`, or set TRAINER_VENV)", field="TRAINER_VENV")


def _signal_group(pgid: int, sig: int) -> None:
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
