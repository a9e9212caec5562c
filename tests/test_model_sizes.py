"""core/models/sizes.py: a model's parameters per component from its safetensors headers, checked against the
tensors themselves, and a clear error for a file that is not safetensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from core.models import SizeError, header_size, model_sizes


def test_a_header_gives_the_parameters_and_bytes_the_tensors_hold(tmp_path):
    tensors = {"a.weight": np.zeros((64, 32), dtype=np.float16), "a.bias": np.zeros(64, dtype=np.float32),
               "b": np.zeros((3, 5, 7), dtype=np.int8)}
    save_file(tensors, str(tmp_path / "w.safetensors"), metadata={"format": "pt"})
    size = header_size(tmp_path / "w.safetensors")
    loaded = load_file(str(tmp_path / "w.safetensors"))
    assert size.params == sum(t.size for t in loaded.values()) == 64 * 32 + 64 + 105
    assert size.stored_bytes == sum(t.nbytes for t in loaded.values()) == 64 * 32 * 2 + 64 * 4 + 105


def test_a_diffusers_folder_is_read_per_component_shards_summed_and_one_variant_counted(tmp_path):
    model = tmp_path / "model"
    (model / "transformer").mkdir(parents=True)
    (model / "vae").mkdir()
    (model / "tokenizer").mkdir()
    for shard in (1, 2):
        save_file({f"w{shard}": np.zeros((10, 10), dtype=np.float32)},
                  str(model / "transformer" / f"diffusion_pytorch_model-0000{shard}-of-00002.safetensors"))
    save_file({"v": np.zeros(8, dtype=np.float32)}, str(model / "vae" / "diffusion_pytorch_model.fp16.safetensors"))
    save_file({"v": np.zeros(8, dtype=np.float32)}, str(model / "vae" / "diffusion_pytorch_model.bf16.safetensors"))
    sizes = model_sizes(model)
    assert set(sizes) == {"transformer", "vae"}  # a folder without weights is no component
    assert sizes["transformer"].params == 200 and sizes["vae"].params == 8


def test_the_tiny_models_components_are_what_their_tensors_hold(tiny_model: Path):
    sizes = model_sizes(tiny_model)
    assert set(sizes) == {"unet", "text_encoder", "text_encoder_2", "vae"}
    for component, size in sizes.items():
        [weights] = sorted((tiny_model / component).glob("*.safetensors"))
        assert size.params == sum(t.size for t in load_file(str(weights)).values()), component


def test_a_file_that_is_not_safetensors_is_an_error_naming_it(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(SizeError, match=r"bad\.safetensors"):
        header_size(tmp_path / "bad.safetensors")
    (tmp_path / "short.safetensors").write_bytes(b"\x01")
    with pytest.raises(SizeError, match=r"short\.safetensors"):
        header_size(tmp_path / "short.safetensors")
