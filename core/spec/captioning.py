"""The job's `captioning` field: which model captions the dataset, which images, in which style.

Its own module, free of the rest of the core, so core/spec/job.py can declare the field without an import cycle (the
caption stage, core/generation/captioning.py, needs the dataset staging that itself reads the spec).
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.adapters import is_repo_id

CAPTION_MODELS: dict[str, str] = {
    "florence-2-large": "florence-community/Florence-2-large",
    "florence-2-base": "florence-community/Florence-2-base",
    "qwen2.5-vl-3b": "Qwen/Qwen2.5-VL-3B-Instruct",
    "joycaption": "fancyfeast/llama-joycaption-beta-one-hf-llava",
}
"""Short names -> the Hub repos transformers loads natively (no trust_remote_code). Florence-2-large (0.8B) is the
default: it captions next to a training on a 24 GB card, and is unloaded (its process ends) before training starts."""
DEFAULT_CAPTION_MODEL = "florence-2-large"
MAX_NEW_TOKENS: dict[str, int] = {"detailed": 256, "short": 64, "tags": 128}
"""The caption length (new tokens) of each style when `max_length` is not given."""
MAX_PREFIX = 200


class CaptioningSpec(BaseModel):
    """`captioning` in the job JSON: caption the staged images before training."""

    model_config = ConfigDict(extra="forbid")

    model: str = DEFAULT_CAPTION_MODEL
    """A short name (florence-2-large, florence-2-base, qwen2.5-vl-3b, joycaption), a Hub id, or a local folder."""
    mode: Literal["missing", "all"] = "missing"
    """missing: only images without a caption of their own; all: every image (their captions are replaced)."""
    style: Literal["detailed", "short", "tags"] = "detailed"
    prefix: str = ""
    """Put before every generated caption ("photo of", "anime style, ..."); the trigger word still comes first."""
    max_length: int | None = Field(default=None, ge=8, le=1024)
    """New tokens per caption (default by style: detailed 256, short 64, tags 128)."""
    batch_size: int = Field(default=4, ge=1, le=64)

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        value = value.strip()
        if value in CAPTION_MODELS or is_repo_id(value) or PurePosixPath(value).is_absolute():
            return value
        raise ValueError(f"must be one of {', '.join(CAPTION_MODELS)}, a Hub model id ('org/name') or an absolute "
                         f"path to a local model folder, got {value!r}")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if any(c in value for c in "\n\r\t"):
            raise ValueError("must be on one line")
        if len(value) > MAX_PREFIX:
            raise ValueError(f"must be at most {MAX_PREFIX} characters, got {len(value)}")
        return value.strip()

    @property
    def model_id(self) -> str:
        """The Hub id (or folder) the short name stands for."""
        return CAPTION_MODELS.get(self.model, self.model)

    @property
    def new_tokens(self) -> int:
        return self.max_length or MAX_NEW_TOKENS[self.style]
