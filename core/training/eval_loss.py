"""SimpleTuner's evaluation loss, read while it trains.

SimpleTuner 4.10.1 sends its evaluation loss to no webhook: it logs it (`loss/val/<dataset>`, `loss/val/pooled`
with eval_dataset_pooling) to its trackers only. Its own tracker, `report_to: simpletuner`
(helpers/training/local_metrics.py), appends one JSON line per logged step to `training_metrics.jsonl` in the
output folder, flushed at once: {"step": N, "metrics": {"loss/val/pooled": 0.12, ...}}. The trainer reads the new
lines as they come (core/training/subsets.py adds that tracker to a job with held-out images).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from core.events import EvalLoss

METRICS_FILE = "training_metrics.jsonl"
EVAL_PREFIX = "loss/val/"
POOLED = "loss/val/pooled"


def eval_loss_of(record: dict) -> float | None:
    """The evaluation loss in one metrics record: the pooled one, else the mean of the datasets' (None: none)."""
    metrics = record.get("metrics")
    if not isinstance(metrics, dict):
        return None
    values = {key: value for key, value in metrics.items() if str(key).startswith(EVAL_PREFIX)
              and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)}
    if not values:
        return None
    return float(values[POOLED]) if POOLED in values else sum(values.values()) / len(values)


class EvalLossReader:
    """The new evaluation losses in a run's metrics file, each time `read` is called (whole lines only)."""

    def __init__(self, output_dir: Path):
        self._path = Path(output_dir) / METRICS_FILE
        self._offset = 0

    def read(self) -> list[EvalLoss]:
        try:
            with self._path.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
        self._offset += end
        found = []
        for line in data[:end].splitlines():
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int) \
                    and (loss := eval_loss_of(record)) is not None:
                found.append(EvalLoss(step=record["step"], loss=loss))
        return found
