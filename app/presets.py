"""Model-family presets for the Config tab's fields (names as in app/job_form.FIELDS): one per family, from the same
SimpleTuner recipe table the worker's CUDA defaults come from (core/training/gpu_fit.py), with its GPU tier in the
note; and
the Tiny demo, which trains on a CPU."""

from __future__ import annotations

import json
from typing import Any

from app.state import tiny_model_dir
from core.adapters import GpuFacts
from core.settings import Settings
from core.simpletuner import VIDEO_FAMILIES, edit_inputs, hub_ids, lookup, model_table
from core.training import GpuPlan, plan_gpu

TINY = "Tiny demo (CPU)"

# Preset name -> (family, flavour): the text-to-image (and text-to-video) flavours people train most, with a Hub id
# SimpleTuner lists.
FAMILY_PRESETS: dict[str, tuple[str, str]] = {
    "FLUX.1-dev": ("flux", "dev"),
    "FLUX.1-schnell": ("flux", "schnell"),
    "FLUX.2 klein 4B": ("flux2", "klein-4b"),
    "FLUX.2 klein 9B": ("flux2", "klein-9b"),
    "Z-Image Turbo": ("z_image", "turbo"),
    "Z-Image": ("z_image", "base"),
    "SDXL": ("sdxl", "base-1.0"),
    "SD3.5": ("sd3", "large"),
    "Chroma": ("chroma", "hd"),
    "Qwen-Image": ("qwen_image", "v1.0"),
    "HiDream": ("hidream", "full"),
    "Lumina 2": ("lumina2", "2.0"),
    "Sana": ("sana", "sana1.5-1.6b-1024"),
    "PixArt Sigma": ("pixart", "900M-1024-v0.6"),
    "AuraFlow": ("auraflow", "v0.3"),
    "Wan 2.1 T2V 1.3B (480p)": ("wan", "t2v-480p-1.3b-2.1"),
    "Wan 2.1 T2V 14B (480p)": ("wan", "t2v-480p-14b-2.1"),
}
# Edit presets: name -> (family, flavour, the Hub id as the Hub spells it; SimpleTuner's table lower-cases some).
# They train on pairs (docs/edit-pairs.md): the Dataset tab shows each input beside its target.
EDIT_PRESETS: dict[str, tuple[str, str, str]] = {
    "FLUX.1 Kontext dev (edit)": ("flux", "kontext", "black-forest-labs/FLUX.1-Kontext-dev"),
    "Qwen-Image-Edit (edit-v1)": ("qwen_image", "edit-v1", "Qwen/Qwen-Image-Edit"),
    "Qwen-Image-Edit-2509 (edit-v2)": ("qwen_image", "edit-v2", "Qwen/Qwen-Image-Edit-2509"),
    "Qwen-Image-Edit-2509 (edit-v2+)": ("qwen_image", "edit-v2+", "Qwen/Qwen-Image-Edit-2509"),
    "Qwen-Image-Edit-2511 (edit-v3)": ("qwen_image", "edit-v3", "Qwen/Qwen-Image-Edit-2511"),
    "LongCat-Image-Edit": ("longcat_image", "edit", "meituan-longcat/LongCat-Image-Edit"),
}
HUB_SPELLING = {"black-forest-labs/flux.1-dev": "black-forest-labs/FLUX.1-dev",
                "black-forest-labs/flux.1-schnell": "black-forest-labs/FLUX.1-schnell"}
"""Hub ids SimpleTuner's table lower-cases -> as the Hub spells them (what a user sees in the field and on the card)."""
SMOKE_RESOLUTION, EDIT_RESOLUTION = 256, 1024
"""An edit recipe below SMOKE_RESOLUTION px is a smoke run: the preset trains at the model's own 1024 px."""
GATED = {"FLUX.1-dev", "SD3.5", "FLUX.2 klein 9B", "FLUX.1 Kontext dev (edit)"}
"""Hub models whose licence must be accepted on the Hub first."""
LORA_DEFAULTS = {"lora_rank": 16, "lora_alpha": 16.0, "learning_rate": 1e-4, "optimizer": "adamw_bf16",
                 "resolution": 1024}
"""For a family whose SimpleTuner example is a LyCORIS one (its numbers are not a LoRA's)."""


def tier_note(plan: GpuPlan) -> str:
    """'24 GB tier (int8-quanto, about 18 GB)'-style: what the preset needs, from the recipe and the estimates."""
    if plan.tier_gb is None:
        return f"GPU tier: no published VRAM figure ({plan.base_model_precision}; SimpleTuner's {plan.recipe})"
    about = f", about {plan.estimated_vram_gb:g} GB" if plan.estimated_vram_gb else ""
    return f"GPU tier: {plan.tier_gb} GB ({plan.base_model_precision}{about}; SimpleTuner's {plan.recipe})"


