"""The job's own directory: every file a job writes lives under it, at these places."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class JobDir:
    root: Path

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
        return self.root / "trainer" / "config"

    @property
    def output(self) -> Path:
        """SimpleTuner's --output_dir: the LoRA, checkpoints, validation images."""
        return self.root / "output"

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
