"""The job: one typed declaration of everything a training job says. No I/O beyond reading the flag list and a
local or cached model's model_index.json (core/simpletuner/families.py).

`parse_job(data)` is the only way in; every face (worker, UI, CLI) uses it. It accepts the RunPod envelope
(`{"input": {...}}`) or the bare job, SimpleTuner's native config keys with or without `--`, and the seed's
shorthand. Every error names its field.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from core.adapters import is_repo_id
from core.errors import SpecError
from core.settings import TABLES_DIR
from core.simpletuner import (
    FILE_CONTENT,
    INLINE_JSON,
    Expert,
    check_flag,
    check_training_kind,
    classify,
    implied_flags,
    is_edit_model,
    model_index_path,
    resolve_experts,
    resolve_family,
    takes_input_image,
)
from core.simpletuner import with_preset as with_lycoris_preset
from core.spec.captioning import CaptioningSpec
from core.spec.limits import (
    MAX_TAG,
    MAX_TAGS,
    MAX_TRIGGER_WORD,
    TAG,
    check_backend_value,
    check_maximum,
    check_native_backend,
    hub_licenses,
    moved_caches,
    scan_values,
)
from core.spec.reg_generate import RegGenerate, check_reg_generate
from core.spec.samples import SamplesSpec, check_trigger
from core.spec.webhook import WebhookSpec

FLAGS_FILE = TABLES_DIR / "simpletuner_flags.json"
MAX_CONTROL_DIRS = 3
"""Edit pairs take up to three inputs per target (Qwen-Image-Edit-2509 and later)."""
MAX_CONCEPTS = 64
MAX_PASSES = 1000
"""dataset.repeats: the most sub-folders, and the most passes per epoch for one."""
GOALS = ("likeness", "style", "object")
"""What a LoRA is for (core/training/goals.py): a person or character, a style, an object or concept."""
AUTO_RESUME = "auto"
"""resume_from's value for "the latest checkpoint at the job's own destination" (core/training/resume.py)."""

# The seed's and other trainers' friendly names -> SimpleTuner's native flag names.
SCHEDULE_FLAGS = {"steps": "max_train_steps", "epochs": "num_train_epochs"}
"""The two flags that lead SimpleTuner's schedule, by their shorthand: a job sets one of them, never both."""
CONFIG_SHORTHAND: dict[str, str] = {
    "model_name": "pretrained_model_name_or_path",
    "model": "pretrained_model_name_or_path",
    "base_model": "pretrained_model_name_or_path",
    "vae": "pretrained_vae_model_name_or_path",
    "steps": "max_train_steps",
    "max_steps": "max_train_steps",
    "epochs": "num_train_epochs",
    "batch_size": "train_batch_size",
    "lr": "learning_rate",
    "rank": "lora_rank",
    "network_dim": "lora_rank",
    "alpha": "lora_alpha",
    "network_alpha": "lora_alpha",
    "save_every_n_steps": "checkpoint_step_interval",
    # SimpleTuner's own legacy name, which it translates the same way.
    "checkpointing_steps": "checkpoint_step_interval",
    "precision": "mixed_precision",
}

# Flags that must be whole numbers >= the given minimum, and floats that must be > 0.
MINIMUM: dict[str, int] = {
    "max_train_steps": 0,
    "num_train_epochs": 0,
    "train_batch_size": 1,
    "gradient_accumulation_steps": 1,
    "lora_rank": 1,
    "checkpointing_steps": 1,
    "checkpoint_step_interval": 1,
    "checkpoints_total_limit": 1,
    "validation_steps": 1,
    "lr_warmup_steps": 0,
    "seed": 0,
    "num_processes": 1,
}
POSITIVE: set[str] = {"learning_rate", "resolution", "lora_alpha"}

# Keys of one SimpleTuner image backend (multidatabackend.json) accepted in the dataloader shorthand.
BACKEND_KEYS: set[str] = {
    "repeats", "resolution", "resolution_type", "minimum_image_size", "maximum_image_size",
    "target_downsample_size", "crop", "crop_style", "crop_aspect", "crop_aspect_buckets",
    "caption_strategy", "prepend_instance_prompt", "instance_prompt", "only_instance_prompt",
    "caption_dropout_probability", "probability", "skip_file_discovery", "preserve_data_backend_cache",
    "vae_cache_clear_each_epoch", "vae_cache_ondemand", "is_regularisation_data", "disable_validation",
    "hash_filenames", "metadata_backend", "aspect_bucket_rounding", "video",
}


