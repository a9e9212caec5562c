"""The command line: `python -m core run|check JOB.json`, `python -m core demo-model DIR`, `demo-dataset DIR`.

Progress goes to stderr, one line per event; the result (or the error) is one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

from core.demo import build_tiny_model, write_demo_dataset
from core.errors import JobError, SpecError
from core.events import Event, LogLine, TrainingProgress
from core.settings import Settings
from core.spec import parse_job


def format_event(event: Event) -> str:
    data = event.to_dict()
    if isinstance(event, TrainingProgress):
        loss = f" loss={event.loss:.4f}" if event.loss is not None else ""
        eta = f" eta={event.eta_s:.0f}s" if event.eta_s is not None else ""
        return f"[train] step {event.step}/{event.total_steps}{loss}{eta}"
    kind = data.pop("type")
    return f"[{kind}] " + " ".join(f"{key}={value}" for key, value in data.items() if value not in (None, ""))


def _print_event(event: Event) -> None:
    if isinstance(event, LogLine) and event.severity.lower() not in ("warning", "error", "critical"):
        return  # SimpleTuner's info chatter is in the job's training.log
    print(format_event(event), file=sys.stderr, flush=True)


def _load(path: str) -> object:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise SpecError(f"cannot read the job file {path}: {exc.strerror}", field="job_file") from None


def _emit(document: dict) -> None:
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _run(args: argparse.Namespace, *, dry_run: bool) -> int:
    from core.pipeline import run_job  # the dataset stage's imports are only needed here

    settings = Settings.from_env()
    spec = parse_job(_load(args.job))
    if dry_run:
        spec.dry_run = True
    workdir = Path(args.workdir) if args.workdir else (
        settings.data_root / "jobs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}")
    cancel = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: cancel.set())
    result = run_job(spec, workdir, _print_event, settings=settings, cancel=cancel)
    _emit(result.to_output())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core",
                                     description="Train a LoRA with SimpleTuner from a job JSON.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("run", "train the job and publish it"),
                       ("check", "stage and check the dataset, print the resolved SimpleTuner files; no training")):
        command = commands.add_parser(name, help=text)
        command.add_argument("job", help="the job JSON file (bare, or RunPod's {\"input\": ...})")
        command.add_argument("--workdir", help="the job's directory (default: $DATA_DIR/jobs/<id>)")
    model = commands.add_parser("demo-model", help="write the tiny random SDXL model (offline)")
    model.add_argument("dir")
    data = commands.add_parser("demo-dataset", help="write a small captioned demo dataset")
    data.add_argument("dir")
    data.add_argument("--count", type=int, default=8)
    args = parser.parse_args(argv)
    try:
        if args.command == "demo-model":
            print(build_tiny_model(Path(args.dir), settings=Settings.from_env()))
            return 0
        if args.command == "demo-dataset":
            print(write_demo_dataset(Path(args.dir).absolute(), count=args.count))
            return 0
        return _run(args, dry_run=args.command == "check")
    except JobError as error:
        _emit({"error": error.to_payload()})
        return 1


if __name__ == "__main__":
    sys.exit(main())
