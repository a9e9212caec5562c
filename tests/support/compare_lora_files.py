"""Load two LoRA files into the same diffusers pipeline, fuse each, and compare the fused weights. Trainer env:

    .venv-trainer/bin/python -P tests/support/compare_lora_files.py MODEL_DIR DIFFUSERS_FILE COMFYUI_FILE

The second file goes through diffusers' own non-diffusers (kohya) loader, as a ComfyUI-format file does when a
diffusers user loads it. Prints JSON: how many weights each LoRA changed, and the largest difference between the two
fused models, per component (unet, text_encoder, text_encoder_2).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COMPONENTS = ("unet", "text_encoder", "text_encoder_2")


def fused_weights(model_dir: str, lora_file: Path) -> tuple[dict, dict]:
    """(base weights, fused weights) per component, for the weights the LoRA changed."""
    import torch
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(model_dir, torch_dtype=torch.float32)
    base = {c: {k: v.clone() for k, v in getattr(pipe, c).state_dict().items()} for c in COMPONENTS}
    pipe.load_lora_weights(str(lora_file.parent), weight_name=lora_file.name, adapter_name="lora")
    pipe.fuse_lora(lora_scale=1.0, components=list(COMPONENTS))
    pipe.unload_lora_weights()
    fused = {c: dict(getattr(pipe, c).state_dict()) for c in COMPONENTS}
    return base, fused


def main() -> None:
    import torch

    model_dir, diffusers_file, comfyui_file = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    base, from_diffusers = fused_weights(model_dir, diffusers_file)
    _, from_comfyui = fused_weights(model_dir, comfyui_file)
    report: dict = {}
    for component in COMPONENTS:
        changed = [k for k, v in from_diffusers[component].items()
                   if k in base[component] and not torch.equal(v, base[component][k])]
        changed_comfy = [k for k, v in from_comfyui[component].items()
                         if k in base[component] and not torch.equal(v, base[component][k])]
        diff = max((float((from_diffusers[component][k] - from_comfyui[component][k]).abs().max())
                    for k in base[component] if k in from_comfyui[component]), default=0.0)
        scale = max((float(base[component][k].abs().max()) for k in changed), default=0.0)
        report[component] = {"changed_by_diffusers_file": len(changed), "changed_by_comfyui_file": len(changed_comfy),
                             "same_keys_changed": sorted(changed) == sorted(changed_comfy),
                             "max_abs_diff": diff, "max_abs_weight": scale}
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
