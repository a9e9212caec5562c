"""Sample images: what the LoRA learned, per checkpoint. The job's `samples` field, how it becomes SimpleTuner's
validation settings, where the rendered images are, and which checkpoint is "best".

SimpleTuner renders its validation prompts every `validation_step_interval` steps into
`validation_images/step_<N>_<shortname>_<i>_<W>x<H>.png`. A job's sample prompts go into SimpleTuner's prompt
library (`user_prompt_library`, a JSON file {shortname: prompt} written into the job's config folder) under the
short names `sample_0`, `sample_1`, ...; so each image maps back to its prompt and its step. `every` defaults to the
checkpoint interval, so each checkpoint has its samples; `steps` and `guidance` default to the family's SimpleTuner
recipe. `[trigger]` in a prompt (and in a caption, core/dataset/stage.py) becomes the job's trigger word.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import SpecError
from core.outputs import (
    SAMPLE_SHORTNAME,
    Sample,
    checkpoint_name,
    checkpoint_step,
    checkpoints,
    find_samples,
    hub_path,
    lora_file,
    sample_step,
)
from core.simpletuner import VIDEO_FAMILIES
from core.spec import SamplesSpec, fill_trigger, prompt_settings, prompt_text

if TYPE_CHECKING:
    from core.jobdir import JobDir
    from core.spec import JobSpec
    from core.training.gpu_fit import GpuPlan

LIBRARY_FILE = "user_prompt_library.json"
DEFAULT_STEPS = 30
DEFAULT_GUIDANCE = 5.0
VIDEO_FRAMES = 17
"""Frames of a video sample: 4k+1 (Wan) and 8k+1 (LTX) both; SimpleTuner's examples render 81 (5 s at 16 fps) at
every checkpoint, several minutes and a whole clip's VAE decode each time."""
VIDEO_STEPS = 20
"""At most this many steps for a video sample (the examples say 40)."""
SMOOTHING = 0.6
"""The exponential smoothing of the loss curve that "best" reads (each step's loss is noisy; 0 = raw)."""


def sample_prompts(samples: SamplesSpec, trigger: str | None) -> dict[str, str]:
    """SimpleTuner's prompt library: {shortname: prompt}, in the job's order."""
    return {SAMPLE_SHORTNAME.format(i): fill_trigger(prompt_text(prompt), trigger)
            for i, prompt in enumerate(samples.prompts)}


def sample_library(samples: SamplesSpec, trigger: str | None) -> dict[str, Any]:
    """The prompt library file's content: a prompt with its own LoRA scale as {prompt, adapter_strength} (an
    entry SimpleTuner's library takes; its other settings are the run's own there), the others as their text."""
    return {shortname: text if (scale := prompt_settings(item).lora_scale) is None
            else {"prompt": text, "adapter_strength": scale}
            for (shortname, text), item in zip(sample_prompts(samples, trigger).items(), samples.prompts, strict=True)}


def sample_labels(samples: SamplesSpec, trigger: str | None) -> dict[str, str]:
    """{shortname: prompt and its own settings}: what a grid shows under each sample."""
    return {shortname: f"{text} ({label})" if (label := prompt_settings(item).label()) else text
            for (shortname, text), item in zip(sample_prompts(samples, trigger).items(), samples.prompts, strict=True)}


@dataclass(frozen=True)
class SampleSettings:
    flags: dict[str, Any]
    """The base flags (defaults) with the validation settings of the samples applied."""
    files: dict[str, Any] = field(default_factory=dict)
    """The prompt library, to write into the config folder."""
    warnings: list[str] = field(default_factory=list)
    """What was changed for the GPU (validation turned off), for the job's warnings."""


def _recipe_value(spec: JobSpec, name: str) -> Any:
    from core.simpletuner import recipe_for

    try:
        recipe = recipe_for(spec.model_family, spec.config.get("model_flavour"), gpu_memory_gb=None)
    except SpecError:
        return None
    return recipe.settings.get(name)


def with_samples(spec: JobSpec, base: dict[str, Any], *, job: JobDir, plan: GpuPlan | None = None,
                 input_image: Path | None = None) -> SampleSettings:
    """`base` (the defaults under the job's own flags) with the job's samples as SimpleTuner validation settings,
    made to fit the GPU `plan` describes (fit_validation). No samples: `base`'s own validation, fitted. The job's
    own config flags still win over these (trainer_config merges them last). `input_image`: an image-to-video
    model's first frame for every sample (core/training/sample_image.py), given as SimpleTuner's
    `validation_input` with each prompt and its shortname."""
    samples: SamplesSpec | None = getattr(spec, "samples", None)
    if samples is None:
        return fit_validation(spec, SampleSettings(flags=base), plan=plan)
    flags = {key: value for key, value in base.items() if key not in ("validation_disable", "validation_prompt")}
    # The defaults (core/training/config.py) always set a checkpoint interval.
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
    if input_image is not None:
        # SimpleTuner renders these instead of the prompt library's (validation.py: validation_image_inputs).
        flags["validation_input"] = json.dumps([
            {"path": str(input_image), "prompt": prompt, "shortname": shortname}
            for shortname, prompt in sample_prompts(samples, spec.trigger_word).items()])
    return fit_validation(spec, SampleSettings(flags=flags, files={LIBRARY_FILE: sample_library(samples,
                                                                                        spec.trigger_word)}),
                          plan=plan)


