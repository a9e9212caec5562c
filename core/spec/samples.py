"""The job's `samples` field: prompts rendered at each checkpoint. The declaration only; core/training/samples.py
turns it
into SimpleTuner's validation settings and finds the images."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, StringConstraints, Tag

from core.errors import SpecError
from core.spec.limits import PLACEHOLDER, InputImageLimits

TRIGGER = re.compile(r"\[trigger\]", re.IGNORECASE)
MAX_PROMPTS = 16
MAX_PROMPT = 1000


def _one_line(value: str) -> str:
    if any(c in value for c in "\r\n\t"):
        raise ValueError("must be one line")
    return value


Prompt = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_PROMPT),
                   AfterValidator(_one_line)]


class SamplePrompt(BaseModel):
    """One sample prompt with settings of its own; what it leaves out is the samples' shared setting. SimpleTuner's
    renders during training take `lora_scale` from it (its prompt library's `adapter_strength`); the end-of-run
    renders (core/generation/end_samples.py) take every one."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    prompt: Prompt
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    width: int | None = Field(default=None, ge=64, le=4096, multiple_of=8)
    height: int | None = Field(default=None, ge=64, le=4096, multiple_of=8)
    steps: int | None = Field(default=None, ge=1, le=150)
    guidance: float | None = Field(default=None, ge=0, le=30)
    lora_scale: float | None = Field(default=None, ge=-4, le=4)
    """The LoRA's weight in this render: 0 is the base model, 1 as trained."""

    def label(self) -> str:
        """Its settings as a grid label shows them: 'seed 7, 512x768, 20 steps, cfg 4, LoRA 0.8'."""
        parts = [f"seed {self.seed}" if self.seed is not None else "",
                 f"{self.width or self.height}x{self.height or self.width}" if self.width or self.height else "",
                 f"{self.steps} steps" if self.steps is not None else "",
                 f"cfg {self.guidance:g}" if self.guidance is not None else "",
                 f"LoRA {self.lora_scale:g}" if self.lora_scale is not None else ""]
        return ", ".join(part for part in parts if part)


def prompt_text(item: str | SamplePrompt) -> str:
    """A sample prompt's text, whichever way it was given."""
    return item if isinstance(item, str) else item.prompt


def prompt_settings(item: str | SamplePrompt) -> SamplePrompt:
    """A sample prompt with its own settings (none for a plain text)."""
    return item if isinstance(item, SamplePrompt) else SamplePrompt(prompt=item)


def _item_kind(value: object) -> str:
    return "prompt-settings" if isinstance(value, (dict, SamplePrompt)) else "prompt-text"


SampleItem = Annotated[Annotated[Prompt, Tag("prompt-text")] | Annotated[SamplePrompt, Tag("prompt-settings")],
                       Discriminator(_item_kind)]
"""A sample prompt: its text, or an object with its own settings (each checked as what it is)."""


class SamplesSpec(BaseModel):
    """`samples`: prompts rendered at each checkpoint (every `every` steps) and at the end."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    prompts: list[SampleItem] = Field(default_factory=list, max_length=MAX_PROMPTS)
    """Texts, or {prompt, seed, width, height, steps, guidance, lora_scale} for a prompt with settings of its own. At
    least one, except for an edit model's job (pairs): without prompts each of its samples takes its pair's
    instruction."""
    every: int | None = Field(default=None, ge=1)
    """Steps between two renders; default: the checkpoint interval."""
    seed: int = Field(default=42, ge=0, le=2**32 - 1)
    steps: int | None = Field(default=None, ge=1, le=150)
    """Denoising steps; default: the family's SimpleTuner recipe (else 30)."""
    guidance: float | None = Field(default=None, ge=0, le=30)
    """CFG scale; default: the family's SimpleTuner recipe (else 5)."""
    resolution: int | None = Field(default=None, ge=64, le=4096)
    """Square side in pixels; default: the training resolution."""
    negative_prompt: Prompt | None = None
    input_image: str | None = Field(default=None, max_length=InputImageLimits().max_text, repr=False)
    """The first frame every sample of an image-to-video model starts from: an http(s) or s3 URL (fetched as a
    dataset URL is), a data:image/...;base64, URI or base64; default: the first frame of the first training clip
    (else the first image). Refused for a model that takes no input image, and for an edit model, whose samples
    take their inputs from the dataset's pairs."""
    hold_out: int = Field(default=0, ge=0, le=MAX_PROMPTS)
    """An edit model's job: this many pairs (the first by file name) are held back from training and used only for
    the samples, so each sample's expected output was never trained on; 0 (the default): the samples take the first
    pairs, which are trained on too (docs/edit-pairs.md)."""


def fill_trigger(text: str, trigger: str | None) -> str:
    """`[trigger]` replaced by the trigger word (left as is without one)."""
    return TRIGGER.sub(lambda _: trigger, text) if trigger else text


def check_trigger(samples: SamplesSpec | None, trigger: str | None) -> None:
    """The sample texts as SimpleTuner will get them ([trigger] filled in): a prompt that asks for the trigger word
    needs one, and no filled-in text may spell a `{env:...}` placeholder (a trigger word "env" in "{[trigger]:X}"
    would). A SpecError naming the prompt otherwise."""
    if samples is None:
        return
    texts = {f"samples.prompts.{i}": prompt_text(prompt) for i, prompt in enumerate(samples.prompts)}
    if samples.negative_prompt is not None:
        texts["samples.negative_prompt"] = samples.negative_prompt
    errors = []
    for field, text in texts.items():
        if TRIGGER.search(text) and not trigger:
            errors.append({"field": field, "message": "uses [trigger], but the job has no trigger_word"})
        elif PLACEHOLDER.search(fill_trigger(text, trigger)):
            errors.append({"field": field, "message": "with the trigger word filled in it reads as an '{env:...}' "
                                                      "placeholder, which is not allowed"})
    if errors:
        raise SpecError(errors[0]["message"], field=errors[0]["field"], errors=errors)
