"""Model-family presets: sensible LoRA defaults for the Config tab's fields (names as in app/job_form.FIELDS)."""

from __future__ import annotations

import json
from typing import Any

from app.state import tiny_model_dir
from core.settings import Settings

TINY = "Tiny demo (CPU)"


def presets(*, settings: Settings) -> dict[str, dict[str, Any]]:
    """Preset name -> the config fields it sets, with a one-line note. The tiny model lives in the data folder."""
    gpu = {"optimizer": "adamw_bf16", "train_batch_size": 1, "schedule": "steps", "seed": 42,
           "extra_job": ""}
    return {
        "FLUX.1-dev": {
            **gpu, "base_model": "black-forest-labs/FLUX.1-dev", "model_family": "flux", "lora_rank": 16,
            "lora_alpha": 16.0, "learning_rate": 1e-4, "length": 1000, "resolution": 1024,
            "checkpoint_step_interval": 250, "validation_prompt": "", "validation_steps": 250,
            "extra_flags": json.dumps({"gradient_checkpointing": True}, indent=2),
            "note": "Gated model: accept its licence on the Hub and set HF_TOKEN and TRAINER_ONLINE=1. About 40 GB "
                    "of VRAM in bf16; on 24 GB add \"base_model_precision\": \"int8-quanto\" under Advanced.",
        },
        "SDXL": {
            **gpu, "base_model": "stabilityai/stable-diffusion-xl-base-1.0", "model_family": "sdxl",
            "lora_rank": 16, "lora_alpha": 16.0, "learning_rate": 1e-4, "length": 1000, "resolution": 1024,
            "checkpoint_step_interval": 250, "validation_prompt": "", "validation_steps": 250, "extra_flags": "",
            "note": "Fits a 16-24 GB GPU. Set TRAINER_ONLINE=1 so SimpleTuner can download the base model.",
        },
        "SD3.5": {
            **gpu, "base_model": "stabilityai/stable-diffusion-3.5-large", "model_family": "sd3", "lora_rank": 16,
            "lora_alpha": 16.0, "learning_rate": 1e-4, "length": 1000, "resolution": 1024,
            "checkpoint_step_interval": 250, "validation_prompt": "", "validation_steps": 250,
            "extra_flags": json.dumps({"gradient_checkpointing": True}, indent=2),
            "note": "Gated model: accept its licence on the Hub and set HF_TOKEN and TRAINER_ONLINE=1. 24 GB+.",
        },
        TINY: {
            "base_model": str(tiny_model_dir(settings)), "model_family": "sdxl", "lora_rank": 4, "lora_alpha": 4.0,
            "learning_rate": 1e-4, "optimizer": "torch-adamw", "schedule": "steps", "length": 10,
            "train_batch_size": 1, "resolution": 128, "checkpoint_step_interval": 5,
            "validation_prompt": "sks a red circle", "validation_steps": 10, "seed": 42,
            "extra_flags": json.dumps({"validation_resolution": 128, "validation_num_inference_steps": 4}, indent=2),
            "extra_job": json.dumps({"dataloader": {"minimum_image_size": 64}}, indent=2),
            "note": "A tiny random SDXL model, built offline on first use: trains in under a minute on a CPU. "
                    "Pair it with \"Load demo dataset\" on the Dataset tab. It learns nothing useful; it shows "
                    "the whole flow.",
        },
    }


def preset_fields(name: str, *, settings: Settings) -> dict[str, Any]:
    """The form values preset `name` sets (its note left out)."""
    values = dict(presets(settings=settings)[name])
    values.pop("note", None)
    return values
