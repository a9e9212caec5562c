"""Sample prompts per checkpoint, and publishing the checkpoint you pick (core/training/samples.py, through the
pipeline).

The training test really trains the tiny SDXL model with two sample prompts and publishes checkpoint 2 of 4 to the
project's local Hub server: the Hub then holds that checkpoint's bytes, and its card shows that step's samples.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from huggingface_hub import hf_hub_download
from PIL import Image

from core.errors import PublishError, SpecError
from core.jobdir import JobDir
from core.pipeline import publish, run_job
from core.result import JobResult, Metrics
from core.spec.job import parse_job
from core.training.config import build_trainer_files
from core.training.samples import pick_checkpoint, published_view, smoothed
from tests.conftest import tiny_job
from tests.support.hub_server import running_hub_server

TOKEN = "hf_SamplesToken0123456789abcdefXYZ"
PROMPTS = ["a [trigger] circle", "[trigger] on a plain background"]


def job_with(**overrides) -> dict:
    return tiny_job(Path("/models/tiny"), Path("/data/demo"), **overrides)


def errors_of(job: dict) -> dict[str, str]:
    with pytest.raises(SpecError) as caught:
        parse_job(job)
    return {error["field"]: error["message"] for error in caught.value.errors}


def test_bad_samples_and_checkpoint_values_name_their_field():
    assert "samples.prompts.1" in errors_of(job_with(samples={"prompts": ["a dog", ""]}))
    assert "samples.every" in errors_of(job_with(samples={"prompts": ["a dog"], "every": 0}))
    unknown = errors_of(job_with(samples={"prompts": ["a dog"], "evry": 3}))
    assert "did you mean 'every'" in unknown["samples.evry"]
    no_trigger = errors_of(job_with(trigger_word=None, samples={"prompts": ["a dog", "[trigger] dog"]}))
    assert "no trigger_word" in no_trigger["samples.prompts.1"]
    bad_pick = errors_of(job_with(hub={"repo_id": "tester/x", "checkpoint": "bset"}))
    assert "last" in bad_pick["hub.checkpoint"] and "best" in bad_pick["hub.checkpoint"]


def test_samples_become_simpletuners_prompt_library_and_validation_settings(tmp_path: Path):
    spec = parse_job(job_with(config={"max_train_steps": 4, "checkpointing_steps": 2},
                              samples={"prompts": PROMPTS, "steps": 3, "guidance": 2.5, "seed": 7,
                                       "negative_prompt": "blurry"}))
    job = JobDir(tmp_path / "job").create()
    files = build_trainer_files(spec, images_dir=tmp_path, job=job, device="cpu")
    config = files.config
    files.write(job, webhook_url="http://127.0.0.1:9/webhook")
    library = json.loads(Path(config["--user_prompt_library"]).read_text())
    assert library == {"sample_0": "a sks circle", "sample_1": "sks on a plain background"}
    assert Path(config["--user_prompt_library"]).parent == job.config
    assert config["--validation_step_interval"] == 2  # the checkpoint interval: samples at each checkpoint
    assert (config["--validation_num_inference_steps"], config["--validation_guidance"],
            config["--validation_seed"], config["--validation_negative_prompt"]) == (3, 2.5, 7, "blurry")
    assert "--validation_disable" not in config and config["--validation_disable_unconditional"] is True


def test_sample_defaults_come_from_the_family_recipe(tmp_path: Path):
    spec = parse_job(job_with(samples={"prompts": ["a dog"], "every": 3}))
    config = build_trainer_files(spec, images_dir=tmp_path, job=JobDir(tmp_path / "j").create(), device="cpu").config
    assert config["--validation_step_interval"] == 3
    assert config["--validation_num_inference_steps"] > 0 and config["--validation_guidance"] > 0
    assert config["--validation_resolution"] == "128x128"  # a bare number under 128 would be megapixels
    small = parse_job(job_with(samples={"prompts": ["a dog"], "resolution": 64}))
    config = build_trainer_files(small, images_dir=tmp_path, job=JobDir(tmp_path / "k").create(), device="cpu").config
    assert config["--validation_resolution"] == "64x64"
    assert "samples.resolution" in errors_of(job_with(samples={"prompts": ["a dog"], "resolution": 32}))


def test_best_is_the_checkpoint_of_lowest_smoothed_loss_and_says_so(tmp_path: Path):
    for step in (2, 4, 6):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "pytorch_lora_weights.safetensors").write_bytes(b"x")
    # Step 4's raw loss is the lowest, but it is one outlier: smoothed, step 6 is lower.
    losses = [(1, 1.0), (2, 0.9), (3, 0.8), (4, 0.1), (5, 0.5), (6, 0.45)]
    curve = smoothed(losses)
    assert min((curve[s], s) for s in (2, 4, 6))[1] == 6
    pick = pick_checkpoint("best", output_dir=tmp_path, losses=losses)
    assert pick.step == 6 and "lowest smoothed loss" in pick.reason
    assert pick_checkpoint(4, output_dir=tmp_path, losses=losses).folder == tmp_path / "checkpoint-4"
    with pytest.raises(PublishError) as missing:
        pick_checkpoint(5, output_dir=tmp_path, losses=losses)
    assert missing.value.field == "hub.checkpoint" and "2, 4, 6" in missing.value.message


def test_publishing_a_checkpoint_shows_the_validation_images_of_its_step(tmp_path: Path):
    output = tmp_path / "output"
    for step in (5, 10):
        (output / f"checkpoint-{step}").mkdir(parents=True)
        (output / f"checkpoint-{step}" / "pytorch_lora_weights.safetensors").write_bytes(bytes([step]))
    (output / "validation_images").mkdir()
    validation = [(f"validation_images/step_{step}_val_0_128x128.png", "sks a red circle") for step in (5, 10)]
    for path, _ in validation:
        (output / path).write_bytes(b"png")
    result = JobResult(status="succeeded", job_dir=tmp_path, output_dir=output, validation=validation,
                       metrics=Metrics(steps=10, losses=[1.0] * 10))
    spec = parse_job({**job_with(), "hub": {"repo_id": "tester/r", "checkpoint": 5}})
    picked, files = published_view(spec, result, root=output)
    assert picked.metrics.steps == 5 and picked.validation == [validation[0]]  # not step 10's, a later LoRA's
    assert files == {validation[0][0]: output / validation[0][0]}  # it goes up beside the checkpoint's LoRA
    last, _ = published_view(spec.model_copy(update={"hub": None}), result, root=output)
    assert last.validation == [validation[1]]


@pytest.mark.training
def test_samples_per_checkpoint_and_publishing_checkpoint_n(tmp_path: Path, tiny_model: Path, demo_dataset: Path,
                                                            settings):
    # 5 steps, samples every 2: SimpleTuner renders steps 2 and 4; the run renders step 5's itself, at 64 px.
    job = tiny_job(tiny_model, demo_dataset, config={"max_train_steps": 5, "checkpointing_steps": 2,
                                                     "checkpoints_total_limit": 5},
                   samples={"prompts": PROMPTS, "steps": 2, "resolution": 64})
    spec = parse_job(job)
    result = run_job(spec, tmp_path / "job", settings=settings)

    output = result.to_output()
    by_step = {entry["step"]: entry["images"] for entry in output["samples"]}
    assert sorted(by_step) == [2, 4, 5]
    for images in by_step.values():
        assert [image["prompt"] for image in images] == ["a sks circle", "sks on a plain background"]
        for image in images:
            with Image.open(result.output_dir / image["file"]) as png:
                assert png.width == 64  # SimpleTuner's own images carry a label strip below
    assert not [warning for warning in result.warnings if "samples" in warning]

    with running_hub_server(tmp_path, token=TOKEN) as hub:
        picked = spec.model_copy(update={"hub": parse_job({**job, "hub": {"repo_id": "tester/samples",
                                                                        "checkpoint": 2, "token": TOKEN}}).hub})
        published = publish(picked, result, settings=settings)
        weights = hf_hub_download("tester/samples", "pytorch_lora_weights.safetensors", token=TOKEN,
                                  local_dir=tmp_path / "down", endpoint=hub.endpoint)
        card = Path(hf_hub_download("tester/samples", "README.md", token=TOKEN, local_dir=tmp_path / "down",
                                    endpoint=hub.endpoint)).read_text()
    checkpoint_2 = result.output_dir / "checkpoint-2" / "pytorch_lora_weights.safetensors"
    assert Path(weights).read_bytes() == checkpoint_2.read_bytes()
    assert Path(weights).read_bytes() != (result.output_dir / "pytorch_lora_weights.safetensors").read_bytes()
    assert any("published checkpoint-2" in warning for warning in published.warnings)
    widget = yaml.safe_load(card.split("---")[1])["widget"]
    assert widget == [{"text": "a sks circle", "output": {"url": "samples/step-2/0.png"}},
                      {"text": "sks on a plain background", "output": {"url": "samples/step-2/1.png"}}]
    shown = {entry["step"]: entry["images"] for entry in published.to_output()["samples"]}
    assert all(image["url"].startswith(hub.endpoint) for image in shown[2] + shown[4])


def cuda_files(tmp_path: Path, config: dict, *, gb: float):
    from core.adapters import GpuFacts

    job = {"dataset": {"path": "/data"}, "trigger_word": "sks", "samples": {"prompts": ["a [trigger] dog"]},
           "config": config}
    return build_trainer_files(parse_job(job), images_dir=tmp_path, job=JobDir(tmp_path / "j").create(),
                               device="cuda", gpu=GpuFacts(count=1, memory_gb=gb, source="GPU_MEMORY_GB"))


def test_video_samples_during_training_are_short_clips_with_a_tiled_vae(tmp_path: Path):
    files = cuda_files(tmp_path, {"model_family": "wan", "model_name": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
                                  "model_flavour": "t2v-480p-1.3b-2.1"}, gb=24)
    config = files.config
    assert config["--validation_num_video_frames"] == 17  # not the examples' 81
    assert config["--validation_num_inference_steps"] <= 20  # not the examples' 40
    assert config["--vae_enable_tiling"] is True and config["--vae_enable_slicing"] is True
    assert "--validation_disable" not in config and files.warnings == []
    image = cuda_files(tmp_path, {"model_name": "black-forest-labs/FLUX.1-dev"}, gb=24).config
    assert "--validation_num_video_frames" not in image and "--vae_enable_tiling" not in image


def test_samples_the_gpu_has_no_room_for_are_turned_off_with_a_warning_and_a_larger_gpu_keeps_them(tmp_path: Path):
    job = {"model_name": "black-forest-labs/FLUX.1-dev", "base_model_precision": "no_change", "resolution": 1024}
    tight = cuda_files(tmp_path, job, gb=32)  # a bf16 FLUX LoRA at 1024 px: training just fits, with its headroom
    assert tight.config["--validation_disable"] is True
    assert not any(key.startswith("--validation_") and key != "--validation_disable" for key in tight.config)
    [warning] = tight.warnings
    assert "samples during training are off" in warning and "32 GB" in warning and "end-of-run" in warning
    roomy = cuda_files(tmp_path, job, gb=40)
    assert "--validation_disable" not in roomy.config and roomy.warnings == []
    assert roomy.config["--validation_step_interval"] == 250
