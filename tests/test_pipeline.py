"""run_job end to end: a real SimpleTuner training of the tiny model, and the dry run."""

from __future__ import annotations

import json
import math

import pytest
from safetensors import safe_open

from core.errors import JobCancelled, ModelDownloadError, PreflightError
from core.events import CheckpointSaved, StageEvent, TrainingProgress, ValidationImage
from core.pipeline import check_job, run_job, stage
from core.spec.job import parse_job
from tests.conftest import tiny_job


@pytest.mark.training
def test_a_job_trains_with_a_progress_event_for_every_step(trained_job):
    result, events = trained_job
    steps = [e for e in events if isinstance(e, TrainingProgress)]
    assert [e.step for e in steps] == list(range(1, 11))
    assert all(e.total_steps == 10 and e.loss is not None and math.isfinite(e.loss) for e in steps)
    checkpoints = [e for e in events if isinstance(e, CheckpointSaved)]
    assert [c.step for c in checkpoints] == [5, 10]
    stages = [(e.stage, e.status) for e in events if isinstance(e, StageEvent)]
    assert stages == [(name, status) for name in ("validate", "dataset", "preflight", "configure", "model", "train",
                                                  "comfyui") for status in ("started", "completed")]
    assert result.status == "succeeded"
    assert result.metrics.steps == 10 and result.metrics.loss == steps[-1].loss
    assert result.metrics.elapsed_s > 0


@pytest.mark.training
def test_the_trained_lora_holds_lora_tensors(trained_job):
    result, _ = trained_job
    assert result.lora_path.name == "pytorch_lora_weights.safetensors"
    with safe_open(str(result.lora_path), framework="numpy") as weights:
        keys = list(weights.keys())
        assert keys and all("lora" in key for key in keys)
        assert any(key.startswith("unet.") for key in keys)
        assert weights.get_tensor(keys[0]).size > 0


@pytest.mark.training
def test_validation_images_are_reported_as_they_appear(trained_job):
    result, events = trained_job
    images = [e for e in events if isinstance(e, ValidationImage)]
    prompted = [e for e in images if "_unconditional_" not in e.path]
    assert prompted and all(e.prompt == "sks a red circle" for e in prompted)
    assert all(e.prompt == "" for e in images if "_unconditional_" in e.path)
    assert all((result.output_dir / "validation_images").joinpath(e.path.rsplit("/", 1)[-1]).exists() for e in images)


@pytest.mark.training
def test_the_output_has_the_seed_keys(trained_job):
    result, _ = trained_job
    output = result.to_output()
    assert output["model_checkpoint"].endswith("pytorch_lora_weights.safetensors")
    assert output["training_logs"].endswith("training.log")
    assert set(output["metrics"]) >= {"loss", "steps", "elapsed_time", "elapsed_s"}
    assert output["preflight"]["images_usable"] == 6
    assert {"path": "pytorch_lora_weights.safetensors", "size": result.lora_path.stat().st_size} in output["files"]


def test_a_dry_run_stages_and_resolves_without_training(tmp_path, demo_dataset, tiny_model, settings):
    spec = parse_job(tiny_job(tiny_model, demo_dataset, dry_run=True))
    events = []
    result = run_job(spec, tmp_path / "job", events.append, settings=settings)
    assert result.status == "dry_run"
    assert result.trainer_files["config.json"]["--max_train_steps"] == 10
    assert result.preflight["images_usable"] == 6
    assert not any(isinstance(e, TrainingProgress) for e in events)
    assert not (tmp_path / "job" / "output" / "pytorch_lora_weights.safetensors").exists()


def test_check_job_is_the_dry_run_whatever_the_job_says(tmp_path, demo_dataset, tiny_model, settings):
    events = []
    result = check_job(parse_job(tiny_job(tiny_model, demo_dataset)), tmp_path / "job", events.append,
                       settings=settings)
    assert result.status == "dry_run" and result.preflight["images_usable"] == 6
    assert result.trainer_files["config.json"]["--pretrained_model_name_or_path"] == str(tiny_model)
    assert [e.stage for e in events if isinstance(e, StageEvent) and e.status == "completed"] == [
        "validate", "dataset", "preflight", "configure"]


