"""core/generation/preview_fit.py: where a preview's pipeline goes on the GPU, planned from the weights' safetensors
headers before anything loads. The folders here are fake FLUX.1-dev-sized models: a header that declares the
tensors is all that is read, so a 12-billion-parameter transformer costs a few bytes on disk."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from core.generation import PreviewTooLarge, plan_preview
from core.models import model_sizes

FLUX_DEV = {"transformer": 11_901_408_320, "text_encoder_2": 4_762_310_656, "text_encoder": 123_060_480,
            "vae": 83_819_683}
"""FLUX.1-dev's parameters per component, as its safetensors headers say."""
LORA_PARAMS = 18_677_760
"""A rank-16 FLUX LoRA."""


def fake_weights(path: Path, params: int) -> None:
    """A safetensors file whose header declares `params` bf16 parameters (the data itself is left out)."""
    header = json.dumps({"weight": {"dtype": "BF16", "shape": [params], "data_offsets": [0, params * 2]}}).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(header)) + header)


@pytest.fixture
def flux_dev(tmp_path: Path) -> Path:
    for component, params in FLUX_DEV.items():
        fake_weights(tmp_path / "flux" / component / "diffusion_pytorch_model.safetensors", params)
    return tmp_path / "flux"


def test_a_24_gb_card_offloads_flux_dev_and_an_80_gb_card_holds_it_all(flux_dev: Path):
    sizes = model_sizes(flux_dev)
    small = plan_preview(device="cuda", sizes=sizes, gpu_memory_gb=24.0, lora_params=LORA_PARAMS)
    assert small.placement == "model_offload" and small.vae_tiling
    assert small.needed_gb <= 24 < small.weights_gb  # the whole model does not fit; one component at a time does
    big = plan_preview(device="cuda", sizes=sizes, gpu_memory_gb=80.0, lora_params=LORA_PARAMS)
    assert big.placement == "gpu" and not big.vae_tiling
    assert 30 < big.weights_gb < 33 and big.weights_gb < big.needed_gb <= 80
    assert "80 GB" in big.describe() and "all on the GPU" in big.describe()


def test_a_card_that_holds_no_component_gets_sequential_offload_and_one_too_small_is_refused_with_numbers(
        flux_dev: Path):
    sizes = model_sizes(flux_dev)
    assert plan_preview(device="cuda", sizes=sizes, gpu_memory_gb=16.0).placement == "sequential_offload"
    with pytest.raises(PreviewTooLarge) as caught:
        plan_preview(device="cuda", sizes=sizes, gpu_memory_gb=2.0)
    message = caught.value.message
    assert caught.value.field == "model" and caught.value.stage == "generate"
    assert "31.4 GB" in message and "needs 2.2 GB" in message and "has 2 GB" in message, message


def test_a_video_needs_more_room_than_an_image_and_always_tiles_its_vae(flux_dev: Path):
    sizes = model_sizes(flux_dev)
    image = plan_preview(device="cuda", sizes=sizes, gpu_memory_gb=80.0, width=832, height=480)
    video = plan_preview(device="cuda", sizes=sizes, gpu_memory_gb=80.0, width=832, height=480, frames=81)
    assert video.needed_gb > image.needed_gb + 3 and video.vae_tiling and not image.vae_tiling


def test_on_the_cpu_or_without_known_sizes_nothing_changes(flux_dev: Path):
    sizes = model_sizes(flux_dev)
    assert plan_preview(device="cpu", sizes=sizes, gpu_memory_gb=None).placement == "cpu"
    unknown = plan_preview(device="cuda", sizes={}, gpu_memory_gb=24.0)
    assert unknown.placement == "gpu" and "unknown" in unknown.reason
    assert plan_preview(device="cuda", sizes=sizes, gpu_memory_gb=None).placement == "gpu"
