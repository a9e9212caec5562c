"""Acting on a running training from outside its process: "save a checkpoint now" and "render samples now".

SimpleTuner 4.10.1 takes both requests through a file: its train.py reads the JSON file that the environment variable
SIMPLETUNER_ACCELERATE_SIGNAL_FILE names (`{"manual_checkpoint": N, "manual_validation": M}`, counts that only grow),
and its training loop asks at every optimizer step whether a count went up (`Trainer._consume_manual_checkpoint_
request`, `_consume_manual_validation_request`): a checkpoint is then saved at that step as a scheduled one is, and
the validation prompts rendered (`force_evaluation`). The file is read once its modification time changes, so each
request is written whole and put in place in one rename.

Limits, from that code: a request is taken at the next step (not during model loading or caching); samples need
the run's validation prompts (`samples` or config.validation_prompt); a run on several processes is not offered it,
since each process reads the file at its own step and a checkpoint needs them all at the same one.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

SIGNAL_ENV = "SIMPLETUNER_ACCELERATE_SIGNAL_FILE"
SIGNAL_FILE = "triggers.json"
"""In the run's config folder (core/jobdir.py): inside the job's own folder."""
CHECKPOINT, SAMPLES = "manual_checkpoint", "manual_validation"
NOT_TRAINING = "SimpleTuner is not training now (requests are taken once its steps run)"


class TrainingControl:
    """The requests a face can make of the training a job runs now. `train()` attaches it to each SimpleTuner run
    (one per expert, in turn); outside a run each request answers why it cannot be made."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._path: Path | None = None
        self._samples = False
        self._counts = {CHECKPOINT: 0, SAMPLES: 0}

    def attach(self, folder: Path, *, samples: bool) -> dict[str, str]:
        """Start a run's request file in `folder`; the environment SimpleTuner reads it from. `samples`: whether
        the run has validation prompts to render."""
        with self._lock:
            self._path, self._samples = folder / SIGNAL_FILE, samples
            self._counts = {CHECKPOINT: 0, SAMPLES: 0}
            self._write(self._path)
            return {SIGNAL_ENV: str(self._path)}

    def detach(self) -> None:
        with self._lock:
            self._path = None

    def request_checkpoint(self) -> str | None:
        """Ask for a checkpoint at the next step; None when asked, else why it cannot be."""
        return self._request(CHECKPOINT)

    def request_samples(self) -> str | None:
        """Ask for the validation prompts to be rendered at the next step; None when asked, else why not."""
        with self._lock:
            if self._path is not None and not self._samples:
                return "this run has no sample prompts to render (give samples or config.validation_prompt)"
        return self._request(SAMPLES)

    def _request(self, key: str) -> str | None:
        with self._lock:
            if self._path is None:
                return NOT_TRAINING
            self._counts[key] += 1
            self._write(self._path)
        return None

    def _write(self, path: Path) -> None:
        spare = path.with_suffix(".tmp")
        spare.write_text(json.dumps({key: count for key, count in self._counts.items() if count}))
        os.replace(spare, path)


def can_sample(config: dict) -> bool:
    """Whether a run's SimpleTuner config renders validation samples (what a samples request needs)."""
    if config.get("--validation_disable"):
        return False
    return bool(config.get("--validation_prompt") or config.get("--user_prompt_library")
                or config.get("--validation_using_datasets") or config.get("--eval_dataset_id"))