def test_a_dataset_that_would_not_train_fails_in_preflight_with_its_whole_report(tmp_path, demo_dataset, tiny_model,
                                                                              settings):
    job = tiny_job(tiny_model, demo_dataset, dataloader={"minimum_image_size": 4096})
    with pytest.raises(PreflightError) as caught:
        check_job(parse_job(job), tmp_path / "job", settings=settings)
    payload = caught.value.to_payload()
    assert payload["stage"] == "preflight" and payload["field"] == "dataset" and payload["code"] == "dataset_error"
    assert payload["preflight"]["errors"] and payload["preflight"]["images_found"] == 6
    assert payload["message"] == payload["preflight"]["errors"][0]


def test_an_error_names_the_stage_that_was_running():
    events = []
    with pytest.raises(ModelDownloadError) as caught, stage("train", events.append):
        raise ModelDownloadError("a model error met while training")
    assert caught.value.stage == "train"
    assert [(e.stage, e.status) for e in events] == [("train", "started"), ("train", "failed")]


def test_everything_a_job_writes_stays_in_its_directory(tmp_path, demo_dataset, tiny_model, settings):
    before = sorted(p.name for p in tmp_path.iterdir())
    run_job(parse_job(tiny_job(tiny_model, demo_dataset, dry_run=True)), tmp_path / "job", settings=settings)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "job"])


@pytest.mark.training
def test_a_trained_lora_is_published_private_with_a_card_and_no_token_anywhere(trained_job, tmp_path, settings):
    from huggingface_hub import HfApi, ModelCard, hf_hub_download

    from core.pipeline import publish
    from tests.support.hub_server import running_hub_server

    result, _ = trained_job
    token = "hf_plantedtoken_e2e_0123456789"
    spec = parse_job({**tiny_job(result.output_dir, result.output_dir),
                      "hub": {"repo_id": "tester/tiny-lora", "token": token}})
    events = []
    with running_hub_server(tmp_path, token=token) as hub:
        published = publish(spec, result, settings=settings, on_event=events.append)
        api = HfApi(endpoint=hub.endpoint, token=token)
        assert api.repo_info("tester/tiny-lora").private is True
        downloaded = hf_hub_download("tester/tiny-lora", "pytorch_lora_weights.safetensors", token=token,
                                     endpoint=hub.endpoint, cache_dir=tmp_path / "hf-cache")
        assert open(downloaded, "rb").read() == result.lora_path.read_bytes()
        card = ModelCard.load(hf_hub_download("tester/tiny-lora", "README.md", token=token, endpoint=hub.endpoint,
                                              cache_dir=tmp_path / "hf-cache"))
        files = set(api.list_repo_files("tester/tiny-lora"))
        request_bodies = [r.body for r in hub.requests]
        stored = list(hub.repos["tester/tiny-lora"].files.values())
    assert card.data.instance_prompt == "sks"
    assert card.data.widget and card.data.widget[0]["text"] == "sks a red circle"
    assert "lora" in card.data.tags and "sdxl" in card.data.tags
    assert {"training.log", "config/config.json", "validation_images/step_10_validation_0_128x128.png"} <= files
    assert published.hub["private"] is True and published.hub["url"].endswith("tester/tiny-lora")
    output = json.dumps(published.to_output())
    assert published.to_output()["model_checkpoint"].startswith(hub.endpoint)
    for haystack in (output, json.dumps([e.to_dict() for e in events]), card.content):
        assert token not in haystack
    assert not [body for body in request_bodies + stored if token.encode() in body]


def test_a_cancel_before_training_stops_the_job_where_it_is(tmp_path, demo_dataset, tiny_model, settings):
    import threading

    cancel = threading.Event()  # a plain Event still works: run_job wraps it in the job's Cancel
    cancel.set()
    events = []
    with pytest.raises(JobCancelled) as caught:
        run_job(parse_job(tiny_job(tiny_model, demo_dataset)), tmp_path / "job", events.append, settings=settings,
                cancel=cancel)
    # The first stage (validate: the destinations, the GPU plan) already stops: nothing is downloaded.
    assert caught.value.code == "cancelled" and caught.value.stage == "validate"
    assert "validate" in caught.value.message
    assert [(e.stage, e.status) for e in events if isinstance(e, StageEvent)] == [
        ("validate", "started"), ("validate", "failed")]
    assert not (tmp_path / "job" / "dataset").exists() or not any((tmp_path / "job" / "dataset").iterdir())
    assert not (tmp_path / "job" / "trainer" / "config" / "config.json").exists()
