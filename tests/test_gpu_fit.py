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
from tests.conftest import ROOT

JOB, IMAGES = JobDir(Path("/JOB")), Path("/JOB/dataset/images")


def gpu(gb: float | None, count: int = 1) -> GpuFacts:
    return GpuFacts(count=count, memory_gb=gb, source="GPU_MEMORY_GB")


def plan(family: str, flavour: str | None, gb: float | None, **config):
    return plan_gpu(family=family, flavour=flavour, config=config, gpu=gpu(gb))


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
    fit = plan("sd3", "large", 8)
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


def test_time_and_cost_come_from_a_published_step_time_with_its_conditions():
    fit = plan("flux", "dev", 24)
    times = time_estimate(fit, total_steps=1000, resolution=1024, price_per_hour=2.0)
    assert times["estimated_step_s"] == 3.5 and times["estimated_total_s"] == 3500
    assert times["estimated_cost"] == round(3500 / 3600 * 2.0, 2)
    assert "RTX 4090" in times["step_basis"] and "1024 px" in times["step_basis"]
    none = time_estimate(plan("sdxl", None, 24), total_steps=10, resolution=1024, price_per_hour=1.0)
    assert none["estimated_step_s"] is None and none["estimated_cost"] is None
    assert "no published step time" in none["step_basis"]


def test_on_cuda_the_recipe_fills_what_the_job_left_out_and_the_job_wins():
    job = {"dataset": {"path": "/data"}, "trigger_word": "sks",
           "config": {"model_name": "black-forest-labs/FLUX.1-schnell", "learning_rate": 3e-5}}
    files = build_trainer_files(parse_job(job), images_dir=IMAGES, job=JOB, device="cuda", gpu=gpu(24))
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


def test_check_on_a_cpu_machine_refuses_a_job_a_16_gb_gpu_cannot_hold(tmp_path, demo_dataset):
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"dataset": {"path": str(demo_dataset)},
                               "config": {"model_name": "black-forest-labs/FLUX.1-dev",
                                          "base_model_precision": "no_change", "max_train_steps": 100}}))
    env = {**os.environ, "GPU_MEMORY_GB": "16", "DATA_DIR": str(tmp_path / "data")}
    env.pop("TRAINER_DEVICE", None)
    done = subprocess.run([sys.executable, "-m", "core", "check", str(job)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    error = json.loads(done.stdout)["error"]
    assert (error["stage"], error["field"]) == ("validate", "config.base_model_precision")
    assert "32 GB tier" in error["message"] and "int4-quanto" in error["message"]


def test_check_reports_the_tier_estimates_and_cost(tmp_path, demo_dataset):
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"dataset": {"path": str(demo_dataset)}, "dataloader": {"minimum_image_size": 64},
                               "config": {"model_name": "black-forest-labs/FLUX.1-dev", "max_train_steps": 100}}))
    env = {**os.environ, "GPU_MEMORY_GB": "24", "GPU_PRICE_PER_HOUR": "0.69", "DATA_DIR": str(tmp_path / "data")}
    env.pop("TRAINER_DEVICE", None)
    done = subprocess.run([sys.executable, "-m", "core", "check", str(job)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)["preflight"]["gpu"]
    assert (report["tier_gb"], report["base_model_precision"], report["estimated_vram_gb"]) == (24, "int8-quanto", 18)
    assert report["estimated_total_s"] == 140 and report["estimated_cost"] == round(140 / 3600 * 0.69, 2)