# -- validation that fits ----------------------------------------------------------------------------------------

def render_working_gb(*, width: int, height: int, frames: int = 1) -> float:
    """GPU memory a render needs besides its weights (activations, the latents, a tiled VAE decode), in GB: a
    conservative rule of thumb, 0.25 GB plus 0.5 GB per megapixel of each latent frame (a video VAE packs 4
    frames into one latent frame, plus the first). A FLUX 1024x1024 image: 0.75 GB; Wan 832x480x81: 4.3 GB."""
    latent_frames = 1 + (max(frames, 1) - 1) // 4
    return 0.25 + 0.5 * width * height / 2**20 * latent_frames


def _size(resolution: object) -> tuple[int, int]:
    first = str(resolution).split(",")[0].strip()
    width, _, height = first.partition("x")
    return int(float(width)), int(float(height or width))


def fit_validation(spec: JobSpec, settings: SampleSettings, *, plan: GpuPlan | None) -> SampleSettings:
    """SimpleTuner's in-training validation made to fit, so a run never fails because of its samples. A video
    family renders VIDEO_FRAMES frames at at most VIDEO_STEPS steps with a tiled, sliced VAE (SimpleTuner's
    examples: 81 frames at 40 steps). When the training's
    own estimate (a published figure, not a SimpleTuner example, whose validation runs on its tier) leaves the GPU
    too little room for the render, validation is turned off, with a warning that says why."""
    flags = dict(settings.flags)
    if flags.get("validation_disable") or plan is None:
        return SampleSettings(flags=flags, files=settings.files, warnings=settings.warnings)
    frames = 1
    if spec.model_family in VIDEO_FAMILIES:
        frames = VIDEO_FRAMES
        steps = int(flags.get("validation_num_inference_steps") or VIDEO_STEPS)
        # Tiling and slicing also apply to the VAE's encoding of the dataset: only video families, whose clips
        # need them (SimpleTuner's Wan turns them on itself), get them.
        flags.update(validation_num_video_frames=frames, validation_num_inference_steps=min(steps, VIDEO_STEPS),
                     vae_enable_tiling=True, vae_enable_slicing=True)
        flags.setdefault("vae_batch_size", 1)  # one clip per VAE call: SimpleTuner's video examples, the GPU plan
    warnings = list(settings.warnings)
    memory, estimate = plan.gpu_memory_gb, plan.estimated_vram_gb
    from_example = plan.recipe is not None and plan.tier_gb is not None and estimate == float(plan.tier_gb)
    if memory is not None and estimate is not None and not from_example:
        width, height = _size(flags.get("validation_resolution") or flags.get("resolution") or 1024)
        working = render_working_gb(width=width, height=height, frames=frames)
        headroom = plan.headroom_gb or 0.0  # what the training plan keeps free stays free while it samples
        if estimate + working + headroom > memory:
            flags = {key: value for key, value in flags.items() if not key.startswith("validation_")
                     and key != "user_prompt_library"}
            flags["validation_disable"] = True
            warnings.append(f"samples during training are off: training needs about {estimate:g} GB "
                            f"({plan.vram_source}) and a {width}x{height}{f'x{frames}' if frames > 1 else ''} "
                            f"sample about {working:.1f} GB more, with {headroom:g} GB kept free; this GPU has "
                            f"{memory:g} GB. The end-of-run samples "
                            "are still rendered after training")
    return SampleSettings(flags=flags, files=settings.files, warnings=warnings)


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


@dataclass(frozen=True)
class Pick:
    folder: Path | None
    """The checkpoint-N folder; None for "last" (the run's final LoRA)."""
    step: int | None
    reason: str


