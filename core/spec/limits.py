"""The limits every job value obeys, whatever field it is in (docs/job-limits.md is the user's copy).

- No `{env:NAME}` anywhere: SimpleTuner's config loader and dataloader factory replace it with the variable's value,
  so a job could copy an endpoint secret into a prompt, a file name or a model card.
- Numbers are finite (JSON's NaN and Infinity are not numbers a trainer can use), and the settings that size a run
  have upper bounds.
- Strings are short and have no control characters (a newline in a caption is a second caption to SimpleTuner).
- A native dataloader list reads only the job's dataset and writes only the job's cache (core/training/config.py
  puts each cache folder there): `type` other than local, absolute or `..` paths and any other file are refused.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from core.settings import TABLES_DIR

PLACEHOLDER = re.compile(r"\{\s*env\s*:", re.IGNORECASE)
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
MAX_STRING = 4096
"""Any string in a job (URLs included: presigned ones run long)."""
MAX_TEXT = 2000
"""Prompts and captions."""
MAX_TRIGGER_WORD = 100
MAX_TAGS = 20
MAX_TAG = 64
TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._+/-]*$")
TEXT_FIELDS = frozenset({"validation_prompt", "validation_negative_prompt", "instance_prompt", "caption"})

# Upper bounds of the settings that size a run (lower bounds live in core/spec/job.py).
MAXIMUM: dict[str, float] = {
    "max_train_steps": 1_000_000,
    "num_train_epochs": 10_000,
    "lora_rank": 1024,
    "lora_alpha": 4096,
    "train_batch_size": 256,
    "vae_batch_size": 256,
    "gradient_accumulation_steps": 1024,
    "resolution": 4096,
    "checkpoint_step_interval": 1_000_000,
    "checkpoints_total_limit": 1000,
    "validation_steps": 1_000_000,
    "validation_num_inference_steps": 1000,
    "lr_warmup_steps": 1_000_000,
    "num_processes": 64,  # one process per GPU of one machine
}

LICENSES_FILE = TABLES_DIR / "hub_licenses.json"


@dataclass(frozen=True)
class ClipLimits:
    """The bounds on one video clip of a dataset (core/dataset/clips.py checks them from the container's metadata,
    before any frame is decoded). SimpleTuner decodes a whole clip into memory as RGB (3 bytes a pixel) before it
    trims it to num_frames, so the decoded size is what a "video bomb" attacks."""

    max_bytes: int = 4 * 1024**3
    max_seconds: float = 600.0
    max_frames: int = 5000
    """Frames of one clip (about 3 minutes at 25 fps)."""
    max_frame_pixels: int = 4096 * 4096
    max_decoded_pixels: int = 2_000_000_000
    """width x height x frames: about 6 GB of RGB once SimpleTuner has decoded the clip."""
    max_probe_packets: int = 64
    """Packets read to decode the first frame (a decoder holding back B-frames needs a few)."""


MAX_VIDEO_FRAMES = ClipLimits().max_frames


@dataclass(frozen=True)
class InputImageLimits:
    """The bounds on an input image a render is given (core/dataset/input_image.py): its bytes before anything is
    decoded, its pixels as its header declares them before the pixels are decoded."""

    max_bytes: int = 20 * 1024**2
    max_pixels: int = 4096 * 4096

    @property
    def max_text(self) -> int:
        """The longest text form: the bytes' base64 plus a data: URI's header."""
        return (self.max_bytes + 2) // 3 * 4 + 100


VIDEO_KEYS = ("num_frames", "min_frames", "max_frames", "is_i2v", "bucket_strategy", "frame_interval")
"""The keys of SimpleTuner's `video` block of a video backend (data_backend/factory.py, metadata/backends/base.py)."""


def hub_licenses() -> list[str]:
    """The license identifiers the Hub accepts in a model card (core/data/hub_licenses.json)."""
    return json.loads(LICENSES_FILE.read_text())["licenses"]


