"""The input image an image-to-video job's samples start from (their first frame), during training and at its end.

SimpleTuner 4.10.1 renders a Wan i2v flavour's validation from an image: given with `--validation_input` (a JSON
list of {"path", "prompt", "shortname"}), or, with `--validation_using_datasets`, frame 0 of a training clip
(`retrieve_validation_images` -> the sampler's `retrieve_validation_set` -> `_coerce_validation_image_input`). The
second prompts each image with its clip's caption under shortnames of its own, so the job's sample prompts would be
lost; here the same kind of image (the first frame of the job's first training clip by name, else its first image)
or the job's `samples.input_image` is written into the job's config folder and given through `--validation_input`
with the job's prompts and the `sample_N` shortnames (core/training/samples.py). The end-of-run samples read it back
from the config (core/generation/end_samples.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from core.dataset import Manifest, clip_first_frame, input_image_file
from core.simpletuner import is_edit_model, model_index_path, takes_input_image

if TYPE_CHECKING:
    from core.cancel import Cancel
    from core.jobdir import JobDir
    from core.settings import Settings
    from core.spec import JobSpec

SAMPLE_IMAGE_FILE = "sample_input_image.png"
VALIDATION_INPUT = "--validation_input"


def sample_input_image(spec: JobSpec, manifest: Manifest, *, job: JobDir, settings: Settings,
                       cancel: Cancel | None = None) -> Path | None:
    """The samples' input image, saved in the job's config folder; None for a job without samples or a model that
    renders from text only (a `samples.input_image` for one was refused with the job), and for an edit model, whose
    samples edit the dataset's own pairs (core/training/sample_pairs.py). A bad image is an InputImageError naming
    samples.input_image."""
    if spec.samples is None:
        return None
    index = model_index_path(spec.base_model, hf_cache=settings.hub_cache)
    flavour = spec.config.get("model_flavour")
    if not takes_input_image(spec.model_family, flavour, model_index=index) or is_edit_model(
            spec.model_family, flavour, model_index=index):
        return None
    target = job.config / SAMPLE_IMAGE_FILE
    if spec.samples.input_image is not None:
        return input_image_file(spec.samples.input_image, job.config, settings=settings, field="samples.input_image",
                                name=SAMPLE_IMAGE_FILE, cancel=cancel)
    clips = sorted(manifest.clips, key=lambda clip: clip.path.name)
    if clips:
        target.parent.mkdir(parents=True, exist_ok=True)
        return clip_first_frame(clips[0].path, target)
    images = sorted(manifest.images, key=lambda image: image.path.name)
    if images:
        return _still(images[0].path, target)
    return None


def _still(path: Path, target: Path) -> Path:
    """A staged training image (checked by staging) as the samples' PNG, at most 2048 px a side."""
    from PIL import Image, ImageOps

    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(path) as image:
        still = ImageOps.exif_transpose(image).convert("RGB")
    still.thumbnail((2048, 2048))
    still.save(target, format="PNG")
    return target


def sample_inputs(config: dict) -> dict[str, Path]:
    """shortname -> input image, from a trainer config.json's --validation_input, else an edit run's samples dataset
    (each sample's first input: core/training/sample_pairs.py); {} when it has neither."""
    from core.training.sample_pairs import edit_samples

    edits = {name: sample.inputs[0] for name, sample in edit_samples(config).items() if sample.inputs}
    value = config.get(VALIDATION_INPUT)
    if value is None and edits:
        return edits
    try:
        entries = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return {}
    if not isinstance(entries, list):
        return {}
    return {str(entry["shortname"]): Path(entry["path"]) for entry in entries
            if isinstance(entry, dict) and entry.get("shortname") and entry.get("path")}