def pick_checkpoint(choice: str | int, *, output_dir: Path, losses: list[tuple[int, float]],
                    eval_losses: list[tuple[int, float]] | None = None) -> Pick:
    """The checkpoint `hub.checkpoint` names: "last" (the final LoRA), "best" (lowest evaluation loss on the
    held-out images among the checkpoints on disk when the run has one, else lowest smoothed training loss) or a
    step N (its checkpoint-N). A SpecError naming hub.checkpoint when there is none."""
    from core.errors import PublishError

    if choice == "last":
        return Pick(folder=None, step=None, reason="the final LoRA")
    steps = {step: folder for folder in checkpoints(output_dir, with_lora=True)
             if (step := checkpoint_step(folder)) is not None}
    have = ", ".join(map(str, steps)) or "none"
    if choice == "best" and (held_out := best_by_eval(steps, eval_losses or [], have=have)) is not None:
        return held_out
    if choice == "best":
        curve = smoothed(losses)
        scored = [(curve[step], step) for step in steps if step in curve]
        if not scored:
            raise PublishError(f"no checkpoint with a recorded loss to choose from (checkpoints: {have})",
                               field="hub.checkpoint")
        loss, best = min(scored, key=lambda item: (item[0], -item[1]))
        return Pick(folder=steps[best], step=best,
                    reason=f"best: lowest smoothed loss ({loss:.4f}, smoothing {SMOOTHING}) of checkpoints {have}")
    found = steps.get(int(choice))
    if found is None:
        raise PublishError(f"there is no {checkpoint_name(int(choice))} in this run (checkpoints kept: {have})",
                           field="hub.checkpoint")
    return Pick(folder=found, step=int(choice), reason=f"{checkpoint_name(int(choice))}, as asked")


def best_by_eval(steps: dict[int, Path], eval_losses: list[tuple[int, float]], *, have: str) -> Pick | None:
    """The checkpoint of lowest evaluation loss (SimpleTuner evaluates at each checkpoint's step); None when no
    checkpoint on disk has one."""
    scored = [(loss, step) for step, loss in eval_losses if step in steps]
    if not scored:
        return None
    loss, best = min(scored, key=lambda item: (item[0], -item[1]))
    return Pick(folder=steps[best], step=best,
                reason=f"best: lowest evaluation loss on the held-out images ({loss:.4f}) of checkpoints {have}")


# -- a run's samples in its result, and the checkpoint it publishes ----------------------------------------------

def job_samples(spec: JobSpec, output_dir: Path) -> list[Sample]:
    """The samples a finished run rendered, with their prompts ([trigger] filled in)."""
    if spec.samples is None:
        return []
    return find_samples(output_dir, sample_prompts(spec.samples, spec.trigger_word))


def published_view(spec: JobSpec, result: Any, *, root: Path) -> tuple[Any, dict[str, Path]]:
    """What a push publishes: `result` itself, or for hub.checkpoint "best"/N a copy that points at that checkpoint
    (its LoRA, its step, a warning saying which checkpoint went up and why); and the sample files to upload
    (samples/step-N/i.png, all steps). The card's gallery then shows the samples of the published step."""
    import dataclasses

    choice = spec.hub.checkpoint if spec.hub else "last"
    losses = step_losses(result.metrics.losses, last_step=result.metrics.steps)
    pick = pick_checkpoint(choice, output_dir=root, losses=losses,
                           eval_losses=getattr(result.metrics, "eval_losses", None))
    if pick.folder is not None and pick.step is not None:
        metrics = dataclasses.replace(result.metrics, steps=pick.step, loss=dict(losses).get(pick.step))
        result = dataclasses.replace(result, output_dir=pick.folder,
                                     lora_path=lora_file(pick.folder),
                                     comfyui_path=None, metrics=metrics)
        result.warnings = [*result.warnings, f"published {checkpoint_name(pick.step)} ({pick.reason})"]
    samples = list(result.samples)
    files = {hub_path(sample): root / sample.path for sample in samples if (root / sample.path).is_file()}
    shown_step = max((s.step for s in samples if s.step <= result.metrics.steps), default=None)
    if shown_step is not None:
        result.validation = [(hub_path(s), s.prompt) for s in samples if s.step == shown_step]
    elif not samples and result.validation:  # a validation prompt's images: those of the published step too
        result.validation = _validation_at(result.validation, step=result.metrics.steps)
        if pick.folder is not None:  # the repo is the checkpoint's folder: its images go up beside it
            files.update({path: root / path for path, _ in result.validation if (root / path).is_file()})
    return result, files


def _validation_at(validation: list[tuple[str, str]], *, step: int | None) -> list[tuple[str, str]]:
    """The validation images of the last step at or before `step` (all of them when no step is known): a card
    shows what the published LoRA rendered, not what a later step did."""
    steps = [found for path, _ in validation if (found := sample_step(path)) is not None
             and (step is None or found <= step)]
    if not steps:
        return validation if step is None else []
    return [(path, prompt) for path, prompt in validation if sample_step(path) == max(steps)]

def validation_size(resolution: object) -> str:
    """SimpleTuner's validation_resolution as 'WxH': a bare number under 128 is read as megapixels there, so a
    64 px tiny run would render at 64,000 px."""
    text = str(resolution)
    return f"{text}x{text}" if text.isdigit() else text
