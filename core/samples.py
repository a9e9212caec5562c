"""Sample images: what the LoRA learned, per checkpoint. The job's `samples` field, how it becomes SimpleTuner's
validation settings, where the rendered images are, and which checkpoint is "best".

SimpleTuner renders its validation prompts every `validation_step_interval` steps into
`validation_images/step_<N>_<shortname>_<i>_<W>x<H>.png`. A job's sample prompts go into SimpleTuner's prompt
library (`user_prompt_library`, a JSON file {shortname: prompt} written into the job's config folder) under the
short names `sample_0`, `sample_1`, ...; so each image maps back to its prompt and its step. `every` defaults to the
checkpoint interval, so each checkpoint has its samples; `steps` and `guidance` default to the family's SimpleTuner
recipe. `[trigger]` in a prompt (and in a caption, core/dataset.py) becomes the job's trigger word.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import SpecError
from core.samples_spec import SamplesSpec, fill_trigger

if TYPE_CHECKING:
    from core.jobdir import JobDir
    from core.spec import JobSpec

SHORTNAME = "sample_{}"
LIBRARY_FILE = "user_prompt_library.json"
IMAGE = re.compile(r"^step_(\d+)_sample_(\d+)_(\d+)_[^.]*\.(png|jpe?g|webp)$")
DEFAULT_STEPS = 30
DEFAULT_GUIDANCE = 5.0
SMOOTHING = 0.6
"""The exponential smoothing of the loss curve that "best" reads (each step's loss is noisy; 0 = raw)."""


def sample_prompts(samples: SamplesSpec, trigger: str | None) -> dict[str, str]:
    """SimpleTuner's prompt library: {shortname: prompt}, in the job's order."""
    return {SHORTNAME.format(i): fill_trigger(prompt, trigger) for i, prompt in enumerate(samples.prompts)}


@dataclass(frozen=True)
class SampleSettings:
    flags: dict[str, Any]
    """The base flags (defaults) with the validation settings of the samples applied."""
    files: dict[str, Any] = field(default_factory=dict)
    """The prompt library, to write into the config folder."""


def _recipe_value(spec: JobSpec, name: str) -> Any:
    from core.recipes import recipe_for

    try:
        recipe = recipe_for(spec.model_family, spec.config.get("model_flavour"), gpu_memory_gb=None)
    except SpecError:
        return None
    return recipe.settings.get(name)


def with_samples(spec: JobSpec, base: dict[str, Any], *, job: JobDir) -> SampleSettings:
    """`base` (the defaults under the job's own flags) with the job's samples as SimpleTuner validation settings.
    No samples: `base` unchanged. The job's own config flags still win over these (trainer_config merges them
    last)."""
    samples: SamplesSpec | None = getattr(spec, "samples", None)
    if samples is None:
        return SampleSettings(flags=base)
    flags = {key: value for key, value in base.items() if key not in ("validation_disable", "validation_prompt")}
    # The defaults (core/trainer_config.py) always set a checkpoint interval.
    every = samples.every or spec.config.get("checkpoint_step_interval") or base["checkpoint_step_interval"]
    flags.update(
        user_prompt_library=str(job.config / LIBRARY_FILE),
        validation_step_interval=int(every),
        validation_seed=samples.seed,
        validation_num_inference_steps=samples.steps or _recipe_value(spec, "validation_num_inference_steps")
        or DEFAULT_STEPS,
        validation_guidance=samples.guidance if samples.guidance is not None
        else (_recipe_value(spec, "validation_guidance") or DEFAULT_GUIDANCE),
        validation_resolution=validation_size(samples.resolution or spec.config.get("resolution")
                                              or base.get("resolution")),
        validation_disable_unconditional=True,
        num_validation_images=1,
    )
    if samples.negative_prompt:
        flags["validation_negative_prompt"] = fill_trigger(samples.negative_prompt, spec.trigger_word)
    return SampleSettings(flags=flags, files={LIBRARY_FILE: sample_prompts(samples, spec.trigger_word)})


# -- the rendered samples -----------------------------------------------------------------------------------------

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
    folder = Path(output_dir) / "validation_images"
    found = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        match = IMAGE.match(path.name)
        if not match or match.group(3) != "0":
            continue
        index = int(match.group(2))
        prompt = prompts.get(SHORTNAME.format(index))
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


# -- which checkpoint -------------------------------------------------------------------------------------------

def smoothed(losses: list[tuple[int, float]], *, smoothing: float = SMOOTHING) -> dict[int, float]:
    """step -> the exponentially smoothed loss at that step (TensorBoard's smoothing, bias-corrected)."""
    out, value, weight = {}, 0.0, 0.0
    for step, loss in losses:
        value = smoothing * value + (1 - smoothing) * loss
        weight = smoothing * weight + (1 - smoothing)
        out[step] = value / weight
    return out


def step_losses(losses: list[float], *, last_step: int) -> list[tuple[int, float]]:
    """(step, loss) from a run's per-step losses, the last of which is `last_step`'s."""
    first = last_step - len(losses) + 1
    return [(first + i, loss) for i, loss in enumerate(losses)]


def checkpoint_step(folder: Path) -> int:
    tail = folder.name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


@dataclass(frozen=True)
class Pick:
    folder: Path | None
    """The checkpoint-N folder; None for "last" (the run's final LoRA)."""
    step: int | None
    reason: str


def pick_checkpoint(choice: str | int, *, output_dir: Path, losses: list[tuple[int, float]]) -> Pick:
    """The checkpoint `hub.checkpoint` names: "last" (the final LoRA), "best" (lowest smoothed loss among the
    checkpoints on disk) or a step N (its checkpoint-N). A SpecError naming hub.checkpoint when there is none."""
    from core.errors import PublishError

    if choice == "last":
        return Pick(folder=None, step=None, reason="the final LoRA")
    folders = sorted((p for p in Path(output_dir).glob("checkpoint-*")
                      if (p / "pytorch_lora_weights.safetensors").is_file()), key=checkpoint_step)
    have = ", ".join(str(checkpoint_step(p)) for p in folders) or "none"
    if choice == "best":
        curve = smoothed(losses)
        scored = [(curve[checkpoint_step(p)], p) for p in folders if checkpoint_step(p) in curve]
        if not scored:
            raise PublishError(f"no checkpoint with a recorded loss to choose from (checkpoints: {have})",
                               field="hub.checkpoint")
        loss, best = min(scored, key=lambda item: (item[0], -checkpoint_step(item[1])))
        return Pick(folder=best, step=checkpoint_step(best),
                    reason=f"best: lowest smoothed loss ({loss:.4f}, smoothing {SMOOTHING}) of checkpoints {have}")
    found = next((p for p in folders if checkpoint_step(p) == int(choice)), None)
    if found is None:
        raise PublishError(f"there is no checkpoint-{choice} in this run (checkpoints kept: {have})",
                           field="hub.checkpoint")
    return Pick(folder=found, step=int(choice), reason=f"checkpoint-{choice}, as asked")


# -- a run's samples in its result, and the checkpoint it publishes ----------------------------------------------

def job_samples(spec: JobSpec, output_dir: Path) -> list[Sample]:
    """The samples a finished run rendered, with their prompts ([trigger] filled in)."""
    if spec.samples is None:
        return []
    return find_samples(output_dir, sample_prompts(spec.samples, spec.trigger_word))


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


def published_view(spec: JobSpec, result: Any, *, root: Path) -> tuple[Any, dict[str, Path]]:
    """What a push publishes: `result` itself, or for hub.checkpoint "best"/N a copy that points at that checkpoint
    (its LoRA, its step, a warning saying which checkpoint went up and why); and the sample files to upload
    (samples/step-N/i.png, all steps). The card's gallery then shows the samples of the published step."""
    import dataclasses

    choice = spec.hub.checkpoint if spec.hub else "last"
    losses = step_losses(result.metrics.losses, last_step=result.metrics.steps)
    pick = pick_checkpoint(choice, output_dir=root, losses=losses)
    if pick.folder is not None and pick.step is not None:
        metrics = dataclasses.replace(result.metrics, steps=pick.step, loss=dict(losses).get(pick.step))
        result = dataclasses.replace(result, output_dir=pick.folder,
                                     lora_path=pick.folder / "pytorch_lora_weights.safetensors",
                                     comfyui_path=None, metrics=metrics)
        result.warnings = [*result.warnings, f"published checkpoint-{pick.step} ({pick.reason})"]
    samples = list(result.samples)
    files = {hub_path(sample): root / sample.path for sample in samples if (root / sample.path).is_file()}
    shown_step = max((s.step for s in samples if s.step <= result.metrics.steps), default=None)
    if shown_step is not None:
        result.validation = [(hub_path(s), s.prompt) for s in samples if s.step == shown_step]
    return result, files

def validation_size(resolution: object) -> str:
    """SimpleTuner's validation_resolution as 'WxH': a bare number under 128 is read as megapixels there, so a
    64 px tiny run would render at 64,000 px."""
    text = str(resolution)
    return f"{text}x{text}" if text.isdigit() else text
