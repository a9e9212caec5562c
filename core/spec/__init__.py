"""The job declaration: one typed model (pydantic) of everything a job says, validated the same for every face.

    from core.spec import JobSpec, parse_job

What other packages and the faces may use is listed in __all__."""

from core.spec.captioning import CAPTION_MODELS, DEFAULT_CAPTION_MODEL, CaptioningSpec
from core.spec.job import (
    CONFIG_SHORTHAND,
    GOALS,
    SCHEDULE_FLAGS,
    DataloaderOptions,
    DatasetSpec,
    HubSpec,
    JobSpec,
    StorageSpec,
    model_families,
    normalize_config,
    parse_job,
    simpletuner_flags,
    unwrap_input,
    validation_error,
)
from core.spec.limits import CACHE_KEY, DATA_KEYS, PLACEHOLDER, ClipLimits, InputImageLimits, relative_data_dir
from core.spec.samples import SamplePrompt, SamplesSpec, fill_trigger, prompt_settings, prompt_text
from core.spec.webhook import WebhookSpec

__all__ = [
    "CACHE_KEY",
    "CAPTION_MODELS",
    "CONFIG_SHORTHAND",
    "DATA_KEYS",
    "DEFAULT_CAPTION_MODEL",
    "GOALS",
    "PLACEHOLDER",
    "SCHEDULE_FLAGS",
    "CaptioningSpec",
    "ClipLimits",
    "DataloaderOptions",
    "DatasetSpec",
    "HubSpec",
    "InputImageLimits",
    "JobSpec",
    "SamplePrompt",
    "SamplesSpec",
    "StorageSpec",
    "WebhookSpec",
    "fill_trigger",
    "model_families",
    "normalize_config",
    "parse_job",
    "prompt_settings",
    "prompt_text",
    "relative_data_dir",
    "simpletuner_flags",
    "unwrap_input",
    "validation_error",
]
