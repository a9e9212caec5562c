"""Video LoRA plans before anything is downloaded: Wan 2.1 14B (T2V, I2V), Wan 2.2 I2V A14B (either expert) and
LTX-2 with a video dataloader of 81 frames at 480p, on a 24 GB and an 80 GB card. Each job either gets a plan whose
estimate plus headroom is under the card, with SimpleTuner's offload settings where it needs them, or is refused at
validation naming what would fit. The flavour comes from the Hub id; the sizes from core/data/model_sizes.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.adapters import GpuFacts
from core.errors import SpecError
from core.spec.job import parse_job
from core.training.config import gpu_plan
from core.training.memory_plan import headroom_gb
from tests.conftest import ROOT

MODELS = {  # what a user names -> the flavour SimpleTuner trains
    "wan-2.1-t2v-14b": ("Wan-AI/Wan2.1-T2V-14B-Diffusers", None, "t2v-480p-14b-2.1"),
    "wan-2.1-i2v-14b": ("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", None, "i2v-14b-2.1"),
    "wan-2.2-a14b-high": ("Wan-AI/Wan2.2-I2V-A14B-Diffusers", None, "i2v-14b-2.2-high"),
    "wan-2.2-a14b-low": ("Wan-AI/Wan2.2-I2V-A14B-Diffusers", "i2v-14b-2.2-low", "i2v-14b-2.2-low"),
    "ltx-2": ("Lightricks/LTX-2", None, "dev"),
}
CARDS = (24, 80)


def video_job(model: str, *, flavour: str | None = None, frames: int = 81, **config) -> dict:
    """A video LoRA job: one video backend of `frames` frames at 480 px (pixel area), SimpleTuner's video example."""
    return {"dataset": {"path": "/data"},
            "dataloader": [{"id": "clips", "type": "local", "dataset_type": "video", "resolution": 480,
                            "resolution_type": "pixel_area", "video": {"num_frames": frames}}],
            "config": {"model_name": model, "max_train_steps": 100, **({"model_flavour": flavour} if flavour else {}),
                       **config}}


def plan(job: dict, gb: float, *, ram: float = 128):
    return gpu_plan(parse_job(job), device="cuda", gpu=GpuFacts(count=1, memory_gb=gb, source="GPU_MEMORY_GB"),
                    system_memory_gb=ram)


@pytest.mark.parametrize("name", list(MODELS))
def test_each_card_gets_a_video_plan_under_its_memory_or_a_refusal_naming_what_fits(name):
    model, flavour, trained = MODELS[name]
    for card in CARDS:
        try:
            fit = plan(video_job(model, flavour=flavour), card)
        except SpecError as refused:
            assert refused.field == "config.base_model_precision" and "What would fit" in str(refused), refused
            assert "GB card" in str(refused)
            continue
        assert fit.flavour == trained and fit.frames == 81
        assert fit.fits and fit.estimated_vram_gb + headroom_gb(card) <= card, (card, fit)
        assert fit.memory["training_phase_gb"] <= fit.estimated_vram_gb >= fit.memory["caching_phase_gb"]
        assert "model_sizes.json" in fit.vram_source and "calibrated on" in fit.vram_source
        if fit.ramtorch:  # the blocks live in RAM: the machine must hold them
            assert fit.estimated_ram_gb and fit.estimated_ram_gb <= 128
            assert fit.settings["ramtorch"] is True
            assert "ramtorch_target_modules" in fit.settings or fit.settings.get("ramtorch_text_encoder")


@pytest.mark.parametrize("name", ["wan-2.1-t2v-14b", "wan-2.1-i2v-14b", "wan-2.2-a14b-high", "wan-2.2-a14b-low"])
def test_wan_14b_streams_its_blocks_on_24_gb_and_trains_bf16_on_80(name):
    model, flavour, _ = MODELS[name]
    small, big = plan(video_job(model, flavour=flavour), 24), plan(video_job(model, flavour=flavour), 80)
    assert small.ramtorch and small.base_model_precision == "no_change"
    # Wan 2.2 A14B has only TREAD examples and Wan 2.1 I2V none: the RamTorch settings are those of the same-size
    # Wan 2.1 14B example, not the 1.3B one.
    assert small.recipe == "wan2.1-t2v-14b-480p-single-gpu.peft-lora+ramtorch"
    assert small.settings["ramtorch_target_modules"] == "blocks.*" and small.settings["vae_enable_tiling"] is True
    assert not big.ramtorch and big.base_model_precision == "no_change"
    assert big.memory["weights_gb"] > 25  # the whole 14B expert in bf16