def frames_note(family: str, plan: GpuPlan) -> str:
    """A video family's frames per sample: its recipe's default, and where a job changes it (docs/video.md)."""
    frames = plan.settings.get("validation_num_video_frames")
    default = f"{frames} frames per clip sample (the family's default)" if frames else "the family's default frames"
    return (f"Video: trains on images and clips (.mp4, .webm, .mov, .mkv); {default}; set "
            '{"dataloader": {"video": {"num_frames": N}}} in the extra job JSON to change it '
            "(a count the family cannot take is refused, naming the nearest).")


def pairs_note(family: str, flavour: str) -> str:
    """What an edit preset trains on, and how many inputs a pair may have."""
    inputs = edit_inputs(family, flavour)
    more = (f" (up to {inputs} inputs: control_2/, control_3/)" if inputs > 1 else "")
    return ("Edit model: trains on pairs, each input in a control/ folder beside its target under the same file "
            f"name{more}, or NAME_start/NAME_end files; the caption is the instruction. The Dataset tab shows the "
            "pairs side by side.")


def _edit_preset(name: str, family: str, flavour: str, hub_id: str) -> dict[str, Any]:
    values = _family_preset(name, family, flavour)
    values["base_model"] = hub_id
    if hub_ids(family).get(flavour, "").lower() == hub_id.lower() and _flavour_of(hub_id) != flavour:
        # Two flavours share this Hub id (edit-v2 and edit-v2+): the flavour is set, not looked up.
        values["extra_flags"] = json.dumps({"model_flavour": flavour}, indent=2)
    if values["resolution"] < SMOKE_RESOLUTION:  # LongCat-Image-Edit's example trains at 128 px: a smoke run
        values["resolution"] = EDIT_RESOLUTION
    values["note"] = f"{values['note']} {pairs_note(family, flavour)}"
    return values


def _flavour_of(hub_id: str) -> str | None:
    found = lookup(hub_id)
    return found[1] if found else None


def _family_preset(name: str, family: str, flavour: str) -> dict[str, Any]:
    plan = plan_gpu(family=family, flavour=flavour, config={}, gpu=GpuFacts(count=1, memory_gb=None, source="unknown"))
    numbers = {**LORA_DEFAULTS, **{key: plan.settings[key] for key in LORA_DEFAULTS if key in plan.settings}}
    numbers["lora_alpha"] = float(numbers["lora_alpha"])
    display = model_table()["families"][family]["name"]
    gated = (" Gated model: accept its licence on the Hub and set HF_TOKEN." if name in GATED else "")
    video = f" {frames_note(family, plan)}" if family in VIDEO_FAMILIES else ""
    return {
        "base_model": HUB_SPELLING.get(hub_id := hub_ids(family)[flavour], hub_id), "model_family": family,
        **numbers, "train_batch_size": 1,
        "schedule": "steps", "length": 1000, "checkpoint_step_interval": 250, "validation_prompt": "",
        "sample_prompts": "", "sample_every": 250, "seed": 42, "extra_flags": "", "extra_job": "",
        "note": f"{display} ({flavour}). {tier_note(plan)}. The numbers are SimpleTuner's recipe; on a GPU the "
                f"worker picks the recipe's tier for its memory and refuses a job that cannot fit.{gated} Set "
                "TRAINER_ONLINE=1 so SimpleTuner can download the base model." + video,
    }


def presets(*, settings: Settings) -> dict[str, dict[str, Any]]:
    """Preset name -> the config fields it sets, with a one-line note. The tiny model lives in the data folder."""
    catalogue = {name: _family_preset(name, family, flavour) for name, (family, flavour) in FAMILY_PRESETS.items()}
    catalogue.update({name: _edit_preset(name, *entry) for name, entry in EDIT_PRESETS.items()})
    catalogue[TINY] = {
        "base_model": str(tiny_model_dir(settings)), "model_family": "sdxl", "lora_rank": 4, "lora_alpha": 4.0,
        "learning_rate": 1e-4, "optimizer": "torch-adamw", "schedule": "steps", "length": 10,
        "train_batch_size": 1, "resolution": 128, "checkpoint_step_interval": 5,
        # Samples at each checkpoint (5 and 10): the grid has a row per checkpoint, a column per prompt.
        "validation_prompt": "", "sample_prompts": "sks a red circle\nsks a blue triangle", "sample_every": 5,
        "seed": 42,
        "extra_flags": json.dumps({"validation_resolution": 128, "validation_num_inference_steps": 4}, indent=2),
        "extra_job": json.dumps({"dataloader": {"minimum_image_size": 64}}, indent=2),
        "note": "A tiny random SDXL model, built offline on first use: trains in under a minute on a CPU. "
                "Pair it with \"Load demo dataset\" on the Dataset tab. It learns nothing useful; it shows "
                "the whole flow.",
    }
    return catalogue


def preset_fields(name: str, *, settings: Settings) -> dict[str, Any]:
    """The form values preset `name` sets (its note left out)."""
    values = dict(presets(settings=settings)[name])
    values.pop("note", None)
    return values