@lru_cache(maxsize=1)
def simpletuner_flags() -> dict[str, dict[str, Any]]:
    """SimpleTuner's real flag list, generated from its own parser (tools/dump_simpletuner_flags.py)."""
    return json.loads(FLAGS_FILE.read_text())["flags"]


def model_families() -> list[str]:
    return list(simpletuner_flags()["model_family"]["choices"])


def _suggest(word: str, candidates: list[str]) -> str:
    """' (did you mean ...?)': names that hold the word as a part first ('adamw' -> 'torch-adamw'), then look-alikes."""
    parts = sorted((c for c in candidates if word.lower() in re.split(r"[-_+.]", c.lower()) and c != word),
                   key=lambda c: (not c.lower().endswith(word.lower()), len(c)))
    close = list(dict.fromkeys(parts + difflib.get_close_matches(word, candidates, n=3, cutoff=0.6)))[:3]
    if not close:
        return ""
    quoted = [f"'{c}'" for c in close]
    return f" (did you mean {quoted[0] if len(quoted) == 1 else ', '.join(quoted[:-1]) + ' or ' + quoted[-1]}?)"


def _coerce(name: str, value: Any, flag: dict[str, Any]) -> Any:  # noqa: C901 (one branch per SimpleTuner parser type, then the shared bounds)
    """Check one native flag's value against its parser type; return the value in its proper type."""
    kind = flag.get("type")
    if value is None:
        return None
    if kind == "bool":
        if isinstance(value, str) and value.strip().lower() in {"true", "false", "1", "0", "yes", "no"}:
            value = value.strip().lower() in {"true", "1", "yes"}
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, got {value!r}")
        return check_flag(name, value, flag)
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, (int, str)) or (
            isinstance(value, str) and not re.fullmatch(r"\s*-?\d+\s*", value)
        ):
            raise ValueError(f"must be a whole number, got {value!r}")
        value = int(value)
    elif kind == "float":
        if isinstance(value, bool):
            raise ValueError(f"must be a number, got {value!r}")
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"must be a number, got {value!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {value}")
    elif kind == "str" and isinstance(value, (dict, list)) and flag.get("nargs") is None and \
            classify(name, flag) not in (INLINE_JSON, FILE_CONTENT):
        raise ValueError(f"must be a single value, got {type(value).__name__}")
    choices = flag.get("choices")
    if choices and not isinstance(value, list) and value not in choices and str(value) not in choices:
        shown = ", ".join(map(str, choices[:12])) + (", ..." if len(choices) > 12 else "")
        raise ValueError(f"{value!r} is not one of: {shown}{_suggest(str(value), [str(c) for c in choices])}")
    if name in MINIMUM and isinstance(value, (int, float)) and value < MINIMUM[name]:
        raise ValueError(f"must be at least {MINIMUM[name]}, got {value}")
    if name in POSITIVE and isinstance(value, (int, float)) and value <= 0:
        raise ValueError(f"must be greater than 0, got {value}")
    check_maximum(name, value)
    return check_flag(name, value, flag)


