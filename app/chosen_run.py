"""The chosen run: the run of the history (app/history.py) that the Publish and Playground tabs work on, read from
its job folder, so it is the same after any number of app restarts.

    chosen = ChosenRun.of(record)
    chosen.result                  # its JobResult (saved beside its outputs when it succeeded), or None
    chosen.spec                    # its job, as it ran (scrubbed of secrets; the Publish tab adds its hub section)
    chosen.downloads()             # its files under names that say which run they come from

A succeeded run's JobResult is written to `<job folder>/result.json` by the app that trained it; a run from before
that file existed gets one rebuilt from what its folder holds (the LoRA, SimpleTuner's config, its checkpoints).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.history import RunRecord
from core.errors import JobError
from core.jobdir import JobDir
from core.outputs import LORA_FILE, PIPELINE_DIR, checkpoints, lora_checkpoints, lora_file, validation_files
from core.publishing import is_comfyui_file
from core.result import JobResult, Metrics
from core.secrets import scrub
from core.simpletuner import FULL, kind_of
from core.spec import JobSpec, parse_job

RESULT_FILE = "result.json"
DOWNLOADS_DIR = "downloads"
logger = logging.getLogger("app.chosen_run")


def save_result(result: JobResult, *, secrets: list[str]) -> None:
    """A succeeded run's result, beside its outputs (scrubbed, written whole)."""
    target = Path(result.job_dir) / RESULT_FILE
    partial = target.with_suffix(".json.tmp")
    partial.write_text(json.dumps(scrub(result.to_state(), secrets=secrets), indent=1))
    os.replace(partial, target)


def load_result(job_dir: Path) -> JobResult | None:
    try:
        return JobResult.from_state(json.loads((Path(job_dir) / RESULT_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def rebuilt_result(record: RunRecord) -> JobResult | None:
    """A succeeded run's result from its folder alone (a run trained before result.json was written)."""
    job = JobDir(Path(record.job_dir))
    try:
        config = json.loads((job.config / "config.json").read_text())
        backends = json.loads((job.config / "multidatabackend.json").read_text())
    except (OSError, ValueError):
        config, backends = {}, []
    kind = kind_of(config)
    full = kind == FULL
    if not (job.output / (PIPELINE_DIR if full else LORA_FILE)).exists():
        return None
    prompt = str(config.get("--validation_prompt") or "")
    return JobResult(status="succeeded", job_dir=job.root, output_dir=job.output, kind=kind,
                     lora_path=None if full else lora_file(job.output),
                     model_dir=job.output / PIPELINE_DIR if full else None, log_path=job.log,
                     metrics=Metrics(steps=record.steps, total_steps=record.total_steps, loss=record.loss,
                                     elapsed_s=(record.ended_at or record.started_at) - record.started_at),
                     trainer_files={"config.json": config, "multidatabackend.json": backends},
                     checkpoints=checkpoints(job.output),
                     validation=[(path.relative_to(job.output).as_posix(),
                                  "" if "_unconditional_" in path.name else prompt)
                                 for path in validation_files(job.output)])


@dataclass(frozen=True)
class ChosenRun:
    record: RunRecord
    result: JobResult | None
    """Set for a run that succeeded and whose outputs are still there: what Publish pushes, what Playground tries."""

    @classmethod
    def of(cls, record: RunRecord) -> ChosenRun:
        result = None
        if record.status == "succeeded":
            result = load_result(Path(record.job_dir)) or rebuilt_result(record)
        return cls(record=record, result=result)

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def job_dir(self) -> Path:
        return Path(self.record.job_dir)

    @property
    def output_dir(self) -> Path:
        return JobDir(self.job_dir).output

    @property
    def spec(self) -> JobSpec:
        """The run's job (a JobError when the record's job no longer parses, e.g. from an older version)."""
        try:
            return parse_job(self.record.job)
        except JobError as error:
            raise JobError(f"run {self.id}: its job cannot be read back: {error.message}", field="run",
                           stage="publish") from None

    @property
    def lora_path(self) -> Path | None:
        """The trained LoRA on this machine."""
        path = self.result.lora_path if self.result else None
        return path if path is not None and path.is_file() else None

    @property
    def comfyui_path(self) -> Path | None:
        """The ComfyUI-format file beside the LoRA: renamed after the repo at each push, so found by its header."""
        if self.lora_path is None:
            return None
        found = [path for path in sorted(self.lora_path.parent.glob("*.safetensors"))
                 if path.name != LORA_FILE and is_comfyui_file(path)]
        return found[0] if found else None

    @property
    def config(self) -> dict[str, Any]:
        """SimpleTuner's config.json of the run."""
        return dict((self.result.trainer_files if self.result else {}).get("config.json") or {})

    def checkpoints(self) -> list[tuple[str, int]]:
        """(folder, step) of each checkpoint holding a LoRA."""
        return lora_checkpoints(self.output_dir if self.output_dir.is_dir() else None)

    def downloads(self) -> dict[str, Path]:
        """The run's files under names that say which run they are: `<run>.json` (its job), `<run>-lora.safetensors`,
        `<run>-comfyui.safetensors`; hard links in `<job folder>/downloads/` (copies where links fail)."""
        folder = self.job_dir / DOWNLOADS_DIR
        found: dict[str, Path] = {}
        try:
            folder.mkdir(parents=True, exist_ok=True)
            job = folder / f"{self.id}.json"
            job.write_text(json.dumps(self.record.job, indent=2))  # the record's job: already without secrets
            found["job"] = job
            for key, source in (("lora", self.lora_path), ("comfyui", self.comfyui_path)):
                if source is not None:
                    found[key] = named_link(source, folder / f"{self.id}-{key}.safetensors")
        except OSError as exc:  # a full disk or a folder removed meanwhile: no download, the page stays up
            logger.warning("downloads of run %s: %s", self.id, exc)
        return found


def named_link(source: Path, target: Path) -> Path:
    """`target`: the same file as `source` (a hard link, else a copy), refreshed when `source` changed."""
    if target.exists() and os.path.samefile(source, target):
        return target
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
    return target