def scan_values(value: Any, field: str) -> list[dict]:
    """Errors for every placeholder, non-finite number, control character or overlong string at any depth."""
    errors: list[dict] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            name = str(key).removeprefix("--")
            if PLACEHOLDER.search(str(key)):
                errors.append({"field": f"{field}.{key}" if field else str(key),
                               "message": "'{env:...}' placeholders are not allowed"})
            errors += scan_values(item, f"{field}.{name}" if field else name)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            errors += scan_values(item, f"{field}.{index}")
    elif isinstance(value, float) and not math.isfinite(value):
        errors.append({"field": field, "message": f"must be a finite number, got {value}"})
    elif isinstance(value, str):
        message = string_problem(value, limit=MAX_TEXT if field.rsplit(".", 1)[-1] in TEXT_FIELDS else MAX_STRING)
        if message:
            errors.append({"field": field, "message": message})
    return errors


def string_problem(value: str, *, limit: int) -> str | None:
    if PLACEHOLDER.search(value):
        return "'{env:...}' placeholders are not allowed (they would read the endpoint's environment)"
    if CONTROL.search(value):
        return "must be one line without control characters (newlines, tabs, ...)"
    if len(value) > limit:
        return f"is {len(value)} characters long; the limit is {limit}"
    return None


def check_maximum(name: str, value: Any) -> None:
    if name in MAXIMUM and isinstance(value, (int, float)) and not isinstance(value, bool) and value > MAXIMUM[name]:
        raise ValueError(f"must be at most {MAXIMUM[name]:g}, got {value}")


# -- dataloader entries ---------------------------------------------------------------------------------------------

