"""A run's output folder, as SimpleTuner leaves it: the one place that knows its file names.

    output/
      pytorch_lora_weights.safetensors      the final LoRA (LORA_FILE; a full fine-tune leaves pipeline/ instead)
      checkpoint-<N>/                       every `checkpoint_step_interval` steps (CHECKPOINT)
        pytorch_lora_weights.safetensors
        training_state.json                 written last: a folder without it is not resumable (STATE_FILE)
        .fetched-to-resume                  only in a checkpoint this job fetched rather than trained
      validation_images/step_<N>_sample_<i>_0_<W>x<H>.png     the job's sample prompts (SAMPLES_DIR, SAMPLE_IMAGE)

Every stage and face asks here: which checkpoints a run has and their steps, the latest (or a given) one, the
final LoRA, and the sample images with their prompts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LORA_FILE = "pytorch_lora_weights.safetensors"
"""The LoRA SimpleTuner writes, in diffusers' key format (at the top of the output folder and in each checkpoint)."""
PIPELINE_DIR = "pipeline"
"""A full fine-tune's output: the whole diffusers pipeline."""
STATE_FILE = "training_state.json"
"""SimpleTuner's training state, written last into a checkpoint: its presence makes the checkpoint complete."""
FETCHED_MARKER = ".fetched-to-resume"
"""In a checkpoint folder this job fetched rather than trained: it is stored where it came from."""
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
SAMPLES_DIR = "validation_images"
SAMPLE_SHORTNAME = "sample_{}"
"""A job's sample prompt i in SimpleTuner's prompt library; its images carry this name."""
SAMPLE_IMAGE = re.compile(r"^step_(\d+)_sample_(\d+)_(\d+)_[^.]*\.(png|jpe?g|webp)$")


# -- checkpoints --------------------------------------------------------------------------------------------------

def checkpoint_step(folder: Path | str) -> int | None:
    """N of a `checkpoint-N` folder (or its name); None for any other name."""
    match = CHECKPOINT.match(Path(folder).name)
    return int(match.group(1)) if match else None


def checkpoints(output_dir: Path, *, complete: bool = False, with_lora: bool = False) -> list[Path]:
    """The run's checkpoint-N folders, oldest first. `complete`: only those holding STATE_FILE (resumable);
    `with_lora`: only those holding LORA_FILE (publishable)."""
    folder = Path(output_dir)
    found = [path for path in folder.glob("checkpoint-*") if path.is_dir() and checkpoint_step(path) is not None
             and (not complete or (path / STATE_FILE).is_file()) and (not with_lora or (path / LORA_FILE).is_file())]
    return sorted(found, key=lambda path: checkpoint_step(path) or 0)


def latest_checkpoint(output_dir: Path, *, complete: bool = True) -> Path | None:
    """The newest checkpoint-N folder (by default the newest complete one)."""
    found = checkpoints(output_dir, complete=complete)
    return found[-1] if found else None


def trained_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints this run trained itself (not one fetched to resume from): what only this machine has."""
    return [path for path in checkpoints(output_dir, complete=True) if not (path / FETCHED_MARKER).exists()]


def lora_file(folder: Path) -> Path:
    """The LoRA file of an output or checkpoint folder."""
    return Path(folder) / LORA_FILE


# -- samples ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sample:
    step: int
    index: int
    """The prompt's place in samples.prompts."""
    prompt: str
    path: str
    """Inside the output folder (validation_images/...)."""


def find_samples(output_dir: Path, prompts: dict[str, str]) -> list[Sample]:
    """The sample images in a run's output folder, by step then prompt order."""
    folder = Path(output_dir) / SAMPLES_DIR
    found = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        match = SAMPLE_IMAGE.match(path.name)
        if not match or match.group(3) != "0":
            continue
        index = int(match.group(2))
        prompt = prompts.get(SAMPLE_SHORTNAME.format(index))
        if prompt is not None:
            found.append(Sample(step=int(match.group(1)), index=index, prompt=prompt,
                                path=path.relative_to(output_dir).as_posix()))
    return sorted(found, key=lambda s: (s.step, s.index))


def samples_by_step(samples: list[Sample]) -> dict[int, list[Sample]]:
    grouped: dict[int, list[Sample]] = {}
    for sample in samples:
        grouped.setdefault(sample.step, []).append(sample)
    return grouped


def hub_path(sample: Sample) -> str:
    """Where a sample goes in a Hub repo or bucket: samples/step-<N>/<prompt index>.png."""
    return f"samples/step-{sample.step}/{sample.index}{Path(sample.path).suffix}"


def samples_output(samples: list[Sample], *, urls: dict[str, str]) -> list[dict[str, Any]]:
    """The result's `samples`: per step, each image's prompt, file and (once published) URL."""
    out = []
    for step, group in sorted(samples_by_step(samples).items()):
        images = []
        for sample in group:
            url = urls.get(hub_path(sample)) or urls.get(sample.path)
            images.append({"prompt": sample.prompt, "file": sample.path, **({"url": url} if url else {})})
        out.append({"step": step, "images": images})
    return out
