"""Print SimpleTuner's LoRA recipes (its simpletuner/examples/*/config.json) as JSON. Runs in the trainer env.

    .venv-trainer/bin/python -P tools/dump_recipes.py > core/data/recipes.json

One recipe per example folder: the family and flavour it trains, the VRAM tier its name gives (`-24g`, `-48gb`,
`+16G`; none for an untiered example) and the settings that decide memory and quality, with every setting an
example relies on to fit its GPU (RamTorch offload, start-up offload, VAE tiling and slicing). Examples that are not a
plain LoRA for one GPU are listed under "skipped" with the reason; CORRECTIONS replaces a smoke-run setting with
what SimpleTuner's guide recommends. core/simpletuner/recipes.py reads the result.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

SETTINGS = (
    "optimizer", "learning_rate", "lora_rank", "lora_alpha", "mixed_precision", "base_model_precision",
    "quantize_via", "flow_schedule_shift", "flow_schedule_auto_shift", "validation_guidance",
    "validation_guidance_real", "validation_num_inference_steps", "gradient_checkpointing",
    "gradient_checkpointing_interval", "train_batch_size", "vae_batch_size", "offload_during_startup",
    "vae_enable_tiling", "vae_enable_slicing", "validation_num_video_frames", "validation_resolution",
)
# Every ramtorch_* flag is kept too: an offloading example fits its GPU only with all of them.
KEPT_PREFIXES = ("ramtorch",)
TIER = re.compile(r"-(\d+)gb?(?=[.+-]|$)|\+(\d+)G$")
# "+16G" is a memory tier; RamTorch (weights offloaded to system RAM) and TREAD (a token-routing speed-up) still
# train one LoRA on one GPU. The settings above carry ramtorch; TREAD's own tread_config is left out.
KEPT_VARIANTS = re.compile(r"\d+G|ramtorch|TREAD")
# ControlNets, multi-stage distillation, multi-GPU (8xh100) and Apple (mps) setups are not a recipe for one user's
# one RunPod GPU.
SKIP_WORDS = ("anyflow", "controlnet", "8xh100", "-mps-")
# Settings an example sets for a smoke run, not for training, with what SimpleTuner's own guide says instead.
CORRECTIONS: dict[str, dict[str, Any]] = {
    # kontext.peft-lora's learning_rate is 1e-8 (a wiring check); the FLUX_KONTEXT quickstart, "Training tips":
    # "stay at 1e-5 (Lion) or 5e-4 (AdamW)", and the example uses optimi-lion.
    "kontext.peft-lora": {"learning_rate": 1e-5},
}


def _examples() -> Path:
    origin = importlib.util.find_spec("simpletuner").origin
    return Path(origin).parent / "examples"


def _resolution(config: dict[str, Any], examples: Path) -> tuple[int | None, str | None]:
    """Edge length in pixels, from the config or the first image backend of its dataloader ("area" is megapixels)."""
    value, kind = config.get("resolution"), config.get("resolution_type")
    if value is None:
        path = examples / str(config.get("data_backend_config", "")).removeprefix("config/examples/")
        try:
            backends = json.loads(path.read_text()) if path.is_file() else []
        except ValueError:
            backends = []
        image = next((b for b in backends if b.get("dataset_type", "image") == "image" and "resolution" in b), None)
        if image is None:
            return None, None
        value, kind = image["resolution"], image.get("resolution_type", "pixel")
    kind = kind or "pixel"
    if kind == "area":
        return round(math.sqrt(float(value) * 1e6)), kind
    return int(value), kind


def _reason_to_skip(name: str, config: dict[str, Any]) -> str | None:
    variant = name.partition("+")[2]
    if variant and not KEPT_VARIANTS.fullmatch(variant):
        return f"variant '+{variant}'"
    if any(word in name for word in SKIP_WORDS) or config.get("controlnet"):
        return "controlnet or multi-stage"
    if config.get("model_type") != "lora":
        return f"model_type {config.get('model_type')!r}"
    if not config.get("model_family"):
        return "no model_family"
    return None


def recipe(name: str, config: dict[str, Any], examples: Path) -> dict[str, Any]:
    tier = TIER.search(name)
    variant = name.partition("+")[2]
    resolution, resolution_type = _resolution(config, examples)
    settings = {key: config[key] for key in sorted(config)
                if key in SETTINGS or key.split("_")[0] in KEPT_PREFIXES}
    settings.update(CORRECTIONS.get(name, {}))
    if resolution is not None:
        settings["resolution"] = resolution
        settings["resolution_type"] = "pixel" if resolution_type == "area" else resolution_type
    return {
        "name": name,
        "family": config["model_family"],
        "flavour": config.get("model_flavour"),
        "tier_gb": int(next(g for g in tier.groups() if g)) if tier else None,
        "variant": None if not variant or TIER.search("+" + variant) else variant,
        "lora_type": config.get("lora_type") or "standard",
        "settings": settings,
    }


def main() -> int:
    examples = _examples()
    recipes, skipped = [], {}
    for folder in sorted(p for p in examples.iterdir() if (p / "config.json").is_file()):
        try:
            raw = json.loads((folder / "config.json").read_text())
        except ValueError as exc:
            skipped[folder.name] = f"config.json is not JSON ({exc.msg})"
            continue
        config = {key.removeprefix("--"): value for key, value in raw.items()}
        reason = _reason_to_skip(folder.name, config)
        if reason:
            skipped[folder.name] = reason
        else:
            recipes.append(recipe(folder.name, config, examples))
    json.dump({"simpletuner_version": version("simpletuner"), "recipes": recipes, "skipped": skipped},
              sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
