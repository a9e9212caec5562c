"""Class images for regularisation, rendered by the base model alone before training (`dataset.reg_generate`,
docs/first-lora.md): `count` images of the prompt ("a photo of a man"), image i with seed + i, each with the prompt
as its caption, into the job's `dataset/reg/`, which the trainer config then gives its regularisation backend
(core/training/subsets.py) as it does a dataset's own reg/ folder.

They render through the playground's generation process (core/generation/playground.py: tools/generate_images.py in
the trainer env, its GPU memory planned first by core/generation/preview_fit.py), one request per image so the
status can say how far it is and a cancel stops it between two. The rendered set is kept in the cache
(core/cache/reg_images.py) under the base model's identity and the request; a second job with the same request
links them from there and renders nothing.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.cache import Cache, keep_reg_images, reg_images_key, restore_reg_images
from core.dataset import REG_DIR, Manifest, Subsets, caption_options
from core.errors import DatasetError
from core.events import EventSink, LogLine, StageEvent
from core.generation.playground import GENERATE_SCRIPT, GenerateRequest, Playground
from core.training import resolved_defaults

if TYPE_CHECKING:
    from core.cancel import Cancel
    from core.jobdir import JobDir
    from core.settings import Settings
    from core.spec import JobSpec
    from core.training import GpuPlan

STAGE = "reg_images"
"""The pipeline stage's name (core/pipeline.py), which its progress events carry."""
STEM = "class"
"""Rendered image i is reg/class_<i>.png, its caption reg/class_<i>.txt."""
MIN_SIDE, MAX_SIDE = 64, 2048


def render_reg_images(spec: JobSpec, manifest: Manifest, *, job: JobDir, plan: GpuPlan | None, settings: Settings,
                      on_event: EventSink, cancel: Cancel, model_ready: Callable[[], object]) -> Manifest:
    """The manifest with the job's class images as its regularisation images: from the cache, or rendered (after
    `model_ready`, the base model's download) and kept there. Refused (naming dataset.reg_generate) for a dataset
    that has regularisation images of its own, or edit pairs."""
    wanted = spec.source.reg_generate
    if wanted is None:
        return manifest
    if manifest.subsets is not None and manifest.subsets.reg:
        raise DatasetError(f"the dataset has {len(manifest.subsets.reg)} regularisation images of its own (a reg/ "
                           "folder): use them or reg_generate, not both", field="dataset.reg_generate")
    if manifest.pairs is not None:
        raise DatasetError("a dataset of edit pairs uses no regularisation images", field="dataset.reg_generate")
    side = wanted.size or training_side(spec, plan=plan)
    request = {"prompt": wanted.prompt, "negative_prompt": wanted.negative_prompt, "count": wanted.count,
               "size": side, "seed": wanted.seed, "steps": wanted.steps, "guidance": wanted.guidance}
    dest = job.dataset / REG_DIR
    if dest.exists():
        shutil.rmtree(dest)
    cache = Cache.from_settings(settings) if spec.cache else None
    key = _key(cache, request, spec=spec, settings=settings)
    restored = restore_reg_images(cache, key, dest) if cache is not None and key else None
    if restored is not None:
        on_event(LogLine(f"{wanted.count} class images from the cache (the same base model and request; rendering "
                         f"them took {restored[1]:.1f}s)"))
    else:
        model_ready()  # a Hub model's files, and the commit its identity names
        key = key or _key(cache, request, spec=spec, settings=settings)
        started = time.monotonic()
        _render(spec, request, dest=dest, settings=settings, on_event=on_event, cancel=cancel)
        if cache is not None and key and keep_reg_images(cache, key, dest, build_s=time.monotonic() - started):
            on_event(LogLine("the class images are kept in the cache for the next job"))
    images = sorted(path for path in dest.glob(f"{STEM}_*.png"))
    if len(images) != wanted.count:
        raise DatasetError(f"{len(images)} class images in {dest.name}/, {wanted.count} asked",
                           field="dataset.reg_generate")
    subsets = manifest.subsets or Subsets()
    subsets.reg_root, subsets.reg, subsets.reg_generated = dest, images, len(images)
    manifest.subsets = subsets
    return manifest


def training_side(spec: JobSpec, *, plan: GpuPlan | None) -> int:
    """The square side the training resolution means: config.resolution (pixels, or megapixels for an "area"
    resolution_type), else the trainer config's default for this GPU; a multiple of 8 from 64 to 2048."""
    defaults = resolved_defaults(spec, plan=plan)
    value = float(spec.config.get("resolution", defaults["resolution"]))
    kind = str(spec.config.get("resolution_type", defaults["resolution_type"]))
    side = math.sqrt(value) * 1024 if kind == "area" and value <= 16 else value  # a large "area" value is an edge
    return min(max(int(side) // 8 * 8, MIN_SIDE), MAX_SIDE)


def _key(cache: Cache | None, request: dict[str, Any], *, spec: JobSpec, settings: Settings) -> str | None:
    if cache is None:
        return None
    return reg_images_key(request, base_model=spec.base_model, config=spec.config, settings=settings,
                          script=GENERATE_SCRIPT)


def _render(spec: JobSpec, request: dict[str, Any], *, dest: Path, settings: Settings, on_event: EventSink,
            cancel: Cancel) -> None:
    """Each image in its own request (seed + i), its caption beside it: the prompt, no trigger word."""
    rendering = dest.with_name(f"{dest.name}-rendering")
    shutil.rmtree(rendering, ignore_errors=True)
    rendering.mkdir(parents=True)
    extension = caption_options(spec).extension
    count, playground = int(request["count"]), Playground(settings=settings)
    started = time.monotonic()
    try:
        for index in range(count):
            cancel.check("while rendering the class images")
            render = GenerateRequest(prompt=request["prompt"], negative_prompt=request["negative_prompt"],
                                     seed=int(request["seed"]) + index, steps=request["steps"],
                                     guidance=request["guidance"], width=request["size"], height=request["size"])
            name = f"{STEM}_{index:04d}"
            rendered = playground.generate(render, model=spec.base_model, lora=None, out_dir=rendering, name=name,
                                           cancel=cancel)
            if index == 0 and rendered.plan is not None:
                on_event(LogLine(f"class images: {rendered.plan.describe()}"))
            rendered.images[0].replace(rendering / f"{name}.png")
            (rendering / f"{name}{extension}").write_text(request["prompt"], encoding="utf-8")
            took = time.monotonic() - started
            on_event(StageEvent(stage=STAGE, status="progress",
                                message=f"rendered {index + 1}/{count} class images "
                                        f"({took / (index + 1):.1f}s each)"))
    finally:
        playground.stop(reason="the class images are rendered")
    rendering.replace(dest)
