"""Work a model does besides training, each in the trainer env as a subprocess: auto-captioning, class images for
regularisation, the playground's generations (their GPU memory planned first: preview_fit), a run's end-of-run
samples, and the tiny demo models.

What other packages and the faces may use is listed in __all__."""

from core.generation.captioning import OWN_CAPTIONS, caption_stage, finish_caption, generate_captions
from core.generation.demo import (
    TINY_FAMILIES,
    TINY_FLAVOURS,
    build_tiny_captioner,
    build_tiny_model,
    write_demo_dataset,
)
from core.generation.end_samples import end_samples
from core.generation.playground import (
    GENERATE_SCRIPT,
    GenerateRequest,
    Playground,
    Rendered,
    parse_generate_job,
    plan_render,
    run_generate_job,
)
from core.generation.preview_fit import PreviewPlan, PreviewTooLarge, plan_preview
from core.generation.reg_images import render_reg_images

__all__ = [
    "GENERATE_SCRIPT",
    "OWN_CAPTIONS",
    "TINY_FAMILIES",
    "TINY_FLAVOURS",
    "GenerateRequest",
    "Playground",
    "PreviewPlan",
    "PreviewTooLarge",
    "Rendered",
    "build_tiny_captioner",
    "build_tiny_model",
    "caption_stage",
    "end_samples",
    "finish_caption",
    "generate_captions",
    "parse_generate_job",
    "plan_preview",
    "plan_render",
    "render_reg_images",
    "run_generate_job",
    "write_demo_dataset",
]
