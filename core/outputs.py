"""A run's output folder, as SimpleTuner leaves it: the one place that knows its file names.

    output/
      pytorch_lora_weights.safetensors      the final LoRA (LORA_FILE; a full fine-tune leaves pipeline/ instead)
      checkpoint-<N>/                       every `checkpoint_step_interval` steps (CHECKPOINT, checkpoint_name)
        training_state.json                 written first (STATE_FILE)
        pytorch_lora_weights.safetensors    then the weights, optimizer, scheduler and random states
        training_state-<dataset>.json       each dataset's sampler state (SAMPLER_STATES)
        .guard                              written last: without it the save was cut (GUARD_FILE)
        .fetched-to-resume                  only in a checkpoint this job fetched rather than trained
      validation_images/step_<N>_sample_<i>_0_<W>x<H>.png     the job's sample prompts (SAMPLES_DIR, SAMPLE_IMAGE)

A job that trains both experts of a two-expert model (Wan 2.2 A14B, core/simpletuner/experts.py) runs SimpleTuner
once per expert, each into its own folder of this layout: output/high_noise/, output/low_noise/ (expert_folder).

Every stage and face asks here: which checkpoints a run has and their steps, the latest (or a given) one, the
final LoRA, and the sample images with their prompts. The three meanings of "a checkpoint" stay explicit:
any checkpoint-N folder, a complete one (`complete=`: resumable) and one with a LoRA (`with_lora=`: publishable).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

LORA_FILE = "pytorch_lora_weights.safetensors"
"""The LoRA SimpleTuner writes, in diffusers' key format (at the top of the output folder and in each checkpoint)."""
PIPELINE_DIR = "pipeline"
"""A full fine-tune's output: the whole diffusers pipeline."""
STATE_FILE = "training_state.json"
"""SimpleTuner's training state, the first file of a checkpoint: what a resume reads its step from."""
GUARD_FILE = ".guard"
"""SimpleTuner's completion guard, the last file of a checkpoint: a folder without it was cut mid-save (a kill, a
full disk) and has no usable weights or optimizer state; SimpleTuner itself deletes such a folder on resume."""
SAMPLER_STATES = "training_state-*.json"
"""Each dataset's sampler state in a checkpoint: it names the files of the run that wrote it."""
FETCHED_MARKER = ".fetched-to-resume"
"""In a checkpoint folder this job fetched rather than trained: it is stored where it came from."""
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
SAMPLES_DIR = "validation_images"
SAMPLE_SHORTNAME = "sample_{}"
"""A job's sample prompt i in SimpleTuner's prompt library; its images carry this name."""
SAMPLE_IMAGE = re.compile(r"^step_(\d+)_sample_(\d+)_(\d+)_[^.]*\.(png|jpe?g|webp|mp4)$")
"""A sample's file: an image, or a video family's .mp4 (SimpleTuner's validation_video.py names it the same way)."""
SAMPLE_STEP = re.compile(r"^step_(\d+)_")
VALIDATION_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".mp4", ".webm"})
"""What SimpleTuner writes into SAMPLES_DIR: images, and videos for the video families."""


# -- checkpoints --------------------------------------------------------------------------------------------------

def checkpoint_step(folder: Path | str) -> int | None:
    """N of a `checkpoint-N` folder (or its name); None for any other name."""
    match = CHECKPOINT.match(Path(folder).name)
    return int(match.group(1)) if match else None


def is_complete(folder: Path) -> bool:
    """A checkpoint SimpleTuner finished saving: its training state and its completion guard are both there."""
    return (Path(folder) / STATE_FILE).is_file() and (Path(folder) / GUARD_FILE).is_file()


def checkpoint_name(step: int) -> str:
    """The folder name of the checkpoint at `step` (also its name in a Hub repo or bucket)."""
    return f"checkpoint-{int(step)}"


def checkpoints(output_dir: Path, *, complete: bool = False, with_lora: bool = False) -> list[Path]:
    """The run's checkpoint-N folders, oldest first. `complete`: only resumable ones (is_complete); `with_lora`: only
    those holding LORA_FILE (publishable)."""
    folder = Path(output_dir)
    found = [path for path in folder.glob("checkpoint-*") if path.is_dir() and checkpoint_step(path) is not None
             and (not complete or is_complete(path)) and (not with_lora or (path / LORA_FILE).is_file())]
    return sorted(found, key=lambda path: checkpoint_step(path) or 0)


def latest_checkpoint(output_dir: Path, *, complete: bool = True, with_lora: bool = False) -> Path | None:
    """The newest checkpoint-N folder (by default the newest complete one: what a resume continues)."""
    found = checkpoints(output_dir, complete=complete, with_lora=with_lora)
    return found[-1] if found else None


def lora_checkpoints(output_dir: Path | None) -> list[tuple[str, int]]:
    """(folder name, step) of each checkpoint holding a LoRA, oldest first: what a face offers to publish or try."""
    if output_dir is None:
        return []
    return [(path.name, checkpoint_step(path) or 0) for path in checkpoints(output_dir, with_lora=True)]


def latest_checkpoint_prefix(paths: Iterable[str]) -> str | None:
    """In a remote listing (file paths in a Hub repo, keys under a bucket prefix): '.../checkpoint-N' of the highest
    N among the folders holding these files, or None."""
    best: tuple[int, str] | None = None
    for path in paths:
        parts = PurePosixPath(path).parts[:-1]
        for index, part in enumerate(parts):
            step = checkpoint_step(part)
            if step is not None and (best is None or step > best[0]):
                best = (step, "/".join(parts[: index + 1]))
    return best[1] if best else None


def state_step(folder: Path) -> int | None:
    """The global step a checkpoint's STATE_FILE records (which a fetched folder's name may not say); None when
    it is missing or unreadable."""
    try:
        state = json.loads((Path(folder) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    step = state.get("global_step") if isinstance(state, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else None


def trained_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints this run trained itself (not one fetched to resume from): what only this machine has."""
    return [path for path in checkpoints(output_dir, complete=True) if not (path / FETCHED_MARKER).exists()]


def lora_file(folder: Path) -> Path:
    """The LoRA file of an output or checkpoint folder."""
    return Path(folder) / LORA_FILE


def expert_folder(name: str) -> str:
    """The folder of one expert's run ("high" -> high_noise), in the job's output and in the published repo."""
    return f"{name}_noise"


def expert_outputs(output_dir: Path) -> list[Path]:
    """The expert folders of a two-expert job's output that hold a LoRA, high before low; [] for any other run."""
    found = [Path(output_dir) / expert_folder(name) for name in ("high", "low")]
    return [folder for folder in found if lora_file(folder).is_file()]


# -- samples ------------------------------------------------------------------------------------------------------

def validation_files(output_dir: Path) -> list[Path]:
    """Every image (and video) SimpleTuner's validation wrote so far, by name."""
    folder = Path(output_dir) / SAMPLES_DIR
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in VALIDATION_SUFFIXES) if folder.is_dir() else []


def sample_step(name: str) -> int | None:
    """The step in a validation file's name (step_<N>_...); None for another name."""
    match = SAMPLE_STEP.match(Path(name).name)
    return int(match.group(1)) if match else None


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