def normalize_config(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Native or shorthand keys -> {native_name: typed value}; all problems raised at once, each by field."""
    flags = simpletuner_flags()
    known = sorted(set(flags) | set(CONFIG_SHORTHAND))
    out: dict[str, Any] = {}
    errors: list[dict] = []
    for key, value in raw.items():
        bare = key[2:] if key.startswith("--") else key
        name = CONFIG_SHORTHAND.get(bare, bare)
        field = f"config.{key}"
        if name not in flags:
            errors.append({"field": field, "message": f"unknown SimpleTuner option '{bare}'{_suggest(bare, known)}"})
            continue
        if name in out:
            errors.append({"field": field, "message": f"'{bare}' sets '{name}', which another key already sets"})
            continue
        try:
            out[name] = _coerce(name, value, flags[name])
        except ValueError as exc:
            errors.append({"field": field, "message": str(exc)})
    if errors:
        raise _spec_error(errors)
    return out


def _spec_error(errors: list[dict]) -> SpecError:
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return SpecError(f"{first['message']}{more}", field=first["field"], errors=errors)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class InlineImage(_Strict):
    url: str = Field(min_length=1)
    caption: str = ""


class DatasetSpec(_Strict):
    """Exactly one source: url (http/https/s3 archive or image), hf_repo, files, or a local path."""

    url: str | None = None
    hf_repo: str | None = None
    revision: str = "main"
    image_column: str | None = None
    caption_column: str | None = None
    files: list[InlineImage] | None = None
    path: str | None = None
    pairs: bool = True
    """Read the dataset as edit pairs where its layout says so (core/dataset/pairs.py); false: every image is a
    training image. A job with a dataloader list stages the dataset as it is."""
    control_dir: str | list[str] | None = None
    """Edit pairs: the folder(s) of input images, relative to the dataset, in input order (up to 3); each holds one
    file per target image, of the same name. Unset: `control/`, `control_2/`, `control_3/` or NAME_start/NAME_end
    names are recognised (core/dataset/pairs.py)."""
    repeats: dict[str, int] = Field(default_factory=dict)
    """Concepts (core/dataset/concepts.py): a sub-folder's name -> how many times each of its images is seen per
    epoch, as a kohya folder's number says it (`10_alice/` is {"10_alice": 10} without this). A sub-folder named here
    becomes a dataloader entry of its own."""

    @field_validator("repeats")
    @classmethod
    def _repeats(cls, value: dict[str, int]) -> dict[str, int]:
        if len(value) > MAX_CONCEPTS:
            raise ValueError(f"at most {MAX_CONCEPTS} sub-folders, got {len(value)}")
        for name, count in value.items():
            if not name or "/" in name or "\\" in name or name in (".", "..") or len(name) > 200:
                raise ValueError(f"each key must be the name of a sub-folder of the dataset, got {name!r}")
            if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_PASSES:
                raise ValueError(f"{name!r}: must be a whole number of passes from 1 to {MAX_PASSES}, got {count!r}")
        return value

    reg_dir: str | None = None
    """The folder of regularisation images, relative to the dataset (default `reg/`): trained without the trigger
    word as SimpleTuner's regularisation data (docs/first-lora.md)."""
    eval_dir: str | None = None
    """The folder of held-out images, relative to the dataset (default `eval/`): an evaluation loss is computed on
    them at each checkpoint, never trained on."""
    eval_share: float | None = Field(default=None, gt=0, le=0.5)
    """Without a held-out folder: this share of the images is held out for the evaluation loss (at least one)."""
    reg_generate: RegGenerate | None = None
    """Class images the base model renders before training, as the regularisation images (no reg folder then)."""

    @field_validator("reg_dir", "eval_dir")
    @classmethod
    def _subset_dir(cls, value: str | None) -> str | None:
        if value is not None:
            parts = [part for part in value.replace("\\", "/").split("/") if part not in ("", ".")]
            if not parts or ".." in parts or value.startswith(("/", "~")) or len(value) > 200:
                raise ValueError(f"must be a folder inside the dataset (e.g. 'reg'), got {value!r}")
        return value

    @field_validator("control_dir")
    @classmethod
    def _control_dir(cls, value: str | list[str] | None) -> str | list[str] | None:
        names = [value] if isinstance(value, str) else value or []
        if isinstance(value, list) and not 1 <= len(value) <= MAX_CONTROL_DIRS:
            raise ValueError(f"give 1 to {MAX_CONTROL_DIRS} folders, got {len(value)}")
        for name in names:
            parts = [part for part in name.replace("\\", "/").split("/") if part not in ("", ".")]
            if not parts or ".." in parts or name.startswith(("/", "~")) or len(name) > 200:
                raise ValueError(f"must be a folder inside the dataset (e.g. 'control'), got {name!r}")
        if len({name.strip("/") for name in names}) != len(names):
            raise ValueError("the same folder is named twice")
        return value

    @property
    def control_dirs(self) -> list[str] | None:
        """control_dir as a list (None: recognise the conventions)."""
        if self.control_dir is None:
            return None
        return [self.control_dir] if isinstance(self.control_dir, str) else list(self.control_dir)

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSpec:
        given = [name for name in ("url", "hf_repo", "files", "path") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of url, hf_repo, files, path" + (f" (got {', '.join(given)})" if given else "")
            )
        return self


class DataloaderOptions(_Strict):
    """The shorthand dataloader: our staging options plus native keys applied to the image backend we build."""

    model_config = ConfigDict(extra="allow", str_strip_whitespace=True)

    caption_extension: str = ".txt"
    shuffle_tags: bool = False
    keep_tokens: int = Field(default=0, ge=0)
    trigger_placement: Literal["prefix", "suffix"] = "prefix"
    clean_captions: bool = True

    @field_validator("caption_extension")
    @classmethod
    def _dotted(cls, value: str) -> str:
        if not re.fullmatch(r"\.?[A-Za-z0-9_]{1,16}", value):
            raise ValueError(f"must look like '.txt', got {value!r}")
        return value if value.startswith(".") else "." + value

    @model_validator(mode="after")
    def _known_backend_keys(self) -> DataloaderOptions:
        errors = []
        for key, value in (self.model_extra or {}).items():
            if key not in BACKEND_KEYS:
                known = sorted(BACKEND_KEYS | set(type(self).model_fields))
                errors.append({"field": f"dataloader.{key}",
                               "message": f"unknown dataloader option '{key}'{_suggest(key, known)}"})
                continue
            try:
                check_backend_value(key, value)
            except ValueError as exc:
                errors.append({"field": f"dataloader.{key}", "message": str(exc)})
        if errors:
            raise _spec_error(errors)
        return self

    @property
    def backend_overrides(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def unsupported(self) -> list[str]:
        """Shorthand that SimpleTuner has no equivalent for: said in warnings, never silently dropped.
        shuffle_tags and keep_tokens map to an image backend's caption_shuffle (enable, position_start)."""
        if self.keep_tokens and not self.shuffle_tags:
            return ["dataloader.keep_tokens: has no effect without shuffle_tags (it keeps the first tags in place)"]
        return []


BACKEND_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class HubSpec(_Strict):
    repo_id: str
    private: bool = True
    token: SecretStr | None = None
    include_checkpoints: bool = False
    on_failure: bool = False
    """Publish the checkpoints made so far when training fails, times out or is cancelled."""
    checkpoints: bool = False
    """Upload each full-state checkpoint to checkpoints/checkpoint-N/ of this repo while training goes on
    (core/publishing/checkpoints.py); resume_from "auto" continues from them."""
    license: str | None = None
    """One of the Hub's license identifiers (core/data/hub_licenses.json); 'other' for any other."""
    tags: list[str] = Field(default_factory=list, max_length=MAX_TAGS)
    checkpoint: Literal["last", "best"] | int = "last"
    """Which LoRA goes up: the final one, the checkpoint of lowest smoothed loss, or checkpoint-N
    (core/training/samples.py)."""

    @field_validator("checkpoint", mode="before")
    @classmethod
    def _checkpoint(cls, value: Any) -> Any:
        if value in ("last", "best") or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise ValueError(f'must be "last", "best" or a checkpoint\'s step (a whole number >= 1), got {value!r}')

    @field_validator("license")
    @classmethod
    def _license(cls, value: str | None) -> str | None:
        if value is not None and value not in hub_licenses():
            raise ValueError(f"{value!r} is not a Hub license identifier (e.g. apache-2.0, mit, openrail++, "
                             f"creativeml-openrail-m; 'other' for any other){_suggest(value, hub_licenses())}")
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        for tag in value:
            if not TAG.match(tag) or len(tag) > MAX_TAG:
                raise ValueError(f"each tag must be 1 to {MAX_TAG} letters, digits or ':._+/-', got {tag!r}")
        return value

    @field_validator("repo_id")
    @classmethod
    def _repo_id(cls, value: str) -> str:
        if not is_repo_id(value):
            raise ValueError(f"must be 'user-or-org/name' (letters, digits, '-', '_', '.'), got {value!r}")
        return value


class StorageSpec(_Strict):
    """Upload outputs to an S3-compatible bucket (BUCKET_ENDPOINT_URL and keys from the environment)."""

    bucket: str | None = None
    prefix: str = ""
    expires_s: int = Field(default=7 * 24 * 3600, ge=60, le=7 * 24 * 3600)
    checkpoints: bool = False
    """Upload each full-state checkpoint to <prefix>/checkpoints/checkpoint-N/ while training goes on."""


class JobSpec(_Strict):
    dataset_url: str | None = None
    dataset: DatasetSpec | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    dataloader: list[dict[str, Any]] | DataloaderOptions = Field(default_factory=DataloaderOptions)
    trigger_word: str | None = None
    hub: HubSpec | None = None
    storage: StorageSpec | None = None
    dry_run: bool = False
    timeout_s: int = Field(default=21600, gt=0, le=7 * 24 * 3600)
    resume_from: str | None = None
    """A checkpoint to continue (core/training/resume.py), or "auto": the latest one at this job's own hub or
    storage."""
    cache: bool = True
    """Reuse what an earlier job on this volume staged or computed (dataset, text embeddings, VAE latents) and keep
    what this one makes (core/cache/store.py); false: neither."""
    samples: SamplesSpec | None = None
    """Prompts rendered at each checkpoint and at the end (core/training/samples.py)."""
    captioning: CaptioningSpec | None = None
    """Caption the images before training (core/generation/captioning.py): the ones without a caption, or all."""
    experts: Literal["high", "low", "both"] | None = None
    """A two-expert model's (Wan 2.2 A14B, core/simpletuner/experts.py) experts to train: one, or both in sequence.
    Left out: the expert config.model_flavour names, else both. Refused for any other model."""
    goal: Literal["likeness", "style", "object"] | None = None
    """What the LoRA is for: sets rank, learning rate, steps from the dataset's size, caption strategy, resolution
    and crop (core/training/goals.py); what the job sets itself wins. Left out: no preset."""
    class_word: str | None = None
    """likeness and object: the class the trigger belongs to ("woman", "dog", "backpack"); captions without the
    trigger get "<trigger> <class_word>". Left out: the goal reads it from the captions (for the report)."""
    webhook: WebhookSpec | None = None
    """Where the job's events are posted, signed (core/publishing/webhook.py, docs/webhooks.md)."""

    @field_validator("samples")
    @classmethod
    def _samples(cls, value: SamplesSpec | None, info: ValidationInfo) -> SamplesSpec | None:
        check_trigger(value, info.data.get("trigger_word"))
        return value

    @field_validator("config", mode="before")
    @classmethod
    def _config(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise ValueError("must be an object of SimpleTuner options")
        return normalize_config(with_lycoris_preset(value))

    @field_validator("trigger_word")
    @classmethod
    def _trigger(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c in value for c in "\n\r\t")):
            raise ValueError("must be a non-empty word or phrase on one line")
        if value is not None and len(value) > MAX_TRIGGER_WORD:
            raise ValueError(f"must be at most {MAX_TRIGGER_WORD} characters, got {len(value)}")
        return value or None

    @field_validator("class_word")
    @classmethod
    def _class_word(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c in value for c in "\n\r\t,") or len(value) > MAX_TRIGGER_WORD):
            raise ValueError(f"must be a word or two on one line, no comma, at most {MAX_TRIGGER_WORD} characters")
        return value or None

    @field_validator("dataloader", mode="before")
    @classmethod
    def _dataloader(cls, value: Any) -> Any:
        if isinstance(value, list):
            errors = []
            for index, backend in enumerate(value):
                if not isinstance(backend, Mapping) or "id" not in backend:
                    raise ValueError(f"backend {index} must be an object with an 'id' (SimpleTuner's list form)")
                if not isinstance(backend["id"], str) or not BACKEND_ID.match(backend["id"]):
                    errors.append({"field": f"dataloader.{index}.id",
                                   "message": "must be 1 to 64 letters, digits, '.', '_' or '-'"})
                errors += check_native_backend(backend, f"dataloader.{index}")
            if errors:
                raise _spec_error(errors)
        return value

    @model_validator(mode="after")
    def _one_dataset(self) -> JobSpec:
        if self.dataset_url and self.dataset:
            raise ValueError("give dataset_url or dataset, not both")
        if self.dataset_url:
            self.dataset = DatasetSpec(url=self.dataset_url)
            self.dataset_url = None
        if self.dataset is None:
            raise ValueError("a job needs a dataset: dataset_url, or dataset with url, hf_repo, files or path")
        if not self.config.get("pretrained_model_name_or_path"):
            raise ValueError("config needs a base model: model_name or pretrained_model_name_or_path")
        # Family and flavour: the job's own, else SimpleTuner's Hub id table / the model's model_index.json / the name.
        native = self.dataloader if isinstance(self.dataloader, list) else None
        flavour_given = bool(self.config.get("model_flavour"))
        self.config.update(resolve_family(self.config, has_conditioning=native is not None and any(
            b.get("dataset_type") == "conditioning" or b.get("conditioning_data") for b in native),
            pairs_possible=native is None))
        self._check_experts(resolve_experts(self.config["model_family"], self.config.get("model_flavour"),
                                            asked=self.experts, flavour_given=flavour_given))
        return self

    @model_validator(mode="after")
    def _sample_input_image(self) -> JobSpec:
        if self.samples is None:
            return self
        family, flavour = self.config["model_family"], self.config.get("model_flavour")
        index = model_index_path(self.base_model)
        edit = is_edit_model(family, flavour, model_index=index)
        what = f"{family}{f' flavour {flavour!r}' if flavour else ''} ({self.base_model})"
        if self.samples.input_image is not None and edit:
            raise SpecError(f"{what} is an edit model: its samples take their input images from the dataset's "
                            "pairs (samples.hold_out holds pairs back from training for them)",
                            field="samples.input_image")
        if self.samples.input_image is not None and not takes_input_image(family, flavour, model_index=index):
            raise SpecError(f"{what} renders from text only: it takes no input image (an image-to-video model "
                            "does: a Wan i2v or ti2v flavour)", field="samples.input_image")
        pairs = edit and not isinstance(self.dataloader, list)  # a dataloader list brings its own validation
        if not self.samples.prompts and not pairs:
            raise SpecError("needs at least one prompt (only an edit model trained on pairs renders each sample "
                            "from its pair's instruction)", field="samples.prompts")
        if self.samples.hold_out and not pairs:
            raise SpecError(f"holds edit pairs back from training: {what} is no edit model trained on a dataset of "
                            "pairs", field="samples.hold_out")
        return self

    def _check_experts(self, experts: list[Expert]) -> None:
        """`experts` made explicit for a two-expert model (and the flavour its first expert's); what a job training
        both cannot do is refused here, naming the field."""
        if not experts:
            return
        self.experts = "both" if len(experts) > 1 else "high" if experts[0].name == "high" else "low"
        self.config["model_flavour"] = experts[0].flavour
        if len(experts) == 1:
            return
        if self.resume_from not in (None, AUTO_RESUME):
            raise SpecError('a job training both experts resumes with "auto" (each expert from its own '
                            'checkpoints); to continue one expert from a given checkpoint, set experts to it',
                            field="resume_from")
        if self.hub and self.hub.checkpoint != "last":
            raise SpecError("a job training both experts publishes each expert's last LoRA: leave hub.checkpoint "
                            "out, or train one expert", field="hub.checkpoint")

    @model_validator(mode="after")
    def _reg_generate(self) -> JobSpec:
        check_reg_generate(self)
        return self

    @model_validator(mode="after")
    def _training_kind(self) -> JobSpec:
        self.config.update(implied_flags(self.config))
        errors = check_training_kind(self.config, on_failure=bool(self.hub and self.hub.on_failure))
        if errors:
            raise _spec_error(errors)
        return self

    @property
    def model_family(self) -> str:
        return self.config["model_family"]

    @property
    def base_model(self) -> str:
        return str(self.config["pretrained_model_name_or_path"])

    @property
    def num_processes(self) -> int | None:
        """How many GPUs (one process each) the job trains on: config.num_processes; None: every visible one."""
        value = self.config.get("num_processes")
        return int(value) if value is not None else None

    @property
    def expert_runs(self) -> list[Expert]:
        """The experts this job trains, in order (core/simpletuner/experts.py); [] for a model with one denoiser."""
        if self.experts is None:
            return []
        return resolve_experts(self.model_family, self.config.get("model_flavour"), asked=self.experts,
                               flavour_given=False)

    def for_expert(self, expert: Expert) -> JobSpec:
        """This job as the one SimpleTuner run that trains `expert`."""
        return self.model_copy(update={"experts": expert.name,
                                       "config": {**self.config, "model_flavour": expert.flavour}})

    @property
    def source(self) -> DatasetSpec:
        """The dataset to stage: a validated job always has one (dataset_url becomes it). A dataloader list links
        its own conditioning backends: the dataset is staged as it is, never read as edit pairs."""
        if self.dataset is None:
            raise SpecError("a job needs a dataset: dataset_url, or dataset with url, hf_repo, files or path",
                            field="dataset")
        if isinstance(self.dataloader, list) and self.dataset.pairs:
            return self.dataset.model_copy(update={"pairs": False})
        return self.dataset

    def warnings(self) -> list[str]:
        return moved_caches(self.dataloader) if isinstance(self.dataloader, list) else self.dataloader.unsupported()

    def to_job_json(self) -> dict[str, Any]:
        """The job as the worker takes it (`{"input": ...}`), secrets left out; parse_job of it gives this spec."""
        data = self.model_dump(mode="json", exclude_defaults=True, exclude={"hub": {"token"}, "webhook": {"secret"}})
        data["config"] = dict(self.config)
        return {"input": data}


# Messages for the places the model validator checks, so the error names the right field.
_MODEL_LEVEL_FIELDS = {
    "give dataset_url or dataset": "dataset",
    "a job needs a dataset": "dataset",
    "config needs a base model": "config.model_name",
    "cannot tell the model family": "config.model_family",
}


def _field_of(error: Mapping[str, Any]) -> str:
    loc = [str(part) for part in error["loc"]]
    if not loc:
        message = error.get("msg", "")
        for start, name in _MODEL_LEVEL_FIELDS.items():
            if start in message:
                return name
        return "input"
    # Union members (list[...] | DataloaderOptions, a sample prompt's text | settings) appear in loc: dropped.
    loc = [part for part in loc if not part.startswith(("list[", "DataloaderOptions", "function-", "prompt-"))]
    return ".".join(loc)


def unwrap_input(data: Any) -> Any:
    """The job inside RunPod's envelope: `data["input"]` when `data` is {"input": ...} (or a whole RunPod job, with its
    "id"), else `data` as it is."""
    if isinstance(data, Mapping) and (set(data) == {"input"} or (
            "input" in data and isinstance(data["input"], Mapping) and "id" in data)):
        return data["input"]
    return data


def parse_job(data: Any) -> JobSpec:
    """Validate a job (bare or wrapped in RunPod's {"input": ...}); raise SpecError naming every bad field."""
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            message = f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            raise SpecError(message, field="input") from None
    if not isinstance(data, Mapping):
        raise SpecError("a job must be a JSON object", field="input")
    data = unwrap_input(data)
    if not isinstance(data, Mapping):
        raise SpecError("'input' must be a JSON object", field="input")
    scanned = scan_values(data, "")
    if scanned:
        raise _spec_error(_dedupe(scanned))
    try:
        return JobSpec.model_validate(data)
    except SpecError:
        raise
    except ValidationError as exc:
        raise validation_error(exc, fields_near=_fields_near) from None


def validation_error(exc: ValidationError, *, prefix: str = "", whole: str = "input", stage: str | None = None,
                     fields_near: Callable[[tuple], list[str]] | None = None) -> SpecError:
    """The one translation of a pydantic ValidationError into a SpecError naming every bad field: `prefix` + the
    field's path (`whole` for the object itself, unless the message names a job's field), pydantic's "Value
    error, " dropped, an extra field said as "unknown field" (with the nearest of `fields_near(loc)`'s names), a
    nested SpecError's own errors kept. `stage`: the stage the error is raised in (default SpecError's)."""
    errors = []
    for error in exc.errors(include_url=False):
        nested = error.get("ctx", {}).get("error")
        if isinstance(nested, SpecError):
            errors.extend(nested.errors)
            continue
        if error["type"] == "list_type" and any(str(part).startswith("list[") for part in error["loc"]):
            continue  # the dict form of a list-or-dict field: the dict branch reports the real problem
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field" + (_suggest(str(error["loc"][-1]), fields_near(error["loc"]))
                                         if fields_near else "")
        field = _field_of(error)
        errors.append({"field": whole if field == "input" else prefix + field, "message": message})
    found = _spec_error(_dedupe(errors))
    if stage is not None:
        found.stage = stage
    return found


def _fields_near(loc: tuple) -> list[str]:
    models: dict[str, type[BaseModel]] = {"dataset": DatasetSpec, "hub": HubSpec, "storage": StorageSpec,
                                          "samples": SamplesSpec, "captioning": CaptioningSpec,
                                          "webhook": WebhookSpec}
    model = models.get(str(loc[0])) if len(loc) > 1 else JobSpec
    return list(model.model_fields) if model else []


def _dedupe(errors: list[dict]) -> list[dict]:
    seen, out = set(), []
    for error in errors:
        key = (error["field"], error["message"])
        if key not in seen:
            seen.add(key)
            out.append(error)
    return out
