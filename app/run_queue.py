"""The run queue: trainings waiting their turn, in the order the user set, kept in DATA_DIR/queue.json so a restarted
app (a pod restart) still has them. No Gradio and no run here: the registry (app/state.py) starts what `assign`
says may start.

A queued run asks for a number of GPUs: its job's `config.num_processes` (one process per GPU), else every GPU of
the pod. Runs start in queue order, each on the first free GPUs it needs; a run that does not fit yet waits, and so
does every run behind it (nothing jumps the queue: move a small run up to let it go first). Without a GPU the
machine is one slot (`CPU_SLOT`): one training at a time.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

QUEUE_FILE = "queue.json"
CPU_SLOT = "cpu"
"""The one device of a machine without a GPU."""


@dataclass(frozen=True)
class QueuedRun:
    """A training waiting its turn; `id` becomes its run's id (and job folder) when it starts."""

    id: str
    job: dict[str, Any]
    """The job as the worker takes it (`{"input": ...}`), its secrets scrubbed (the environment's are used)."""
    gpus: int | None = None
    """The GPUs it asks for (its config.num_processes); None: every GPU of the pod."""
    added_at: float = field(default_factory=time.time)
    label: str = ""
    """What a user recognises it by: its model, dataset and length."""


def demand(gpus: int | None, *, devices: Sequence[str]) -> int:
    """How many of `devices` a run asking for `gpus` takes: one slot on the CPU, else `gpus` or all of them."""
    if list(devices) == [CPU_SLOT]:
        return 1
    return gpus if gpus else len(devices)


def assign(waiting: Sequence[tuple[str, int | None]], *, devices: Sequence[str],
           busy: Sequence[str] = ()) -> dict[str, tuple[str, ...]]:
    """Which waiting runs start now, and on which devices: `waiting` is (run id, GPUs asked) in queue order,
    `devices` every device of the machine in order, `busy` those that running work holds. Each run takes the first
    free devices it needs; the first that does not fit stops the pass (the runs behind it wait too). A run asking
    for more devices than the machine has is never started (the registry refuses it when it is added)."""
    free = [device for device in devices if device not in set(busy)]
    started: dict[str, tuple[str, ...]] = {}
    for run_id, gpus in waiting:
        need = demand(gpus, devices=devices)
        if need > len(devices) or need > len(free):
            break
        started[run_id], free = tuple(free[:need]), free[need:]
    return started


class RunQueue:
    """The queue file: every change is written at once, atomically (a reader never sees half a file)."""

    def __init__(self, data_root: Path):
        self.path = Path(data_root) / QUEUE_FILE
        self._lock = threading.Lock()

    def entries(self) -> list[QueuedRun]:
        """The waiting runs, first to start first. A missing or unreadable file is an empty queue."""
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return []
        known = set(QueuedRun.__dataclass_fields__)
        return [QueuedRun(**{key: value for key, value in entry.items() if key in known})
                for entry in data.get("queue", []) if isinstance(entry, dict) and entry.get("id")]

    def get(self, run_id: str) -> QueuedRun | None:
        return next((entry for entry in self.entries() if entry.id == run_id), None)

    def add(self, entry: QueuedRun) -> None:
        """Put `entry` at the end."""
        with self._lock:
            self._write([*self.entries(), entry])

    def move(self, run_id: str, *, by: int) -> bool:
        """Move a run `by` places (-1: up, towards the start); False when it is not queued. The ends hold it."""
        with self._lock:
            entries = self.entries()
            index = next((i for i, entry in enumerate(entries) if entry.id == run_id), None)
            if index is None:
                return False
            target = max(0, min(len(entries) - 1, index + by))
            entries.insert(target, entries.pop(index))
            self._write(entries)
            return True

    def remove(self, run_id: str) -> QueuedRun | None:
        """Take a run out of the queue (removed by the user, or started); None when it was not there."""
        with self._lock:
            entries = self.entries()
            found = next((entry for entry in entries if entry.id == run_id), None)
            if found is not None:
                self._write([entry for entry in entries if entry.id != run_id])
            return found

    def _write(self, entries: list[QueuedRun]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".json.tmp")
        partial.write_text(json.dumps({"queue": [asdict(entry) for entry in entries]}, indent=1))
        os.replace(partial, self.path)
