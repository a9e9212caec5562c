"""Tiny models of more families: built offline by `python -m core demo-model DIR --family F`, and a LoRA really
trains on FLUX.1, SD3.5, Chroma, Qwen-Image and Wan 2.1 through `python -m core run` on CPU (Wan's validation
outputs are videos, reported like images)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, tiny_job

# The flavour whose layout the tiny model has. Not required (both also train with SimpleTuner's default flavour,
# FLUX `krea` and SD3 `medium`), but it says which checkpoint the tiny model stands for.
FAMILY_CONFIG = {
    "flux": {"model_family": "flux", "model_flavour": "dev"},
    "sd3": {"model_family": "sd3", "model_flavour": "medium"},
    "chroma": {"model_family": "chroma", "model_flavour": "base"},
    # SimpleTuner's default Qwen flavour (v2.1) has another text encoder and VAE than Qwen-Image 1.0.
    "qwen_image": {"model_family": "qwen_image", "model_flavour": "v1.0"},
    "wan": {"model_family": "wan", "model_flavour": "t2v-480p-1.3b-2.1"},
}
# Wan renders its validation as a video: one step of validation proves a .mp4 is reported like an image. (SimpleTuner
# reads a validation_resolution under 128 as megapixels, hence "64x64".)
VALIDATION = {"wan": {"validation_prompt": "sks a red circle", "validation_steps": 2, "validation_resolution": "64x64",
                      "validation_num_inference_steps": 2, "validation_num_video_frames": 5}}


def core_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, env=dict(os.environ), capture_output=True,
                          text=True, timeout=timeout, check=False)


def _safetensors_keys(path: Path) -> list[str]:
    """The tensor names in a safetensors header (8-byte little-endian length, then JSON)."""
    with path.open("rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(size))
    return [key for key in header if key != "__metadata__"]


@pytest.mark.trainer_env
@pytest.mark.parametrize(("family", "pipeline", "components"), [
    ("flux", "FluxPipeline", {"transformer", "text_encoder", "text_encoder_2", "vae"}),
    ("sd3", "StableDiffusion3Pipeline", {"transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "vae"}),
    ("chroma", "ChromaPipeline", {"transformer", "text_encoder", "vae"}),
    ("qwen_image", "QwenImagePipeline", {"transformer", "text_encoder", "vae"}),
    ("wan", "WanPipeline", {"transformer", "text_encoder", "vae"}),
])
def test_demo_model_builds_a_tiny_model_of_the_family(tiny_family_model, family, pipeline, components):
    model = tiny_family_model(family)
    index = json.loads((model / "model_index.json").read_text())
    assert index["_class_name"] == pipeline
    assert components <= {name for name, value in index.items() if isinstance(value, list) and value[0]}
    size = sum(path.stat().st_size for path in model.rglob("*") if path.is_file())
    assert size < 30 * 2**20


@pytest.mark.trainer_env
def test_the_cli_builds_a_family_model_into_the_given_folder(tmp_path):
    done = core_cli("demo-model", str(tmp_path / "chroma"), "--family", "chroma")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == str(tmp_path / "chroma")
    assert json.loads((tmp_path / "chroma" / "model_index.json").read_text())["_class_name"] == "ChromaPipeline"
    assert not (tmp_path / "chroma.partial").exists()


def test_demo_model_refuses_an_unknown_family(tmp_path):
    done = core_cli("demo-model", str(tmp_path / "m"), "--family", "sd15")
    assert done.returncode == 2
    assert "--family" in done.stderr and "flux" in done.stderr
    assert not (tmp_path / "m").exists()


@pytest.mark.training
@pytest.mark.parametrize("family", ["flux", "sd3", "chroma", "qwen_image", "wan"])
def test_a_lora_trains_on_the_tiny_model_through_the_cli(tmp_path, demo_dataset, tiny_family_model, family):
    model = tiny_family_model(family)
    job = tiny_job(model, demo_dataset, config={**FAMILY_CONFIG[family], "resolution": 64, "max_train_steps": 2,
                                                "checkpointing_steps": 100, "lora_rank": 2,
                                                **VALIDATION.get(family, {})})
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    done = core_cli("run", str(path), "--workdir", str(tmp_path / "work"))
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["status"] == "succeeded" and result["metrics"]["steps"] == 2
    keys = _safetensors_keys(tmp_path / "work" / "output" / "pytorch_lora_weights.safetensors")
    assert keys and all("lora" in key for key in keys)
    assert any(key.startswith("transformer.") for key in keys)
    if family in VALIDATION:  # a video, listed like an image: path, prompt, and what it is
        videos = [entry for entry in result["validation"] if entry["prompt"] == "sks a red circle"]
        assert videos and all(entry["media"] == "video" and entry["path"].endswith(".mp4") for entry in videos)
        assert all((tmp_path / "work" / "output" / entry["path"]).stat().st_size > 0 for entry in videos)
