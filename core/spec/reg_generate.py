"""`dataset.reg_generate`: class images the base model renders before training, used as regularisation images
(docs/first-lora.md). Rendering them is core/generation/reg_images.py's; this is what a job may ask."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.errors import SpecError
from core.simpletuner import VIDEO_FAMILIES, is_edit_model, model_index_path

if TYPE_CHECKING:
    from core.spec.job import JobSpec

MAX_REG_IMAGES = 500
"""The most class images one job renders (a hundred is the usual; each is a base-model render on the GPU)."""


class RegGenerate(BaseModel):
    """How many class images to render, of what, and how."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    prompt: str = Field(min_length=1, max_length=1000)
    """The class ("a photo of a man"): each image's prompt and its caption."""
    count: int = Field(ge=1, le=MAX_REG_IMAGES)
    seed: int = Field(default=42, ge=0, le=2**32 - 1)
    """The first image's seed; image i renders with seed + i, so the same field renders the same images."""
    size: int | None = Field(default=None, ge=64, le=2048, multiple_of=8)
    """Each image's side (square); None: the training resolution."""
    steps: int = Field(default=30, ge=1, le=150)
    guidance: float = Field(default=5.0, ge=0, le=30)
    negative_prompt: str = Field(default="", max_length=1000)

    @field_validator("prompt", "negative_prompt")
    @classmethod
    def _one_line(cls, value: str) -> str:
        return " ".join(value.split())


def check_reg_generate(spec: JobSpec) -> None:
    """Refuse class images where rendering them makes no sense: a video family (its regularisation would be clips),
    an edit model (it learns an edit of its input, not a class), a hand-written dataloader list (it names its own
    backends)."""
    wanted = spec.dataset.reg_generate if spec.dataset else None
    if wanted is None:
        return
    if spec.dataset and spec.dataset.reg_dir is not None:
        raise SpecError("give dataset.reg_dir (your own regularisation images) or reg_generate (rendered ones), "
                        "not both", field="dataset.reg_generate")
    family, flavour = spec.model_family, spec.config.get("model_flavour")
    what = f"{family}{f' flavour {flavour!r}' if flavour else ''} ({spec.base_model})"
    if family in VIDEO_FAMILIES:
        raise SpecError(f"{what} is a video model: class images are rendered for image "
                        "models only", field="dataset.reg_generate")
    if is_edit_model(family, flavour, model_index=model_index_path(spec.base_model)):
        raise SpecError(f"{what} is an edit model: it learns an edit of its input images, not a class, so it "
                        "uses no regularisation images", field="dataset.reg_generate")
    if isinstance(spec.dataloader, list):
        raise SpecError("a dataloader list names its own backends: add a regularisation backend to it "
                        "(is_regularisation_data: true) instead of reg_generate", field="dataset.reg_generate")
