"""A training with a quantized base model (`base_model_precision`), for real: the tiny SDXL model, int8 through
torchao, on CPU.

int8-torchao, not int8-quanto: quanto's int8 matmul on CPU (`_weight_int8pack_mm_cpu`) refuses SimpleTuner's
non-contiguous activations, so a quanto training fails on CPU; torchao's int8 trains there. The GPU check
(bench/gpu_check.py) runs both on CUDA.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors import safe_open

from core.generation.demo import write_demo_dataset
from tests.conftest import tiny_job
from tests.support.lora_loading import compare_lora_files

PRECISION = "int8-torchao"
STEPS = 2


@pytest.fixture(scope="module")
def quantized_run(tmp_path_factory, tiny_model: Path, settings):
    """One training of the tiny model on a quantized base: (JobResult, events)."""
    from core.pipeline import run_job
    from core.spec.job import parse_job

    base = tmp_path_factory.mktemp("quantized")
    dataset = write_demo_dataset(base / "dataset", count=4)
    job = tiny_job(tiny_model, dataset, config={"base_model_precision": PRECISION, "max_train_steps": STEPS,
                                                "checkpointing_steps": STEPS})
    events: list = []
    return run_job(parse_job(job), base / "job", events.append, settings=settings), events


@pytest.mark.training
def test_a_lora_trains_on_an_int8_base_and_simpletuner_says_it_quantized(quantized_run):
    result, _ = quantized_run
    assert result.status == "succeeded"
    assert result.metrics.steps == STEPS
    log = result.log_path.read_text()
    assert f"Using {PRECISION}." in log  # SimpleTuner's own line once it has quantized the UNet
    assert "Quantising FlowMapUNet2DConditionModel" in log
    with safe_open(str(result.lora_path), framework="numpy") as weights:
        keys = list(weights.keys())
        assert keys and all("lora" in key for key in keys)


@pytest.mark.training
def test_the_lora_of_a_quantized_training_loads_into_the_full_precision_pipeline(quantized_run, tiny_model, settings):
    """What a user does next: load the LoRA into the (unquantized) base model with diffusers; it changes weights."""
    result, _ = quantized_run
    unet = compare_lora_files(settings=settings, model=tiny_model, lora=result.lora_path,
                              comfyui=result.comfyui_path)["unet"]
    assert unet["changed_by_diffusers_file"] > 0
    assert unet["changed_by_comfyui_file"] == unet["changed_by_diffusers_file"]
