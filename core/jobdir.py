"""The job's own directory: every file a job writes lives under it, at these places; and where job folders go
(DATA_DIR/jobs/<name>) and how they are named, for the worker, the UI and the command line alike."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path


def new_job_id() -> str:
    """A job id for a job that comes without one (the UI, the command line): sortable by start time, unique."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def job_folder(data_root: Path, job_id: str | None = None, *, under: str = "jobs") -> Path:
    """DATA_DIR/jobs/<job id>: the id made safe as a folder name (and as the storage key's job part); a new id when
    none (or nothing usable) is given. `under="checks"`: the UI's throwaway dry runs."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", job_id or "").strip("._-")[:100] or new_job_id()
    return data_root / under / name


@dataclass(frozen=True)
class JobDir:
    root: Path
    expert: str = ""
    """One expert's run of a two-expert job (core/outputs.py expert_folder: high_noise, low_noise): its SimpleTuner
    config and output get folders of their own; the dataset, the caches and the log stay the job's."""

    def for_expert(self, folder: str) -> JobDir:
        return JobDir(self.root, expert=folder)

    @property
    def dataset(self) -> Path:
        """Downloads, extraction and the staged image/caption pairs."""
        return self.root / "dataset"

    @property
    def trainer(self) -> Path:
        """SimpleTuner's working directory (its debug.log lands here)."""
        return self.root / "trainer"

    @property
    def config(self) -> Path:
        """config.json, multidatabackend.json, webhooks.json."""
        return self.root / "trainer" / "config" / self.expert if self.expert else self.root / "trainer" / "config"

    @property
    def output(self) -> Path:
        """SimpleTuner's --output_dir: the LoRA, checkpoints, validation images."""
        return self.root / "output" / self.expert if self.expert else self.root / "output"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def log(self) -> Path:
        """SimpleTuner's stdout and stderr."""
        return self.root / "training.log"

    def create(self) -> JobDir:
        for folder in (self.root, self.dataset, self.trainer, self.config, self.output, self.cache):
            folder.mkdir(parents=True, exist_ok=True)
        return self
