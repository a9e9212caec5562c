"""The preflight report: what will be trained on, and what would make SimpleTuner fail late, before a GPU minute.

SimpleTuner's most common late failure is "No images were discovered by the bucket manager": every image is under
`minimum_image_size`, or every aspect bucket holds fewer samples than the batch size. Both are computed here from
the staged manifest and the same defaults the trainer-config builder uses (the constants below are the one place
those defaults live).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from core.dataset import Manifest, has_trigger
from core.spec import JobSpec
from core.trainer_config import (  # the trainer-config builder's defaults: one place for both
    DEFAULT_MINIMUM_IMAGE_SIZE,
    DEFAULT_RESOLUTION,
    DEFAULT_RESOLUTION_TYPE,
    DEFAULT_STEPS,
    DEFAULT_TRAIN_BATCH_SIZE,
)

FEW_IMAGES = 5

# Reasons that mean "this looked like an image but could not be used" (the rest are archive clutter).
IMAGE_FAILURES = {"corrupt image", "not a decodable image", "too many pixels"}


@dataclass
class PreflightReport:
    images_found: int
    images_usable: int
    images_skipped: int
    skipped_by_reason: dict[str, int]
    caption_sources: dict[str, int]
    caption_coverage: float
    """Share of images with their own caption (file, inline or column), not a fallback."""
    trigger_word: str | None
    trigger_word_coverage: float | None
    width: dict[str, float]
    height: dict[str, float]
    resolution: float
    resolution_type: str
    minimum_image_size: float | None
    below_minimum: int
    below_resolution: int
    repeats: int
    train_batch_size: int
    gradient_accumulation_steps: int
    steps_per_epoch: int
    num_train_epochs: int | None
    max_train_steps: int | None
    total_steps: int
    source: str = ""
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Backend:
    resolution: float
    resolution_type: str
    minimum_image_size: float | None
    repeats: int
    crop: bool
    crop_aspect: str


def _int(value: Any, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except (TypeError, ValueError):
        return default


def backend_settings(spec: JobSpec) -> _Backend:
    """The image backend's effective resolution, minimum size, repeats and crop, as SimpleTuner will see them."""
    config = spec.config
    resolution = float(config.get("resolution", DEFAULT_RESOLUTION))
    resolution_type = str(config.get("resolution_type", DEFAULT_RESOLUTION_TYPE))
    if isinstance(spec.dataloader, list):
        images = [b for b in spec.dataloader if b.get("dataset_type", "image") == "image"]
        backend = images[0] if images else {}
        minimum = backend.get("minimum_image_size", config.get("minimum_image_size"))
    else:
        backend = spec.dataloader.backend_overrides
        resolution = float(backend.get("resolution", resolution))
        minimum = backend.get("minimum_image_size", min(DEFAULT_MINIMUM_IMAGE_SIZE, resolution))
    resolution = float(backend.get("resolution", resolution))
    crop = bool(backend.get("crop", False))
    return _Backend(
        resolution=resolution,
        resolution_type=str(backend.get("resolution_type", resolution_type)),
        minimum_image_size=float(minimum) if minimum else None,
        repeats=_int(backend.get("repeats"), 0),
        crop=crop,
        crop_aspect=str(backend.get("crop_aspect", "square")) if crop else "preserve",
    )


def _meets(width: int, height: int, minimum: float | None, resolution_type: str) -> bool:
    """SimpleTuner's meets_resolution_requirements: pixel compares both edges, area compares megapixels."""
    if not minimum:
        return True
    if resolution_type == "pixel":
        return width >= minimum and height >= minimum
    if resolution_type == "area":
        return width * height / 1_000_000 >= minimum
    return width * height >= minimum * minimum  # pixel_area: an edge length turned into an area


def _below_resolution(width: int, height: int, resolution: float, resolution_type: str) -> bool:
    if resolution_type == "pixel":
        return min(width, height) < resolution
    if resolution_type == "area":
        return width * height / 1_000_000 < resolution
    return width * height < resolution * resolution


def _describe_minimum(minimum: float, resolution_type: str) -> str:
    if resolution_type == "area":
        return f"{minimum:g} megapixels"
    if resolution_type == "pixel":
        return f"{minimum:g} px on the shorter side"
    return f"{minimum:g}x{minimum:g} px in area"


def _stats(values: list[int]) -> dict[str, float]:
    if not values:
        return {"min": 0, "max": 0, "median": 0}
    return {"min": min(values), "max": max(values), "median": statistics.median(values)}


def _schedule(spec: JobSpec) -> tuple[int | None, int | None]:
    """(num_train_epochs, max_train_steps) as the trainer config will set them."""
    config = spec.config
    if "max_train_steps" not in config and "num_train_epochs" not in config:
        return 0, DEFAULT_STEPS
    return _int(config.get("num_train_epochs"), 0), _int(config.get("max_train_steps"), 0)


