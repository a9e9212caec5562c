"""A run's own accelerate config: what it says for one GPU, several, and the CPU; passed with --config_file, so a
default_config.yaml another tool left in HF_HOME changes nothing; and two processes on the CPU really train the tiny
model data-parallel (gloo), a one-image aspect bucket padded by SimpleTuner's oversubscription."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from PIL import Image

from core.events import JobWarning
from core.generation.demo import write_demo_dataset
from core.jobdir import JobDir
from core.pipeline import run_job
from core.spec.job import parse_job
from core.training.accelerate_config import CONFIG_NAME, accelerate_config, free_port, world_size
from tests.conftest import tiny_job

STRAY_DEEPSPEED = """compute_environment: LOCAL_MACHINE
distributed_type: DEEPSPEED
deepspeed_config:
  zero_stage: 3
num_processes: 8
mixed_precision: fp16
"""


def test_several_gpus_are_ddp_on_the_gpus_the_plan_chose():
    config = accelerate_config(device="cuda", processes=2, gpu_ids=["0", "2"], mixed_precision="bf16", port=29612)
    assert config["distributed_type"] == "MULTI_GPU" and config["num_processes"] == 2
    assert config["gpu_ids"] == "0,2" and config["use_cpu"] is False
    assert config["mixed_precision"] == "bf16" and config["main_process_port"] == 29612
    assert config["num_machines"] == 1


def test_one_gpu_is_no_distribution_on_that_gpu_and_the_cpu_uses_no_gpu():
    one = accelerate_config(device="cuda", processes=1, gpu_ids=["GPU-3f2a"], mixed_precision="bf16", port=1)
    assert (one["distributed_type"], one["num_processes"], one["gpu_ids"]) == ("NO", 1, "GPU-3f2a")
    cpu = accelerate_config(device="cpu", processes=1, gpu_ids=[], mixed_precision="no", port=1)
    assert (cpu["distributed_type"], cpu["use_cpu"], cpu["gpu_ids"]) == ("NO", True, "all")


def test_world_size_is_the_gpus_on_cuda_and_num_processes_on_the_cpu():
    assert world_size(device="cuda", gpu_count=4, processes=None) == 4
    assert world_size(device="cuda", gpu_count=2, processes=2) == 2
    assert world_size(device="cpu", gpu_count=0, processes=None) == 1
    assert world_size(device="cpu", gpu_count=0, processes=2) == 2


def test_a_free_port_is_one_nothing_listens_on():
    port = free_port()
    assert 1024 <= port <= 65535


@pytest.mark.training
def test_two_cpu_processes_train_with_a_stray_deepspeed_default_config_and_a_one_image_bucket(
        tmp_path, tiny_model, settings):
    """The data-parallel path on the CPU (gloo): SimpleTuner runs two ranks; the 3:1 image is a bucket of one,
    which two processes cannot split, so the job asks for oversubscription and is told so. A default_config.yaml
    saying DeepSpeed in HF_HOME (accelerate's default) is ignored: DeepSpeed is not even installed."""
    hf_home = tmp_path / "hf-home"
    (hf_home / "accelerate").mkdir(parents=True)
    (hf_home / "accelerate" / "default_config.yaml").write_text(STRAY_DEEPSPEED)
    dataset = write_demo_dataset(tmp_path / "dataset", count=4)
    Image.new("RGB", (384, 128), (20, 160, 40)).save(dataset / "wide.png")
    (dataset / "wide.txt").write_text("a wide green band")
    job = tiny_job(tiny_model, dataset, config={"num_processes": 2, "allow_dataset_oversubscription": True,
                                                "max_train_steps": 2, "checkpointing_steps": 2})
    events: list = []
    result = run_job(parse_job(job), tmp_path / "job", events.append,
                     settings=dataclasses.replace(settings, hf_home=hf_home))
    assert result.status == "succeeded" and result.lora_path and result.lora_path.exists()
    assert result.metrics.steps == 2
    assert result.preflight["processes"] == 2 and result.preflight["aspect_buckets"] == {"1": 4, "3": 1}
    warned = [e for e in events if isinstance(e, JobWarning) and e.field == "config.allow_dataset_oversubscription"]
    assert warned and "aspect bucket 3 (1 image)" in warned[0].message
    job_dir = JobDir(result.job_dir)
    launched = json.loads((job_dir.config / CONFIG_NAME).read_text())
    assert (launched["distributed_type"], launched["num_processes"], launched["use_cpu"]) == ("MULTI_GPU", 2, True)
    log = job_dir.log.read_text(errors="replace")
    assert "Dataset oversubscription enabled" in log  # SimpleTuner padded the bucket, for a world of two:
    assert "This allows training with 5 samples across 2 GPUs" in log


def test_a_one_image_bucket_without_oversubscription_is_refused_before_launch_naming_it(tmp_path, settings):
    """The same dataset on two planned GPUs (a dry run on this CPU machine, GPU_COUNT=2): refused in the preflight,
    with every fix."""
    from core.errors import PreflightError

    dataset = write_demo_dataset(tmp_path / "dataset", count=4)
    Image.new("RGB", (384, 128), (20, 160, 40)).save(dataset / "wide.png")
    job = tiny_job(Path("stabilityai/stable-diffusion-xl-base-1.0"), dataset, dry_run=True,
                   config={"model_name": "stabilityai/stable-diffusion-xl-base-1.0"})
    planned = dataclasses.replace(settings, device="auto", gpu_count=2, gpu_memory_gb=24.0)
    with pytest.raises(PreflightError) as caught:
        run_job(parse_job(job), tmp_path / "job", settings=planned)
    message = caught.value.message
    assert "aspect bucket 3 (1 image)" in message and "2 processes" in message
    assert "zero usable batches" in message
    for fix in ("dataloader.repeats to 1", "config.allow_dataset_oversubscription true", "config.num_processes 1"):
        assert fix in message
    assert caught.value.report["processes"] == 2
