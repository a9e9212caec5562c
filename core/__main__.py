"""The command line: `python -m core run|check JOB.json`, `python -m core demo-model DIR`, `demo-dataset DIR`,
`demo-captioner DIR`.

Its contract: progress goes to stderr, one line each time the job's status changes (core/status.py); stdout holds
one JSON document, the result or `{"error": {"code", "stage", "message", "field"}}`, and the exit status is 0 or 1.
Whatever fails (a bad job, a job folder that cannot be written, a full disk, a bug of ours), stdout holds that error
shape and no traceback, and the job folder's result.json says how the job ended: one left half-written says failed.
No secret of the job (its token, the endpoint's keys, URL credentials) is printed or written.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.cancel import Cancel
from core.errors import ErrorCode, JobError, SpecError
from core.events import Event, JobWarning, LogLine, TrainerFailed
from core.generation import TINY_FAMILIES, build_tiny_captioner, build_tiny_model, write_demo_dataset
from core.jobdir import JobDir, job_folder
from core.secrets import job_secrets, scrub
from core.settings import Settings
from core.spec import parse_job
from core.status import JobStatus, apply, summary

RESULT_FILE = "result.json"
"""In the job folder: "running" while the job runs, then the printed result, or {"status": "failed", "error"}."""
ERROR_LOG = "error.log"
"""In the job folder, after a bug of ours: the traceback (scrubbed), which stdout never shows."""


class ProgressLines:
    """The job's event sink: folds each event into its status and prints the status line when it changes, plus
    warnings and errors as they come. Thread-safe: SimpleTuner's events arrive on the webhook receiver's thread."""

    def __init__(self, *, secrets: list[str]):
        self.secrets = secrets
        self.status = JobStatus()
        self._shown = ""
        self._lock = threading.Lock()

    def on_event(self, event: Event) -> None:
        with self._lock:
            self.status = apply(self.status, event)
            said = _said(event)
            if said:
                print(scrub(said, secrets=self.secrets), file=sys.stderr, flush=True)
            line = scrub(summary(self.status), secrets=self.secrets)
            if line != self._shown:
                print(line, file=sys.stderr, flush=True)
                self._shown = line


def _said(event: Event) -> str:
    """What an event says beyond the status line: warnings and errors (SimpleTuner's info chatter is in the job's
    training.log)."""
    if isinstance(event, JobWarning):
        return f"[warning] {event.field}: {event.message}" if event.field else f"[warning] {event.message}"
    if isinstance(event, LogLine) and event.severity.lower() in ("warning", "error", "critical"):
        return f"[{event.severity.lower()}] {event.message}"
    if isinstance(event, TrainerFailed):
        return f"[error] {event.title}: {event.message}"
    return ""


def error_payload(error: BaseException, *, stage: str) -> dict[str, Any]:
    """The one error shape for any failure: a JobError's own payload; an OS error (a full disk, a folder that
    cannot be written) named with its file; anything else as an internal error naming the exception."""
    if isinstance(error, JobError):
        return error.to_payload()
    if isinstance(error, OSError):
        where = f": {error.filename}" if error.filename else ""
        if error.errno == errno.ENOSPC:
            return {"code": "disk_full", "stage": stage, "field": None,
                    "message": f"no space left on the device{where}: free some space, or give --workdir or DATA_DIR "
                               "on a larger disk"}
        return {"code": "io_error", "stage": stage, "field": None,
                "message": f"{error.strerror or type(error).__name__}{where}"}
    return {"code": ErrorCode.INTERNAL_ERROR.value, "stage": stage, "field": None,
            "message": f"{type(error).__name__}: {error}"}


@dataclass
class Session:
    """One command's state, for the error path: where its job folder is, what it must not show, how far it got."""

    secrets: list[str] = field(default_factory=list)
    progress: ProgressLines | None = None
    job_root: Path | None = None

    @property
    def stage(self) -> str:
        return (self.progress.status.pipeline_stage if self.progress else "") or "setup"


def _load(path: str) -> str:
    try:
        return Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read the job file {path}: {exc.strerror}", field="job_file") from None
    except UnicodeDecodeError:
        raise SpecError(f"the job file {path} is not UTF-8 text (a JSON file is)", field="job_file") from None


def _emit(document: dict) -> None:
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")
    sys.stdout.flush()


def _open_job_folder(root: Path, *, field_name: str) -> None:
    """Create the job folder and mark it running; a path that cannot be one is an error naming where it came from."""
    try:
        JobDir(root).create()
        _write_result(root, {"status": "running", "pid": os.getpid(), "started_at": time.time()})
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if exc.errno == errno.ENOSPC:
            reason = "no space left on the device"
        raise JobError(f"cannot use {root} as the job folder: {reason}"
                       + (f" ({exc.filename})" if exc.filename and str(exc.filename) != str(root) else ""),
                       field=field_name, code=ErrorCode.WORKDIR_UNUSABLE, stage="setup") from None