def test_a_tread_only_flavour_still_gets_simpletuners_plain_settings_from_its_own_example():
    fit = plan(video_job("Wan-AI/Wan2.2-I2V-A14B-Diffusers"), 80)
    assert fit.recipe == "wan-2.2-i2v-a14b-high.peft-lora+TREAD"
    assert fit.settings["resolution"] == 480 and fit.settings["resolution_type"] == "pixel_area"
    assert "tread_config" not in fit.settings


def test_ltx2_on_24_gb_streams_the_transformer_and_gemma_as_simpletuners_16g_example_does():
    fit = plan(video_job("Lightricks/LTX-2"), 24)
    assert fit.ramtorch and fit.recipe == "ltxvideo2-19b-t2v.peft-lora+16G"
    assert fit.settings["ramtorch_text_encoder"] is True
    assert fit.memory["caching_phase_gb"] < 12  # Gemma 3 12B alone is 23 GB in bf16: it streams
    assert plan(video_job("Lightricks/LTX-2"), 80).base_model_precision == "no_change"


def test_frames_and_resolution_from_the_dataloader_size_the_activations():
    model = MODELS["wan-2.1-t2v-14b"][0]
    long, short = plan(video_job(model, frames=81), 80), plan(video_job(model, frames=17), 80)
    assert long.frames == 81 and short.frames == 17
    assert long.memory["activations_gb"] > 4 * short.memory["activations_gb"]  # 21 latent frames against 5
    assert long.memory["weights_gb"] == short.memory["weights_gb"]


def test_too_little_ram_for_offload_refuses_ltx2_on_24_gb_naming_the_cards_that_fit():
    with pytest.raises(SpecError) as refused:
        plan(video_job("Lightricks/LTX-2"), 24, ram=64)
    message = str(refused.value)
    assert refused.value.field == "config.base_model_precision" and "this GPU has 24 GB" in message
    assert "no_change on a 80 GB card" in message and "What would fit" in message


def _check(tmp_path: Path, job: dict, **env_vars: str) -> dict:
    (tmp_path / "dataset").mkdir(exist_ok=True)
    job = {**job, "dataset": {"path": str(tmp_path / "dataset")}}
    (tmp_path / "job.json").write_text(json.dumps(job))
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "HF_HOME": str(tmp_path / "hf"), **env_vars}
    env.pop("TRAINER_DEVICE", None)  # a CUDA job's plan, on a machine without a GPU
    done = subprocess.run([sys.executable, "-m", "core", "check", str(tmp_path / "job.json")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    return json.loads(done.stdout)


def test_check_plans_wan_22_a14b_and_refuses_ltx2_before_any_download(tmp_path, demo_dataset):
    import shutil

    shutil.copytree(demo_dataset, tmp_path / "dataset")
    wan = video_job("Wan-AI/Wan2.2-I2V-A14B-Diffusers", flavour="i2v-14b-2.2-low")
    small = _check(tmp_path, wan, GPU_MEMORY_GB="24", SYSTEM_MEMORY_GB="128")["preflight"]["gpu"]
    assert (small["fits"], small["ramtorch"], small["frames"], small["flavour"]) == (True, True, 81, "i2v-14b-2.2-low")
    assert small["estimated_vram_gb"] + small["headroom_gb"] <= 24
    big = _check(tmp_path, wan, GPU_MEMORY_GB="80", SYSTEM_MEMORY_GB="128")["preflight"]["gpu"]
    assert big["base_model_precision"] == "no_change" and not big["ramtorch"]
    error = _check(tmp_path, video_job("Lightricks/LTX-2"), GPU_MEMORY_GB="24", SYSTEM_MEMORY_GB="64")["error"]
    assert (error["stage"], error["field"]) == ("validate", "config.base_model_precision")
    assert "GB card" in error["message"]
    assert not list((tmp_path / "hf").rglob("*.safetensors"))  # refused before a byte of the model