def _number(low: float, high: float, *, whole: bool = False):
    def check(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (whole and not isinstance(value, int)):
            raise ValueError(f"must be a {'whole number' if whole else 'number'}, got {value!r}")
        if not low <= value <= high:
            raise ValueError(f"must be between {low:g} and {high:g}, got {value}")
        return value
    return check


def _bool(value: Any) -> Any:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return value


def _choice(*options: str):
    def check(value: Any) -> Any:
        if value not in options:
            raise ValueError(f"{value!r} is not one of: {', '.join(options)}")
        return value
    return check


def _text(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError(f"must be text, got {type(value).__name__}")
    return value


def _buckets(value: Any) -> Any:
    if not isinstance(value, list) or not value or len(value) > 64:
        raise ValueError("must be a list of 1 to 64 numbers")
    for item in value:
        _number(0.01, 100)(item)
    return value


def _shuffle(value: Any) -> Any:
    if not isinstance(value, Mapping):
        raise ValueError("must be an object like {\"enable\": true, \"split_on\": \"comma\"}")
    return value


def _video(value: Any) -> Any:
    """SimpleTuner's video block: frame counts are whole numbers within the clip bound (the family's own rule on
    frame counts is checked where the family is known: core/training/video.py)."""
    if not isinstance(value, Mapping):
        raise ValueError('must be an object like {"num_frames": 81}')
    for key, item in value.items():
        if key not in VIDEO_KEYS:
            raise ValueError(f"unknown video option {key!r} (known: {', '.join(VIDEO_KEYS)})")
        if key in ("num_frames", "min_frames", "max_frames", "frame_interval"):
            try:
                _number(1, MAX_VIDEO_FRAMES, whole=True)(item)
            except ValueError as exc:
                raise ValueError(f"{key} {exc}") from None
        elif key == "is_i2v":
            _bool(item)
        else:
            _choice("aspect_ratio", "resolution_frames")(item)
    return value


# The image-backend keys a job may give (shorthand or native list), each with its check.
BACKEND_TYPES = {
    "repeats": _number(0, 10_000, whole=True),
    "resolution": _number(0.01, MAXIMUM["resolution"]),
    "resolution_type": _choice("pixel", "area", "pixel_area"),
    "minimum_image_size": _number(0, 16384),
    "maximum_image_size": _number(0, 16384),
    "target_downsample_size": _number(0, 16384),
    "crop": _bool,
    "crop_style": _choice("random", "corner", "center", "centre", "face"),
    "crop_aspect": _choice("square", "preserve", "random", "closest"),
    "crop_aspect_buckets": _buckets,
    "caption_strategy": _choice("textfile", "filename", "instanceprompt"),
    "prepend_instance_prompt": _bool,
    "instance_prompt": _text,
    "only_instance_prompt": _bool,
    "caption_dropout_probability": _number(0, 1),
    "probability": _number(0, 1),
    "skip_file_discovery": _text,
    "preserve_data_backend_cache": _bool,
    "vae_cache_clear_each_epoch": _bool,
    "vae_cache_ondemand": _bool,
    "is_regularisation_data": _bool,
    "is_regularization_data": _bool,
    "disable_validation": _bool,
    "hash_filenames": _bool,
    "metadata_backend": _choice("discovery", "json"),
    "aspect_bucket_rounding": _number(1, 9, whole=True),
    "caption_shuffle": _shuffle,
    "video": _video,
}
# Keys of a native list entry that name the data it reads: a folder inside the job's dataset.
DATA_KEYS = ("instance_data_dir", "instance_data_root")
# Keys that name a place on disk: caches are moved into the job's cache folder; anything else is refused.
PATH_KEY = re.compile(r"(_dir|_root|_path|_paths|_file|_files|_folder|_prefix|_list|_url|_endpoint)$|^cache|cache_dir|"
                      r"^aws_|^(huggingface|parquet|webshart|csv)$")
CACHE_KEY = re.compile(r"^cache_dir|cache_dir$")


def check_backend_value(key: str, value: Any) -> Any:
    checker = BACKEND_TYPES.get(key)
    return checker(value) if checker else value


def relative_data_dir(value: Any) -> str:
    """A dataset sub-folder as a clean relative path, or ValueError."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a folder inside the job's dataset, relative to it (e.g. 'portraits')")
    path = PurePosixPath(value.strip())
    if path.is_absolute() or value.strip().startswith("~") or ".." in path.parts or "\\" in value:
        raise ValueError(f"must be a folder inside the job's dataset, relative to it; got {value!r} (the dataset is "
                         "given by the job's dataset field)")
    return path.as_posix()


# Keys inside an entry (a conditioning generator's settings) that name a model SimpleTuner loads with from_pretrained:
# Hub repo ids only, never a local folder or a URL.
MODEL_KEY = re.compile(r"^(model|model_name|model_id|model_name_or_path|pretrained_model_name_or_path)$")
HUB_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def _nested_paths(value: Any, field: str) -> list[dict]:
    errors: list[dict] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            if MODEL_KEY.match(str(key)) and not (isinstance(item, str) and HUB_REPO.match(item) and ".." not in item):
                errors.append({"field": f"{field}.{key}", "message": "a model here loads from the Hub: give its repo "
                               f"id 'org/name' (local folders and URLs are not accepted), got {item!r}"})
            elif PATH_KEY.search(str(key)):
                errors.append({"field": f"{field}.{key}", "message": "names a file, folder or remote place; "
                               "a job's dataloader reads only its own dataset"})
            errors += _nested_paths(item, f"{field}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            errors += _nested_paths(item, f"{field}.{index}")
    return errors


def check_native_backend(backend: Mapping[str, Any], field: str) -> list[dict]:
    """Errors of one native multidatabackend entry (caches are not errors: they are moved into the job)."""
    errors: list[dict] = []
    kind = backend.get("type", "local")
    if kind != "local":
        errors.append({"field": f"{field}.type", "message": f"{kind!r} is not allowed: a job's dataloader reads only "
                       "its own staged dataset (type 'local'); give remote data as the job's dataset"})
    for key, value in backend.items():
        where = f"{field}.{key}"
        try:
            if key in DATA_KEYS:
                relative_data_dir(value)
            elif CACHE_KEY.search(key):
                continue
            elif PATH_KEY.search(key):
                errors.append({"field": where, "message": "names a file, folder or remote place; a job's dataloader "
                               "reads only its own dataset"})
            else:
                check_backend_value(key, value)
                errors += _nested_paths(value, where)
        except ValueError as exc:
            errors.append({"field": where, "message": str(exc)})
    return errors


def moved_caches(backends: Sequence[Mapping[str, Any]]) -> list[str]:
    """Warnings for the cache folders a native list named, which the job's own cache folder replaces."""
    return [f"dataloader.{index}.{key}: ignored; this job keeps its caches in its own directory"
            for index, backend in enumerate(backends) for key in backend if CACHE_KEY.search(key)]
