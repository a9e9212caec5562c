"""The samples of a run's last step. SimpleTuner 4.10.1 skips its validation after the last step, so when
max_train_steps is no multiple of `samples.every` the final LoRA's samples are rendered here, once, by the
playground's generation script (core/generation/playground.py), with the run's validation settings and under
SimpleTuner's
file names, so core/training/samples.py finds them with the others."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import JobError
from core.outputs import SAMPLES_DIR, Sample
from core.simpletuner import VIDEO_FAMILIES
from core.spec import prompt_settings
from core.training import (
    DEFAULT_GUIDANCE,
    DEFAULT_STEPS,
    VIDEO_FRAMES,
    edit_samples,
    job_samples,
    sample_inputs,
    sample_prompts,
)

if TYPE_CHECKING:
    from core.events import EventSink
    from core.result import JobResult
    from core.settings import Settings
    from core.spec import JobSpec


def end_samples(spec: JobSpec, result: JobResult, *, settings: Settings,
                on_event: EventSink | None = None) -> list[Sample]:
    """The run's samples, the final step's included. SimpleTuner 4.10.1 skips its validation after the last step,
    so when max_train_steps is no multiple of `every` they are rendered here, from the final LoRA, with the same
    prompts and validation settings, under SimpleTuner's file names. A failure costs only those images: a
    warning."""
    output = result.output_dir
    found = job_samples(spec, output) if output else []
    step = result.metrics.steps
    if output is None or spec.samples is None or not step or any(sample.step == step for sample in found):
        return found
    if result.lora_path is None and result.model_dir is None:
        return found
    from core.events import StageEvent

    report = on_event or (lambda _event: None)
    report(StageEvent(stage="samples", status="started", message=f"rendering the samples of step {step}"))
    try:
        render_end_samples(spec, result, step=step, settings=settings, on_event=report)
    except (JobError, OSError, ValueError) as exc:
        message = getattr(exc, "message", None) or str(exc)
        result.warnings.append(f"the samples of the final step {step} could not be rendered: {message}")
        report(StageEvent(stage="samples", status="failed", message=message))
        return found
    report(StageEvent(stage="samples", status="completed"))
    return job_samples(spec, output)


def render_end_samples(spec: JobSpec, result: JobResult, *, step: int, settings: Settings,
                       on_event: EventSink | None = None) -> list[Path]:
    """Each sample prompt rendered once by a one-shot generation process (core/generation/playground.py) into
    validation_images/step_<step>_sample_<i>_0_<W>x<H>.png (.mp4 for a video family, at the run's
    validation_num_video_frames), as SimpleTuner names its own; an image-to-video model's sample starts from the
    input image the training's samples had (the config's --validation_input: core/training/sample_image.py), an edit
    model's from its samples dataset's inputs (core/training/sample_pairs.py). Where
    the pipeline went on the GPU (all on it, offloaded) is said once, as a log event."""
    from core.events import LogLine
    from core.generation.playground import GenerateRequest, Playground

    if spec.samples is None or result.output_dir is None:
        return []
    config = result.trainer_files.get("config.json", {})
    width, height = _size(config.get("--validation_resolution") or spec.samples.resolution or 1024)
    negative = config.get("--validation_negative_prompt") or ""
    model = str(result.model_dir) if result.model_dir else spec.base_model
    folder = Path(result.output_dir) / SAMPLES_DIR
    frames = config.get("--validation_num_video_frames")
    if frames is None and spec.model_family in VIDEO_FAMILIES:
        frames = VIDEO_FRAMES
    inputs: dict[str, Path | list[Path]] = {**sample_inputs(config),
                                            **{name: edit.inputs for name, edit in edit_samples(config).items()}}
    playground = Playground(settings=settings)
    written: list[Path] = []
    try:
        for (shortname, prompt), item in zip(sample_prompts(spec.samples, spec.trigger_word).items(),
                                             spec.samples.prompts, strict=True):
            own = prompt_settings(item)  # a prompt's own settings win over the run's
            request = GenerateRequest(
                prompt=prompt, negative_prompt=negative,
                seed=own.seed if own.seed is not None else int(config.get("--validation_seed", spec.samples.seed)),
                steps=own.steps or int(config.get("--validation_num_inference_steps") or DEFAULT_STEPS),
                guidance=own.guidance if own.guidance is not None
                else float(config.get("--validation_guidance", DEFAULT_GUIDANCE)),
                width=own.width or own.height or width, height=own.height or own.width or height,
                strength=own.lora_scale if own.lora_scale is not None else 1.0, frames=int(frames) if frames else None)
            stem = f"step_{step}_{shortname}_0_{request.width}x{request.height}"
            rendered = playground.generate(request, model=model, lora=result.lora_path, out_dir=folder, name=stem,
                                           input_image=inputs.get(shortname))
            if not written and rendered.plan is not None and on_event is not None:
                on_event(LogLine(f"end-of-run samples: {rendered.plan.describe()}"))
            first = rendered.images[0]
            written.append(first.replace(folder / f"{stem}{first.suffix}"))
    finally:
        playground.stop(reason="the end samples are rendered")
    return written


def _size(resolution: object) -> tuple[int, int]:
    """(width, height) from SimpleTuner's validation_resolution: 'WxH' (the first of a list) or a side."""
    first = str(resolution).split(",")[0].strip()
    width, _, height = first.partition("x")
    side = int(float(width))
    return side // 8 * 8, (int(float(height)) if height else side) // 8 * 8
