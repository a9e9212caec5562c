"""What a run trains, and so what it gives back: a LoRA, a LyCORIS adapter, or a full fine-tune.

SimpleTuner's `model_type` (`lora` | `full`) and `lora_type` (`standard` | `lycoris`) decide it:

- lora: `pytorch_lora_weights.safetensors` (diffusers' `load_lora_weights`) in the output folder;
- lycoris: the same file name, holding LyCORIS weights (keys `lycoris_...`, the config in its metadata), and
  `lycoris_config.json` beside it; it loads with the `lycoris` library, not `load_lora_weights`;
- full: a diffusers folder `pipeline/` with the trained component (`unet/` or `transformer/`), the VAE, the
  scheduler and `model_index.json` (text encoders only with `save_text_encoder`); no LoRA file at all.

`check_training_kind` refuses, when the job is validated, the combinations SimpleTuner cannot train or this project
cannot give back; `expected_output` is what a successful run must leave, checked after training.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core.simpletuner.lycoris import check_lycoris_config

LORA, LYCORIS, FULL = "lora", "lycoris", "full"
LORA_FILE = "pytorch_lora_weights.safetensors"
LYCORIS_CONFIG_FILE = "lycoris_config.json"
PIPELINE_DIR = "pipeline"
VALIDATION_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".mp4", ".webm"})
"""The validation outputs SimpleTuner writes: images, and videos for the video families (not a dataset's images:
core/dataset/archive.py IMAGE_SUFFIXES)."""
"""A full fine-tune's diffusers folder inside the output folder."""
TRAINED_COMPONENTS = ("transformer", "unet")
# A full fine-tune's component config may name SimpleTuner's own subclass; diffusers loads the weights with these.
DIFFUSERS_CLASSES = {"FlowMapUNet2DConditionModel": "UNet2DConditionModel"}


def _get(config: Mapping[str, Any], name: str) -> Any:
    """A flag from a job's config (`name`) or from SimpleTuner's config.json (`--name`)."""
    return config.get(name, config.get(f"--{name}"))


def kind_of(config: Mapping[str, Any]) -> str:
    """lora | lycoris | full, from a job's config or SimpleTuner's config.json."""
    if _get(config, "model_type") == FULL:
        return FULL
    return LYCORIS if _get(config, "lora_type") == LYCORIS else LORA


def implied_flags(config: Mapping[str, Any]) -> dict[str, Any]:
    """Flags a job's config implies: a LyCORIS config given without a lora_type means lora_type 'lycoris'."""
    if _get(config, "lycoris_config") is not None and _get(config, "lora_type") is None \
            and _get(config, "model_type") != FULL:
        return {"lora_type": LYCORIS}
    return {}


def check_training_kind(config: Mapping[str, Any], *, on_failure: bool = False) -> list[dict[str, str]]:
    """The errors (each naming its field) of a job whose model_type/lora_type SimpleTuner cannot train here.
    `on_failure`: the job asks to publish its checkpoints when training fails (hub.on_failure)."""
    errors: list[dict[str, str]] = []
    model_type, lora_type = _get(config, "model_type"), _get(config, "lora_type")
    lycoris = _get(config, "lycoris_config")
    if model_type == FULL and lora_type == LYCORIS:
        errors.append({"field": "config.lora_type", "message": "'lycoris' trains an adapter, but model_type 'full' "
                       "trains the whole model: drop one of them"})
    elif lora_type == LYCORIS:
        if lycoris is None:
            errors.append({"field": "config.lycoris_config", "message": "lora_type 'lycoris' needs a LyCORIS config: "
                           "the object itself or a preset name (lora, loha, lokr, ...)"})
        else:
            errors += check_lycoris_config(lycoris)
        if _get(config, "train_text_encoder"):
            errors.append({"field": "config.train_text_encoder", "message": "SimpleTuner trains no text encoder "
                           "with LyCORIS: leave train_text_encoder off or use lora_type 'standard'"})
    elif lycoris is not None:
        errors.append({"field": "config.lycoris_config", "message": "is used only with lora_type 'lycoris' and "
                       "model_type 'lora': set lora_type to 'lycoris' or drop it"})
    if model_type == FULL and on_failure:
        errors.append({"field": "hub.on_failure", "message": "publishes a failed run's latest LoRA checkpoint; a "
                       "full fine-tune's checkpoints are not published on failure: set it to false"})
    return errors


def expected_output(output_dir: Path, config: Mapping[str, Any]) -> Path:
    """The file a finished run of this config must have written in `output_dir`."""
    if kind_of(config) == FULL:
        return Path(output_dir) / PIPELINE_DIR / "model_index.json"
    return Path(output_dir) / LORA_FILE


def trained_component(pipeline_dir: Path) -> tuple[str, str] | None:
    """(sub-folder, diffusers class) of a full fine-tune's trained model in its pipeline folder, e.g.
    ("unet", "UNet2DConditionModel"); None when the folder has neither a unet nor a transformer."""
    for name in TRAINED_COMPONENTS:
        config = Path(pipeline_dir) / name / "config.json"
        if config.is_file():
            try:
                cls = str(json.loads(config.read_text()).get("_class_name") or "")
            except (OSError, ValueError):
                cls = ""
            cls = DIFFUSERS_CLASSES.get(cls, cls)
            return name, cls or ("UNet2DConditionModel" if name == "unet" else "AutoModel")
    return None