def preflight(manifest: Manifest, spec: JobSpec) -> PreflightReport:
    backend = backend_settings(spec)
    images = manifest.images
    skipped = Counter(item.reason for item in manifest.skipped)
    failed_images = sum(count for reason, count in skipped.items() if reason in IMAGE_FAILURES)
    sources = Counter(entry.caption_source for entry in images)
    own = sum(sources[name] for name in ("file", "inline", "column"))
    trigger = spec.trigger_word
    kept = [e for e in images if _meets(e.width, e.height, backend.minimum_image_size, backend.resolution_type)]
    below_minimum = len(images) - len(kept)
    below_resolution = sum(
        _below_resolution(e.width, e.height, backend.resolution, backend.resolution_type) for e in images
    )
    batch = _int(spec.config.get("train_batch_size"), DEFAULT_TRAIN_BATCH_SIZE)
    accumulation = _int(spec.config.get("gradient_accumulation_steps"), 1)
    samples = len(kept) * (1 + backend.repeats)
    steps_per_epoch = math.ceil(samples / max(batch * accumulation, 1))
    epochs, max_steps = _schedule(spec)
    total_steps = max_steps if max_steps and max_steps > 0 else (epochs or 0) * steps_per_epoch

    report = PreflightReport(
        images_found=len(images) + failed_images,
        images_usable=len(images),
        images_skipped=len(manifest.skipped),
        skipped_by_reason=dict(skipped.most_common()),
        caption_sources=dict(sources.most_common()),
        caption_coverage=round(own / len(images), 4) if images else 0.0,
        trigger_word=trigger,
        trigger_word_coverage=(
            round(sum(has_trigger(e.caption, trigger) for e in images) / len(images), 4) if trigger and images else None
        ),
        width=_stats([e.width for e in images]),
        height=_stats([e.height for e in images]),
        resolution=backend.resolution,
        resolution_type=backend.resolution_type,
        minimum_image_size=backend.minimum_image_size,
        below_minimum=below_minimum,
        below_resolution=below_resolution,
        repeats=backend.repeats,
        train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        steps_per_epoch=steps_per_epoch,
        num_train_epochs=epochs,
        max_train_steps=max_steps,
        total_steps=total_steps,
        source=manifest.source,
    )
    _judge(report, manifest=manifest, backend=backend, kept=len(kept), failed_images=failed_images)
    return report


def _judge(report: PreflightReport, *, manifest: Manifest, backend: _Backend, kept: int, failed_images: int) -> None:
    """Fill in the errors (training would fail) and warnings (training would be worse than the user expects)."""
    usable = report.images_usable
    errors, warnings = report.errors, report.warnings
    minimum = backend.minimum_image_size
    if usable == 0:
        errors.append(f"no usable images in {manifest.source}")
        return
    if kept == 0 and minimum:
        largest = max(min(e.width, e.height) for e in manifest.images)
        limit = _describe_minimum(minimum, backend.resolution_type)
        errors.append(
            f"all {usable} images are smaller than minimum_image_size ({limit}; the largest image's shorter side is"
            f" {largest} px): SimpleTuner would stop with 'No images were discovered by the bucket manager'."
            f" Fix: set dataloader.minimum_image_size to {largest} or lower (and config.resolution to match),"
            " or use larger images"
        )
    elif report.below_minimum:
        warnings.append(
            f"{report.below_minimum} of {usable} images are smaller than minimum_image_size"
            f" ({_describe_minimum(minimum or 0, backend.resolution_type)}) and will be left out by SimpleTuner"
        )
    if kept and kept * (1 + backend.repeats) < report.train_batch_size:
        errors.append(
            f"train_batch_size {report.train_batch_size} is larger than the {kept} usable images x"
            f" {1 + backend.repeats} (repeats + 1): SimpleTuner drops buckets smaller than a batch and would find no"
            " images. Fix: lower config.train_batch_size or raise dataloader.repeats"
        )
    elif kept and not (backend.crop and backend.crop_aspect == "square"):
        _bucket_warning(report, manifest=manifest, backend=backend)
    if report.total_steps <= 0:
        errors.append("nothing to train: set config.max_train_steps or config.num_train_epochs above 0")
    if usable < FEW_IMAGES:
        warnings.append(f"only {usable} usable images: a LoRA usually needs 10 or more for a stable result")
    missing = report.caption_sources.get("trigger_word", 0) + report.caption_sources.get("file_name", 0)
    if missing:
        fallback = "the trigger word" if report.trigger_word else "the file name"
        warnings.append(f"{missing} of {usable} images have no caption; {fallback} is used as their caption")
    if report.below_resolution:
        warnings.append(
            f"{report.below_resolution} of {usable} images are smaller than the training resolution"
            f" ({backend.resolution:g}, {backend.resolution_type}) and will be upscaled (softer results);"
            " lower config.resolution or use larger images"
        )
    if failed_images:
        warnings.append(f"{failed_images} image files could not be decoded and were skipped (see skipped_by_reason)")


def _bucket_warning(report: PreflightReport, *, manifest: Manifest, backend: _Backend) -> None:
    """Without square crops SimpleTuner buckets by aspect ratio and drops buckets smaller than one batch."""
    if report.train_batch_size <= 1:
        return
    buckets = Counter(
        round(e.width / e.height, 2)
        for e in manifest.images
        if _meets(e.width, e.height, backend.minimum_image_size, backend.resolution_type)
    )
    small = sum(count for count in buckets.values() if count * (1 + backend.repeats) < report.train_batch_size)
    if small:
        report.warnings.append(
            f"about {small} images sit in aspect-ratio groups smaller than train_batch_size"
            f" {report.train_batch_size} and may be dropped; set dataloader.crop true with crop_aspect 'square'"
            " or lower the batch size"
        )
