"""The UI's run history: a small JSON record per training run in DATA_DIR/history, so a restarted app (a pod
restart) still lists every run, its result, and the checkpoint an interrupted one can resume from.

A record is written when a run starts, when its trainer starts (the trainer's process group: pid, group id, start
time), at each checkpoint and when it ends, by the app that runs it. A record that still says `running` while no run
of this app has its id belongs to a process that died: it reads `interrupted`, unless its trainer is still at work
(a restarted app stops it first: app/state.py), and only then may it resume. What a record holds of the job is its
worker JSON with every secret scrubbed (core/secrets.py).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from app.run import Run
from core.adapters import ProcessMark
from core.jobdir import JobDir
from core.outputs import latest_checkpoint
from core.secrets import scrub
from core.spec import unwrap_input

HISTORY_DIR = "history"
INTERRUPTED = "interrupted"
RESUMABLE = frozenset({INTERRUPTED, "cancelled", "failed"})


@dataclass(frozen=True)
class RunRecord:
    id: str
    started_at: float
    status: str
    """running | succeeded | failed | cancelled, and `interrupted` as read back (see the module's doc)."""
    job: dict[str, Any]
    job_dir: str
    ended_at: float | None = None
    steps: int = 0
    total_steps: int | None = None
    loss: float | None = None
    published: list[str] = field(default_factory=list)
    """Where the LoRA went: Hub URLs, bucket URLs."""
    error: str | None = None
    resumed_from: str | None = None
    """The checkpoint this run continued, when it is a resumed run."""
    trainer: dict[str, int] | None = None
    """SimpleTuner's process group (core.adapters.ProcessMark.to_dict): pid, pgid, the leader's start time."""

    def trainer_mark(self) -> ProcessMark | None:
        return ProcessMark.from_dict(self.trainer) if self.trainer else None

    def trainer_running(self) -> bool:
        """This run's trainer is still at work (the same process group: a reused pid is told apart)."""
        mark = self.trainer_mark()
        return mark is not None and mark.alive()

    def last_checkpoint(self) -> Path | None:
        """The newest complete checkpoint the run left in its job folder (read from the folder: it outlives the
        process that wrote it)."""
        return latest_checkpoint(JobDir(Path(self.job_dir)).output, complete=True)

    @property
    def resumable(self) -> bool:
        """Resume starts a new trainer: never while this run's own is still at work."""
        return self.status in RESUMABLE and self.last_checkpoint() is not None and not self.trainer_running()


class RunHistory:
    """The records of one data folder."""

    def __init__(self, data_root: Path):
        self.folder = Path(data_root) / HISTORY_DIR
        self._lock = threading.Lock()  # a run's checkpoints are recorded from the trainer's event thread

    def save(self, record: RunRecord, *, secrets: list[str]) -> None:
        """Write `record` (its texts scrubbed of `secrets`) atomically: a reader never sees half a file."""
        self.folder.mkdir(parents=True, exist_ok=True)
        data = scrub(asdict(record), secrets=secrets)
        target = self.folder / f"{record.id}.json"
        partial = target.with_suffix(".json.tmp")
        with self._lock:
            partial.write_text(json.dumps(data, indent=1))
            os.replace(partial, target)

    def get(self, run_id: str, *, live: Collection[str] = ()) -> RunRecord | None:
        path = self.folder / f"{run_id}.json"
        if "/" in run_id or not path.is_file():
            return None
        return self._read(path, live=live)

    def delete(self, run_id: str) -> None:
        """Forget a run (its record only; its folder is the registry's to remove)."""
        if "/" not in run_id:
            (self.folder / f"{run_id}.json").unlink(missing_ok=True)

    def records(self, *, live: Collection[str] = ()) -> list[RunRecord]:
        """Every run, newest first; `live`: the ids of the runs this process is running."""
        found = [record for path in self.folder.glob("*.json") if (record := self._read(path, live=live))]
        return sorted(found, key=lambda record: record.started_at, reverse=True)

    @staticmethod
    def _read(path: Path, *, live: Collection[str]) -> RunRecord | None:
        try:
            record = RunRecord(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None  # a file that is not one of ours, or one cut by a full disk: not a run to list
        if record.status == "running" and record.id not in live and not record.trainer_running():
            return replace(record, status=INTERRUPTED)
        return record


def describe(record: RunRecord) -> list[str]:
    """One row of the history table: when, status, steps, loss, where published, last checkpoint, job. Short
    cells (a Hub repo's id, not its URL; a local model's folder name), so no column is squeezed to a letter."""
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(record.started_at))
    steps = f"{record.steps}/{record.total_steps}" if record.total_steps else str(record.steps or "")
    loss = f"{record.loss:.4f}" if record.loss is not None else ""
    checkpoint = record.last_checkpoint()
    return [record.id, when, record.status, steps, loss, " ".join(dict.fromkeys(map(short_place, record.published))),
            checkpoint.name if checkpoint else "", job_line(record.job)]


COLUMNS = ["run", "started", "status", "steps", "loss", "published", "last checkpoint", "job"]
COLUMN_WIDTHS: list[str | int] = ["17%", "13%", "9%", "6%", "7%", "18%", "12%", "18%"]
"""The history table's column widths: at 1280 px a run id, a date and every header fit on one line, and the table
never overflows its box."""


def job_line(job: dict[str, Any]) -> str:
    """A job in a few words: model family, base model (a local one by its folder's name), trigger word."""
    job_input = unwrap_input(job)
    config = job_input.get("config", {})
    model = str(config.get("pretrained_model_name_or_path") or config.get("model_name") or "")
    if model.startswith("/"):
        model = Path(model).name
    return ", ".join(str(part) for part in (config.get("model_family"), model, job_input.get("trigger_word")) if part)


def published_links(urls: list[str]) -> list[tuple[str, str]]:
    """(short name, URL) of each place a run's LoRA went, once each: a repo's page rather than a file in it."""
    links: dict[str, str] = {}
    for url in sorted(urls, key=lambda url: "/resolve/" in url):
        links.setdefault(short_place(url), url)
    return list(links.items())


def short_place(url: str) -> str:
    """Where a LoRA went, in a few characters: a Hub repo's id (from its page or a file's URL), a bucket and the
    file's name."""
    parts = urlsplit(url)
    path = parts.path.strip("/")
    if parts.scheme == "s3" or parts.query:  # a bucket, or a presigned URL into one
        bucket = parts.netloc.split(".", 1)[0] if parts.scheme != "s3" else parts.netloc
        return f"{bucket}/…/{path.rsplit('/', 1)[-1]}" if "/" in path else f"{bucket}/{path}"
    return path.split("/resolve/", 1)[0] or url


def record_of(run: Run, *, resumed_from: str | None = None, published: list[str] | None = None) -> RunRecord:
    """What the history keeps of a training run now."""
    snap = run.snapshot()
    output = snap.output or {}
    return RunRecord(id=run.id, started_at=snap.started_at, ended_at=snap.ended_at, status=snap.status,
                     job=run.spec.to_job_json(), job_dir=snap.job_dir, steps=snap.step, total_steps=snap.total_steps,
                     loss=(output.get("metrics") or {}).get("loss") or (snap.losses[-1][1] if snap.losses else None),
                     published=list(dict.fromkeys([*places(output), *(published or [])])),
                     error=(snap.error or {}).get("message"), resumed_from=resumed_from, trainer=run.trainer)


def places(output: dict[str, Any]) -> list[str]:
    """Where a run's result says its LoRA went (Hub, bucket), from its output JSON."""
    return [url for url in ((output.get("hub") or {}).get("url"), output.get("model_checkpoint"))
            if isinstance(url, str) and url.startswith(("http://", "https://", "s3://"))]
