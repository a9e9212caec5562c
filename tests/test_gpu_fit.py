"""Fit a job to the GPU: the tier, the precision, the estimates with their sources, and the refusal of a job the GPU
cannot hold (naming what would fit), before anything is downloaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.adapters import GpuFacts, parse_gpu_listing
from core.errors import SpecError
from core.jobdir import JobDir
from core.settings import Settings
from core.spec.job import parse_job
from core.training.config import build_trainer_files
from core.training.gpu_fit import (
    check_fit,
    estimate_table,
    gpu_tier,
    plan_gpu,
    precision_class,
    time_estimate,
    vram_estimate,
)
from core.training.memory_plan import headroom_gb, table_params
from tests.conftest import ROOT

MODELS = {  # family, flavour -> the Hub id the plan sizes
    ("flux", "dev"): "black-forest-labs/flux.1-dev", ("chroma", "base"): "lodestones/chroma1-base",
    ("sd3", "large"): "stabilityai/stable-diffusion-3.5-large", ("qwen_image", "v1.0"): "qwen/qwen-image",
    ("wan", "t2v-480p-1.3b-2.1"): "wan-ai/wan2.1-t2v-1.3b-diffusers",
    ("wan", "t2v-480p-14b-2.1"): "wan-ai/wan2.1-t2v-14b-diffusers",
}
CARDS = (16, 22.49, 24, 48, 80)
SPEED = ["no_change", "int8-quanto", "ramtorch", "int4-quanto", "nf4-bnb"]
"""The plans from fastest to slowest."""

JOB, IMAGES = JobDir(Path("/JOB")), Path("/JOB/dataset/images")


def gpu(gb: float | None, count: int = 1) -> GpuFacts:
    return GpuFacts(count=count, memory_gb=gb, source="GPU_MEMORY_GB")


def plan(family: str, flavour: str | None, gb: float | None, **config):
    return plan_gpu(family=family, flavour=flavour, config=config, gpu=gpu(gb))


def sized(family: str, flavour: str, gb: float | None, *, ram: float | None = 128, frames: int = 1, **config):
    return plan_gpu(family=family, flavour=flavour, config=config, gpu=gpu(gb), frames=frames,
                    params=table_params(MODELS[family, flavour]), system_memory_gb=ram)


def speed(fit) -> int:
    return SPEED.index("ramtorch" if fit.ramtorch else fit.base_model_precision)


@pytest.mark.parametrize(("family", "flavour"), list(MODELS))
def test_each_card_gets_a_plan_within_its_memory_or_a_refusal_naming_what_fits(family, flavour):
    for frames in ((1, 81) if family == "wan" else (1,)):
        plans = [sized(family, flavour, gb, frames=frames) for gb in CARDS]
        for card, fit in zip(CARDS, plans, strict=True):
            if fit.fits:
                assert fit.estimated_vram_gb + headroom_gb(card) <= card, (card, fit)
                assert fit.memory["training_phase_gb"] <= fit.estimated_vram_gb
            else:
                assert fit.fits is False and "What would fit" in fit.problem and "GB card" in fit.problem
                with pytest.raises(SpecError) as caught:
                    check_fit(fit)
                assert caught.value.field == "config.base_model_precision"
        fitting = [speed(fit) for fit in plans if fit.fits]
        assert fitting == sorted(fitting, reverse=True), (family, frames)  # a larger card: never a slower plan
        assert plans[-1].fits and plans[-1].base_model_precision == "no_change" and not plans[-1].ramtorch


def test_big_cards_train_bf16_and_small_ones_quantize_only_as_needed():
    assert [sized("flux", "dev", gb).base_model_precision for gb in CARDS] == \
        ["int4-quanto", "int8-quanto", "int8-quanto", "no_change", "no_change"]
    assert sized("chroma", "base", 48).base_model_precision == "no_change"
    assert "quantize_via" not in sized("flux", "dev", 80).settings
    assert sized("flux", "dev", 24).settings["quantize_via"] == "cpu"


def test_an_l4_just_under_24_gb_gets_the_24_gb_plan_when_it_fits():
    l4 = plan_gpu(family="flux", flavour="dev", config={}, params=table_params(MODELS["flux", "dev"]),
                  gpu=GpuFacts(count=1, memory_gb=22.49, source="nvidia-smi", name="NVIDIA L4"), system_memory_gb=64)
    assert (l4.fits, l4.base_model_precision, l4.tier_gb) == (True, "int8-quanto", 24)
    assert l4.estimated_vram_gb + l4.headroom_gb <= 22.49


def test_qwen_image_v1_is_refused_on_16_gb_before_any_download_and_quantized_on_24():
    small = sized("qwen_image", "v1.0", 16)
    assert small.fits is False and "caching text embeddings" in small.problem  # the 8.3B text encoder alone
    assert "int4-quanto on a 24 GB card" in small.problem and "no_change on a 48 GB card" in small.problem
    assert sized("qwen_image", "v1.0", 24).base_model_precision in ("int8-quanto", "int4-quanto")
    assert sized("qwen_image", "v1.0", 48).base_model_precision == "no_change"


def test_sd35_large_is_checked_and_a_rank_128_bf16_lora_is_refused_on_16_gb():
    fit = sized("sd3", "large", 16, base_model_precision="no_change", lora_rank=128)
    assert fit.fits is False and fit.estimated_vram_gb > 16
    assert "no_change on a 32 GB card" in fit.problem and "leave base_model_precision out" in fit.problem
    assert sized("sd3", "large", 24, lora_rank=128).fits is True  # the plan quantizes instead


def test_wan_14b_on_24_gb_video_gets_simpletuners_ramtorch_settings():
    fit = sized("wan", "t2v-480p-14b-2.1", 24, frames=81)
    assert fit.ramtorch and fit.fits and fit.recipe == "wan2.1-t2v-14b-480p-single-gpu.peft-lora+ramtorch"
    for key in ("ramtorch", "ramtorch_target_modules", "offload_during_startup", "vae_enable_tiling",
                "vae_enable_slicing"):
        assert key in fit.settings, key
    assert fit.estimated_ram_gb and fit.estimated_ram_gb > 26  # the bf16 blocks live in RAM
    assert not sized("wan", "t2v-480p-14b-2.1", 80, frames=81).ramtorch


def test_system_ram_is_checked_for_cpu_quantization_and_the_alternative_named():
    short = sized("flux", "dev", 24, ram=32)
    assert short.fits is False
    with pytest.raises(SpecError) as caught:
        check_fit(short)
    assert caught.value.field == "config.quantize_via" and "50.3 GB of system RAM" in str(caught.value)
    assert "no_change on a 32 GB card" in str(caught.value)
    big = sized("flux", "dev", 48, ram=32)  # bf16 needs no quantization; int8 could quantize on the GPU
    assert big.fits and big.base_model_precision == "no_change"
    assert any("quantize_via accelerator" in alt for alt in big.alternatives)
    assert Settings.from_env({"SYSTEM_MEMORY_GB": "64"}).system_memory_gb == 64
    assert Settings.from_env({}).system_memory_gb > 0  # /proc/meminfo


def test_nvidia_smi_memory_is_read_per_gpu_exactly_with_its_name():
    listing = parse_gpu_listing("NVIDIA GeForce RTX 4090, 24564\nNVIDIA L4, 23034\nNVIDIA H200, 143771\n\n")
    assert [(gpu.name, gpu.memory_gb) for gpu in listing] == [
        ("NVIDIA GeForce RTX 4090", 23.99), ("NVIDIA L4", 22.49), ("NVIDIA H200", 140.4)]
    assert parse_gpu_listing("NVIDIA A10G, [N/A]\n") == []


def test_gpu_memory_gb_is_read_from_the_environment_and_checked():
    assert Settings.from_env({"GPU_MEMORY_GB": "16"}).gpu_memory_gb == 16
    assert Settings.from_env({"GPU_PRICE_PER_HOUR": "0.69"}).gpu_price_per_hour == 0.69
    with pytest.raises(Exception) as caught:
        Settings.from_env({"GPU_MEMORY_GB": "lots"})
    assert caught.value.field == "GPU_MEMORY_GB"


def test_flux_on_24_gb_gets_simpletuners_int8_recipe_and_the_published_figure():
    fit = plan("flux", "dev", 24)
    assert (fit.recipe, fit.base_model_precision, fit.estimated_vram_gb, fit.fits) == \
        ("flux.peft-lora", "int8-quanto", 18.0, True)
    assert fit.tier_gb == 24 and "quickstart/FLUX.md" in fit.vram_source
    assert fit.settings["quantize_via"] == "cpu" and fit.settings["flow_schedule_shift"] == 3


def test_full_bf16_flux_on_16_gb_is_refused_naming_what_fits():
    fit = plan("flux", "dev", 16, base_model_precision="no_change")
    assert fit.fits is False and fit.tier_gb == 32
    with pytest.raises(SpecError) as caught:
        check_fit(fit)
    message = str(caught.value)
    assert caught.value.field == "config.base_model_precision"
    assert "needs about 30 GB" in message and "16 GB" in message and "32 GB tier" in message
    assert "int4-quanto (about 13 GB)" in message and "nf4-bnb (about 9 GB)" in message


def test_the_jobs_own_precision_is_checked_and_a_missing_figure_is_bounded_by_a_heavier_one():
    assert plan("chroma", "hd", 80, base_model_precision="no_change").fits is True
    chroma = plan("chroma", "hd", 24, base_model_precision="no_change")
    assert chroma.fits is False and "int8-quanto (about 16 GB)" in chroma.problem
    lumina = plan("lumina2", "2.0", 16)  # SimpleTuner's example quantizes to int8; only a bf16 figure is published
    assert (lumina.base_model_precision, lumina.estimated_vram_gb, lumina.fits) == ("int8-quanto", 14, True)
    assert "upper bound" in lumina.vram_source


def test_a_tiered_recipe_is_its_own_estimate_and_a_gpu_below_every_tier_is_refused():
    fit = plan("qwen_image", "v2.1", 40)
    assert (fit.recipe, fit.tier_gb, fit.estimated_vram_gb, fit.fits) == ("qwen_image-2.1-32g.peft-lora", 32, 32, True)
    assert "written for a 32 GB GPU" in fit.vram_source
    small = plan("qwen_image", "v2.1", 16)
    assert small.fits is False and "24 GB tier" in small.problem


def test_no_published_figure_means_no_refusal_and_says_so():
    fit = plan("sd3", "medium", 8)  # without its size
    assert fit.fits is None and fit.estimated_vram_gb is None and "no published figure" in fit.vram_source
    check_fit(fit)
    assert plan("flux", "dev", None).fits is None  # GPU size unknown: nothing checked


def test_the_estimate_table_names_a_source_for_every_figure():
    for family, entry in estimate_table()["families"].items():
        for part in [entry, *entry.get("flavours", {}).values()]:
            if "vram_gb" in part:
                assert "github.com/bghira/SimpleTuner" in part["vram_source"], family
                assert set(part["vram_gb"]) <= set(estimate_table()["precision_classes"]), family
            for figure in part.get("step_s", []):
                assert {"seconds", "gpu", "resolution", "precision", "batch", "source"} <= set(figure), family
    assert precision_class("int8-torchao") == "8bit" and precision_class("int16-sdnq") is None
    assert vram_estimate("flux", "dev", "nf4-bnb")[0] == 9 and gpu_tier(18) == 24 and gpu_tier(30) == 32


def test_time_and_cost_come_from_a_step_time_of_the_same_family_precision_and_gpu():
    fit = sized("flux", "dev", 16, base_model_precision="nf4-bnb")
    times = time_estimate(fit, total_steps=1000, resolution=1024, price_per_hour=2.0,
                          gpu_name="NVIDIA GeForce RTX 4090")
    assert times["estimated_step_s"] == 3.5 and times["estimated_total_s"] == 3500
    assert times["estimated_cost"] == round(3500 / 3600 * 2.0, 2)
    assert "RTX 4090" in times["step_basis"] and "not an" not in times["step_basis"]
    int8 = time_estimate(sized("flux", "dev", 24), total_steps=10, resolution=1024, price_per_hour=1.0)
    assert int8["estimated_step_s"] is None and "no published step time for flux at int8-quanto" in int8["step_basis"]
    wan = sized("wan", "t2v-480p-1.3b-2.1", 80)
    on_l40s = time_estimate(wan, total_steps=10, resolution=480, price_per_hour=None, gpu_name="NVIDIA L40S")
    on_h100 = time_estimate(wan, total_steps=10, resolution=480, price_per_hour=None, gpu_name="NVIDIA H100 80GB HBM3")
    assert on_l40s["estimated_step_s"] > on_h100["estimated_step_s"]
    assert on_h100["estimated_step_s"] < 0.2  # one image, not the 81-frame video the figure was measured on
    qwen = [time_estimate(sized("qwen_image", "v1.0", gb), total_steps=1, resolution=1024, price_per_hour=None,
                          gpu_name="NVIDIA H100")["estimated_step_s"] for gb in (24, 80)]
    assert qwen[1] == 1.2 and (qwen[0] is None or qwen[0] > qwen[1])


def test_on_cuda_the_recipe_fills_what_the_job_left_out_and_the_job_wins():
    job = {"dataset": {"path": "/data"}, "trigger_word": "sks",
           "config": {"model_name": "black-forest-labs/FLUX.1-schnell", "learning_rate": 3e-5}}
    files = build_trainer_files(parse_job(job), images_dir=IMAGES, job=JOB, device="cuda", gpu=gpu(24),
                                system_memory_gb=64)
    config = files.config
    assert config["--model_flavour"] == "schnell" and config["--flux_fast_schedule"] is True
    assert config["--validation_num_inference_steps"] == 4  # schnell's, over the recipe's 16
    assert config["--learning_rate"] == 3e-5 and config["--base_model_precision"] == "int8-quanto"
    assert config["--resolution"] == 512 and config["--validation_guidance"] == 4.0
    assert files.backends[0]["resolution"] == 512 and files.plan.tier_gb == 24


def test_a_lycoris_only_recipe_gives_a_lora_job_no_adapter_numbers():
    job = {"dataset": {"path": "/data"}, "config": {"model_name": "stabilityai/stable-diffusion-xl-base-1.0"}}
    config = build_trainer_files(parse_job(job), images_dir=IMAGES, job=JOB, device="cuda", gpu=gpu(24)).config
    assert config["--learning_rate"] == 1e-4 and config["--lora_rank"] == 16  # not sdxl.lycoris-lokr's 3e-07
    assert config["--resolution_type"] == "pixel_area"


def test_a_job_the_gpu_cannot_hold_is_refused_at_configure_too():
    job = {"dataset": {"path": "/data"},
           "config": {"model_name": "black-forest-labs/FLUX.1-dev", "base_model_precision": "no_change"}}
    with pytest.raises(SpecError) as caught:
        build_trainer_files(parse_job(job), images_dir=IMAGES, job=JOB, device="cuda", gpu=gpu(16))
    assert caught.value.field == "config.base_model_precision"


def _check(tmp_path, job: dict, **env_vars) -> subprocess.CompletedProcess:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "SYSTEM_MEMORY_GB": "64", **env_vars}
    env.pop("TRAINER_DEVICE", None)
    return subprocess.run([sys.executable, "-m", "core", "check", str(path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_check_on_a_cpu_machine_refuses_a_job_a_16_gb_gpu_cannot_hold(tmp_path, demo_dataset):
    done = _check(tmp_path, {"dataset": {"path": str(demo_dataset)},
                             "config": {"model_name": "black-forest-labs/FLUX.1-dev",
                                        "base_model_precision": "no_change", "max_train_steps": 100}},
                  GPU_MEMORY_GB="16")
    assert done.returncode == 1, done.stdout + done.stderr
    error = json.loads(done.stdout)["error"]
    assert (error["stage"], error["field"]) == ("validate", "config.base_model_precision")
    assert "no_change on a 32 GB card" in error["message"]


def test_check_reports_the_plan_estimates_and_cost(tmp_path, demo_dataset):
    job = {"dataset": {"path": str(demo_dataset)}, "dataloader": {"minimum_image_size": 64},
           "config": {"model_name": "black-forest-labs/FLUX.1-dev", "max_train_steps": 100}}
    done = _check(tmp_path, job, GPU_MEMORY_GB="24", GPU_PRICE_PER_HOUR="0.69")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)["preflight"]["gpu"]
    assert (report["tier_gb"], report["base_model_precision"], report["fits"]) == (24, "int8-quanto", True)
    assert report["estimated_vram_gb"] + report["headroom_gb"] <= 24 and report["estimated_ram_gb"] == 50.3
    assert report["estimated_step_s"] is None and report["gpu_price_per_hour"] == 0.69
    big = json.loads(_check(tmp_path, job, GPU_MEMORY_GB="80").stdout)["preflight"]["gpu"]
    assert big["base_model_precision"] == "no_change" and big["memory"]["weights_gb"] > 20
    short = json.loads(_check(tmp_path, job, GPU_MEMORY_GB="24", SYSTEM_MEMORY_GB="32").stdout)["error"]
    assert short["field"] == "config.quantize_via" and "GB of system RAM" in short["message"]


def test_a_video_job_is_planned_for_clips_before_its_dataset_is_staged():
    """The plan at validate time must hold before the model downloads, when nobody knows yet whether the dataset
    holds clips: a video family is planned for clips of its default length, one tiled clip per VAE call; after
    staging, a dataset of stills only is planned for stills."""
    from core.training.config import gpu_plan, video_frames

    spec = parse_job({"dataset": {"path": "/data"}, "config": {
        "model_family": "wan", "model_name": "Wan-AI/Wan2.1-T2V-14B-Diffusers", "model_flavour": "t2v-480p-14b-2.1"}})
    assert video_frames(spec) == video_frames(spec, clips=True) == 81
    assert video_frames(spec, clips=False) == 1
    card = gpu(24)
    before = gpu_plan(spec, device="cuda", gpu=card, system_memory_gb=128)
    stills = gpu_plan(spec, device="cuda", gpu=card, system_memory_gb=128, clips=False)
    assert before is not None and stills is not None
    assert before.estimated_vram_gb is not None and stills.estimated_vram_gb is not None
    assert before.estimated_vram_gb + (before.headroom_gb or 0) <= 24
    # on a card where both train unquantized, 81-frame clips need more memory than stills
    big_clips = gpu_plan(spec, device="cuda", gpu=gpu(80), system_memory_gb=128)
    big_stills = gpu_plan(spec, device="cuda", gpu=gpu(80), system_memory_gb=128, clips=False)
    assert big_clips is not None and big_stills is not None
    assert big_clips.base_model_precision == big_stills.base_model_precision == "no_change"
    assert (big_clips.estimated_vram_gb or 0) > (big_stills.estimated_vram_gb or 0) > 0
    image = parse_job({"dataset": {"path": "/data"}, "config": {
        "model_family": "flux", "model_name": "black-forest-labs/FLUX.1-dev"}})
    assert video_frames(image) == 1  # an image family never counts frames


def test_a_plan_says_how_much_the_model_download_weighs():
    """What a user pays for before the first step: the download, from the model's own size (FLUX.1-dev's
    components: 11.9B + 4.76B + 0.123B + 0.084B parameters, about 31.4 GB in bf16)."""
    from core.training.config import gpu_plan

    spec = parse_job({"dataset": {"path": "/data"}, "config": {
        "model_family": "flux", "model_name": "black-forest-labs/FLUX.1-dev"}})
    planned = gpu_plan(spec, device="cuda", gpu=gpu(80), system_memory_gb=128)
    assert planned is not None and planned.download_gb is not None
    assert 31 <= planned.download_gb <= 32
    assert planned.to_dict()["download_gb"] == planned.download_gb
    unknown = plan("flux", "dev", 80)  # no size known: no figure rather than a guess
    assert unknown.download_gb is None