def _write_result(root: Path, document: dict) -> None:
    """result.json in the job folder, replaced whole (a reader never sees half of one)."""
    temporary = root / f".{RESULT_FILE}.tmp"
    temporary.write_text(json.dumps(document, indent=2) + "\n")
    temporary.replace(root / RESULT_FILE)


def _run(args: argparse.Namespace, session: Session) -> dict[str, Any]:
    from core.pipeline import check_job, run_job  # the dataset stage's imports are only needed here

    settings = Settings.from_env()
    session.secrets = job_secrets(None, settings=settings)
    text = _load(args.job)
    session.secrets = job_secrets(_raw_json(text), settings=settings)
    spec = parse_job(text)
    session.secrets = job_secrets(spec, settings=settings)
    session.progress = ProgressLines(secrets=session.secrets)
    if args.workdir:
        root, field_name = Path(args.workdir).absolute(), "workdir"
    else:
        root, field_name = job_folder(settings.data_root), "DATA_DIR"
    _open_job_folder(root, field_name=field_name)
    session.job_root = root
    cancel = Cancel()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: cancel.set())
    run = check_job if args.command == "check" else run_job
    result = run(spec, root, session.progress.on_event, settings=settings, cancel=cancel)
    output = result.to_output()
    # Messages are scrubbed; the URLs of the result (the Hub's, storage's presigned ones) are the result itself.
    for name in ("warnings", "preflight", "trainer_files"):
        if name in output:
            output[name] = scrub(output[name], secrets=session.secrets)
    _write_result(root, output)
    return output


def _raw_json(text: str) -> Any:
    """The job's JSON before it is validated, for its secrets: an invalid job's token stays hidden too."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _fail(error: BaseException, session: Session) -> int:
    payload = scrub(error_payload(error, stage=session.stage), secrets=session.secrets)
    if not isinstance(error, (JobError, OSError)):
        where = _log_traceback(error, session)
        print(f"core: internal error ({payload['message']}){where}", file=sys.stderr, flush=True)
    if session.job_root is not None:
        try:
            _write_result(session.job_root, {"status": "failed", "error": payload})
        except OSError as exc:
            print(f"core: could not write {session.job_root / RESULT_FILE}: {exc.strerror}", file=sys.stderr,
                  flush=True)
    _emit({"error": payload})
    return 1


def _log_traceback(error: BaseException, session: Session) -> str:
    """The traceback goes to the job folder's error.log (never stdout); returns where, for the note."""
    if session.job_root is None:
        return ""
    text = "".join(traceback.format_exception(error))
    try:
        (session.job_root / ERROR_LOG).write_text(scrub(text, secrets=session.secrets))
    except OSError:
        return ""
    return f"; traceback in {session.job_root / ERROR_LOG}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core",
                                     description="Train a LoRA with SimpleTuner from a job JSON.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("run", "train the job and publish it"),
                       ("check", "stage and check the dataset, print the resolved SimpleTuner files; no training")):
        command = commands.add_parser(name, help=text)
        command.add_argument("job", help="the job JSON file (bare, or RunPod's {\"input\": ...})")
        command.add_argument("--workdir", help="the job's directory (default: $DATA_DIR/jobs/<id>)")
    model = commands.add_parser("demo-model", help="write a tiny random model (offline; SDXL unless --family)")
    model.add_argument("dir")
    model.add_argument("--family", choices=TINY_FAMILIES, default="sdxl")
    model.add_argument("--flavour", help="a variant of the tiny model: flux kontext; wan t2v (default), i2v, ti2v")
    captioner = commands.add_parser("demo-captioner", help="write a tiny random Florence-2 captioner (offline)")
    captioner.add_argument("dir")
    data = commands.add_parser("demo-dataset", help="write a small captioned demo dataset")
    data.add_argument("dir")
    data.add_argument("--count", type=int, default=8)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    session = Session()
    try:
        if args.command == "demo-model":
            print(build_tiny_model(Path(args.dir), settings=Settings.from_env(), family=args.family,
                                   flavour=args.flavour))
            return 0
        if args.command == "demo-captioner":
            print(build_tiny_captioner(Path(args.dir), settings=Settings.from_env()))
            return 0
        if args.command == "demo-dataset":
            print(write_demo_dataset(Path(args.dir).absolute(), count=args.count))
            return 0
        # stdout is the result's alone: anything a library prints while the job runs goes to stderr.
        with contextlib.redirect_stdout(sys.stderr):
            output = _run(args, session)
        _emit(output)
        return 0
    except Exception as error:  # the contract: every failure is the error JSON and exit status 1
        return _fail(error, session)


if __name__ == "__main__":
    sys.exit(main())
