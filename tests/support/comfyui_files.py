"""What a test checks of a run's ComfyUI-format file next to the diffusers file it was converted from (read with
safetensors' numpy reader: the app env has no torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors import safe_open


def tensors(path: Path) -> dict[str, np.ndarray]:
    with safe_open(str(path), framework="numpy") as weights:
        return {key: weights.get_tensor(key) for key in weights.keys()}


def assert_generic_comfyui_file(diffusers: Path, comfyui: Path, *, rank: int) -> None:
    """SimpleTuner's generic ComfyUI layout: every `transformer.X.lora_A/B.weight` as `diffusion_model.X...` with the
    same values, and one `.alpha` per module (the LoRA's alpha; SimpleTuner 4.10.1 writes alpha = rank by default)."""
    source, converted = tensors(diffusers), tensors(comfyui)
    assert source and all(key.startswith("transformer.") for key in source)
    weights = {key: value for key, value in converted.items() if not key.endswith(".alpha")}
    assert {key.replace("diffusion_model.", "transformer.", 1): value.shape for key, value in weights.items()} == \
        {key: value.shape for key, value in source.items()}
    assert all(np.array_equal(value, source[key.replace("diffusion_model.", "transformer.", 1)])
               for key, value in weights.items())
    modules = {key.rsplit(".lora_", 1)[0] for key in weights}
    alphas = {key.removesuffix(".alpha"): float(value) for key, value in converted.items() if key.endswith(".alpha")}
    assert set(alphas) == modules and set(alphas.values()) == {float(rank)}
