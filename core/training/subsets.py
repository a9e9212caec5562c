"""A dataset's subsets (core/dataset/subsets.py) as SimpleTuner backends and flags (docs/first-lora.md):

- regularisation images: an image backend of their own with `is_regularisation_data: true` (SimpleTuner trains them
  with the LoRA turned off for the target, so the LoRA keeps the class as the base model drew it), their own
  captions;
- masks: a conditioning backend, `conditioning_type: "mask"`, linked from the image backend by `conditioning_data`;
  its files carry the image's file names, so each mask meets its image;
- held-out images: an `eval` backend; SimpleTuner computes the evaluation loss on them every `eval_steps_interval`
  steps (the checkpoint interval here), over `num_eval_images` of them, and logs it as `loss/val/<id>` to its trackers.
  The `simpletuner` tracker (a JSON-lines file in the output folder, core/training/eval_loss.py) is added so the
  project reads it. SimpleTuner only evaluates when its validation is on: a job with held-out images keeps it on.
"""

from __future__ import annotations

from typing import Any

from core.dataset import MASK_REASONS, Manifest, Subsets
from core.jobdir import JobDir
from core.spec import JobSpec

MASKS_ID = "masks"
REG_ID = "regularisation"
EVAL_ID = "eval"
MAX_EVAL_IMAGES = 16
"""Held-out images evaluated at each checkpoint (each is run through `eval_timesteps` noise levels, 28 by
default): more are never read."""
METRICS_TRACKER = "simpletuner"
"""SimpleTuner's own tracker: training_metrics.jsonl in the output folder, where the evaluation loss is read."""
_MASK_KEYS = ("resolution", "resolution_type", "minimum_image_size", "maximum_image_size", "target_downsample_size",
              "crop", "crop_style", "crop_aspect", "crop_aspect_buckets")
"""Image backend settings the mask backend repeats, so a mask is cropped and sized as its image."""


def subset_backends(image: dict[str, Any], subsets: Subsets | None, *, job: JobDir,
                    on_cpu: dict[str, Any]) -> list[dict[str, Any]]:
    """The backends of the dataset's subsets, after the image backend `image` (which a mask backend is linked
    from: its `conditioning_data` is set here)."""
    if subsets is None:
        return []
    backends: list[dict[str, Any]] = []
    plain = {key: value for key, value in image.items() if key != "conditioning_data"}
    if subsets.masks_root is not None:
        image["conditioning_data"] = MASKS_ID
        backends.append({"id": MASKS_ID, "type": "local", "dataset_type": "conditioning", "conditioning_type": "mask",
                         "instance_data_dir": str(subsets.masks_root),
                         **{key: image[key] for key in _MASK_KEYS if key in image},
                         "cache_dir_vae": str(job.cache / f"vae-{MASKS_ID}"), **on_cpu})
    if subsets.reg_root is not None and subsets.reg:
        backends.append({**plain, "id": REG_ID, "instance_data_dir": str(subsets.reg_root),
                         "is_regularisation_data": True, "cache_dir_vae": str(job.cache / f"vae-{REG_ID}")})
    if subsets.eval_root is not None and subsets.eval:
        held_out = {key: value for key, value in plain.items() if key not in ("repeats", "caption_shuffle")}
        backends.append({**held_out, "id": EVAL_ID, "dataset_type": "eval",
                         "instance_data_dir": str(subsets.eval_root),
                         "cache_dir_vae": str(job.cache / f"vae-{EVAL_ID}")})
    return backends


def eval_flags(subsets: Subsets | None, config: dict[str, Any]) -> dict[str, Any]:
    """The flags an evaluation needs, for a config.json (`config`, its flags with their '--') that has none of the
    job's own: the loss every checkpoint, over the held-out images, validation kept on, the metrics tracker added
    to the job's own trackers. Empty without held-out images."""
    if subsets is None or not subsets.eval:
        return {}
    interval = config.get("--checkpointing_steps") or config.get("--checkpoint_step_interval")
    report = str(config.get("--report_to") or "none")
    trackers = [name.strip() for name in report.split(",") if name.strip() and name.strip().lower() != "none"]
    return {"--eval_steps_interval": interval, "--num_eval_images": min(len(subsets.eval), MAX_EVAL_IMAGES),
            "--eval_dataset_pooling": True, "--validation_disable": False,
            "--report_to": ",".join(dict.fromkeys([*trackers, METRICS_TRACKER]))}


def subsets_report(manifest: Manifest, spec: JobSpec) -> tuple[dict[str, Any] | None, list[str]]:
    """The preflight's view of the subsets: what was staged (regularisation and held-out images, masked images,
    the masks of no training image), and what the user should know (warnings)."""
    unpaired = [f"{item.name}: {item.reason}" for item in manifest.skipped if item.reason in MASK_REASONS]
    subsets = manifest.subsets
    warnings: list[str] = []
    options = spec.dataloader if not isinstance(spec.dataloader, list) else None
    if options is not None and options.backend_overrides.get("crop_style") == "face" \
            and not options.backend_overrides.get("crop"):
        warnings.append("dataloader.crop_style 'face' only applies with dataloader.crop true: images are not cropped")
    if subsets is None:
        if unpaired:
            warnings.append(f"{len(unpaired)} mask(s) have no training image and are not used: "
                            + "; ".join(unpaired[:5]))
        return ({"unpaired_masks": unpaired} if unpaired else None), warnings
    described = {**subsets.describe(), "unpaired_masks": unpaired}
    if isinstance(spec.dataloader, list):
        warnings.append("the dataset's reg/, eval/ folders and masks are not used with a dataloader list: "
                        "declare their backends in it")
        return described, warnings
    if subsets.masks and subsets.masks_filled:
        warnings.append(f"{subsets.masks_filled} of {subsets.masks + subsets.masks_filled} images have no "
                        "NAME.mask.png: they train on the whole image")
    if subsets.masks_resized:
        warnings.append(f"{len(subsets.masks_resized)} mask(s) were not the size of their image and were resized to "
                        f"it: {', '.join(subsets.masks_resized[:5])}")
    if unpaired:
        warnings.append(f"{len(unpaired)} mask(s) have no training image and are not used: " + "; ".join(unpaired[:5]))
    if subsets.eval and spec.config.get("validation_disable"):
        warnings.append("config.validation_disable is set: SimpleTuner computes no evaluation loss on the held-out "
                        "images")
    return described, warnings
