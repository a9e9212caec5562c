"""Playground tab: try the trained LoRA. Prompt, negative prompt, seed, steps, guidance, LoRA strength, and which
checkpoint (or "none", the base model); side by side, the same prompt and seed with and without the LoRA.

Images come from the registry's Playground (core/generation/playground.py): a generation process that stays warm between
clicks (the pipeline loaded once, a LoRA once per checkpoint), stopped before a training starts and when idle. A
click polls the render in a thread and streams its status, so no request waits longer than RunPod's proxy allows.
The status says where the pipeline went on the GPU (all on it, or offloaded: core/generation/preview_fit.py); a video
model's clip (.mp4) plays in the same gallery. An image-to-video model's clip starts from the uploaded input image
(checked as a generate job's `input_image` is), and an edit model edits it; else the run's samples' input image
(an edit run's first sample's input) is used; a model that renders from text only refuses an upload, naming the
field.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from pydantic import ValidationError

from app.edge import surface
from app.state import RunRegistry
from core.dataset import input_image_file
from core.errors import JobError
from core.generation import GenerateRequest, Rendered
from core.jobdir import new_job_id
from core.outputs import lora_checkpoints, lora_file
from core.spec import validation_error
from core.training import sample_inputs

FINAL = "final LoRA"
NONE = "none (base model)"
POLL_S = 0.5


@dataclass
class PlaygroundTab:
    tab: gr.Tab
    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    seed: gr.Number
    steps: gr.Slider
    guidance: gr.Slider
    strength: gr.Slider
    checkpoint: gr.Dropdown
    compare: gr.Checkbox
    input_image: gr.Image
    generate_button: gr.Button
    status: gr.Markdown
    images: gr.Gallery


def build() -> PlaygroundTab:
    with gr.Tab("Playground", id="playground") as tab:
        gr.Markdown("Try the chosen run's LoRA (Runs tab). The first image loads the model; the next reuse it.")
        with gr.Row():
            prompt = gr.Textbox(label="Prompt", lines=2, scale=3)
            negative_prompt = gr.Textbox(label="Negative prompt", lines=2, scale=2)
        with gr.Row():
            seed = gr.Number(42, label="Seed", precision=0, minimum=0)
            steps = gr.Slider(1, 100, value=20, step=1, label="Steps")
            guidance = gr.Slider(0, 20, value=5.0, step=0.1, label="Guidance")
            strength = gr.Slider(-1, 2, value=1.0, step=0.05, label="LoRA strength")
        with gr.Row():
            checkpoint = gr.Dropdown([FINAL, NONE], value=FINAL, label="Checkpoint", scale=2)
            compare = gr.Checkbox(True, label="Side by side with the base model (same prompt and seed)", scale=2)
            generate_button = gr.Button("Generate", variant="primary", scale=1)
        input_image = gr.Image(label="Input image: the image to edit (edit models) or the first frame (image-to-video "
                                     "models); else the run's sample input", type="filepath", sources=["upload"],
                               height=200)
        status = gr.Markdown()
        images = gr.Gallery(label="Images (and videos)", columns=2, height="auto", interactive=False,
                            object_fit="contain")
    return PlaygroundTab(tab, prompt, negative_prompt, seed, steps, guidance, strength, checkpoint, compare,
                         input_image, generate_button, status, images)


def checkpoint_choices(output_dir: Path | None) -> list[str]:
    """The final LoRA, each checkpoint that holds a LoRA (by step), and the base model."""
    if output_dir is None:
        return [NONE]
    return [FINAL, *(name for name, _ in lora_checkpoints(output_dir)), NONE]


def chosen_lora(output_dir: Path, choice: str) -> Path | None:
    if choice == NONE:
        return None
    final = choice in (FINAL, "", None)
    path = lora_file(output_dir if final else output_dir / choice)
    if not (final or choice in dict(lora_checkpoints(output_dir))) or not path.is_file():
        raise JobError(f"no LoRA for {choice!r} in the chosen run", field="checkpoint", stage="generate")
    return path


def bind(tab: PlaygroundTab, *, registry: RunRegistry) -> None:
    def refresh() -> Any:
        run = registry.chosen()
        output = run.result.output_dir if run and run.result else None
        return gr.update(choices=checkpoint_choices(output), value=FINAL if output else NONE)

    tab.tab.select(refresh, None, [tab.checkpoint], api_name="playground_checkpoints", show_progress="hidden")

    @surface
    def generate(prompt: str, negative_prompt: str, seed: float, steps: float, guidance: float, strength: float,
                 checkpoint: str, compare: bool, input_image: str | None = None) -> Iterator[tuple[str, list]]:
        """Render the prompt with the picked checkpoint of the chosen run (and, side by side, without the LoRA);
        `input_image`: an uploaded file, the first frame of an image-to-video model's clip."""
        registry.playground_device()  # a GPU no training holds (a training's memory is its own), or refused
        run = registry.chosen()
        if run is None or run.result is None or run.result.output_dir is None:
            raise JobError("nothing to try yet: train a LoRA first (Train tab)", field="checkpoint", stage="generate")
        config = run.result.trainer_files.get("config.json", {})
        resolution = int(config.get("--resolution") or 1024)
        frames = config.get("--validation_num_video_frames")  # a video family's clips: as long as its samples
        try:
            request = GenerateRequest(prompt=prompt or "", negative_prompt=negative_prompt or "", seed=int(seed),
                                      steps=int(steps), guidance=float(guidance), strength=float(strength),
                                      width=resolution // 8 * 8, height=resolution // 8 * 8,
                                      frames=int(frames) if frames else None)
        except ValidationError as exc:
            raise validation_error(exc, stage="generate") from None
        lora = chosen_lora(run.result.output_dir, checkpoint or FINAL)
        wanted = [(checkpoint or FINAL, lora)] + ([(NONE, None)] if compare and lora is not None else [])
        out_dir, name = Path(run.job_dir) / "playground", new_job_id()
        image = input_image_file(Path(input_image), out_dir, settings=registry.settings, name=f"{name}-input.png") \
            if input_image else next(iter(sample_inputs(config).values()), None)
        shown: list[tuple[str, str]] = []
        started = time.monotonic()
        for label, path in wanted:
            rendered = yield from _render_polled(registry, request, model=run.spec.base_model, lora=path,
                                                 out_dir=out_dir, name=f"{name}-{len(shown)}",
                                                 status=f"Rendering with {label}…", shown=shown, input_image=image)
            shown += [(str(image), f"{label} · seed {request.seed}") for image in rendered.images]
            warm = "warm" if rendered.warm.get("pipeline") else "cold: the model was loaded"
            placed = f" GPU: {rendered.plan.describe()}." if rendered.plan and rendered.plan.placement != "cpu" else ""
            yield f"{label}: {rendered.seconds.get('total', 0):.1f} s ({warm}).{placed}", list(shown)
        yield f"Done in {time.monotonic() - started:.1f} s.", list(shown)

    tab.generate_button.click(
        generate, [tab.prompt, tab.negative_prompt, tab.seed, tab.steps, tab.guidance, tab.strength, tab.checkpoint,
                   tab.compare, tab.input_image], [tab.status, tab.images], api_name="playground_generate")


def _render_polled(registry: RunRegistry, request: GenerateRequest, *, model: str, lora: Path | None, out_dir: Path,
                   name: str, status: str, shown: list,
                   input_image: Path | None = None) -> Generator[tuple[str, list], None, Rendered]:
    """Render on a thread, yielding the status twice a second; returns the Rendered (or raises its error)."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["rendered"] = registry.playground.generate(request, model=model, lora=lora, out_dir=out_dir,
                                                           name=name, input_image=input_image)
        except BaseException as exc:  # handed to the request's thread, which raises it
            box["error"] = exc

    worker = threading.Thread(target=work, daemon=True, name="playground-render")
    worker.start()
    while worker.is_alive():
        yield status, list(shown)
        worker.join(POLL_S)
    if "error" in box:
        raise box["error"]
    rendered: Rendered = box["rendered"]
    return rendered
