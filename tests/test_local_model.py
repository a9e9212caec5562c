"""Local model folders a job may load (core/models/local.py), sent as an API caller sends them: through the worker's
handler, whose jobs load a local model only from the model roots, and through run_job as the UI and the command line
call it. Each refusal comes at validate, names the field, and leaves no trained or downloaded file behind."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from core.errors import SpecError
from core.pipeline import run_job
from core.settings import Settings
from core.spec import parse_job


def model_folder(path: Path) -> Path:
    """A folder that holds a model, as far as a job's checks go (SDXL's pipeline index)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    return path


@pytest.fixture
def worker(tmp_path, monkeypatch):
    """The worker's handler with DATA_DIR under tmp_path and one MODELS_ROOT folder."""
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MODELS_ROOT", str(tmp_path / "models-root"))
    from worker.handler import handler

    def answer(config: dict | None = None, **job: object) -> dict:
        base = {"dataset": {"path": "demo"}, "dry_run": True,
                "config": {"model_family": "sdxl", "resolution": 128, **(config or {})}}
        return asyncio.run(handler({"id": "local-model", "input": {**base, **job}}))
    return answer


def test_the_worker_loads_a_local_model_only_from_a_model_root(tmp_path, worker):
    other_job = model_folder(tmp_path / "data" / "jobs" / "someone-else" / "output" / "pipeline")
    outside = model_folder(tmp_path / "elsewhere" / "sdxl")
    refused = {
        str(other_job): "config.model_name",
        str(outside): "config.model_name",
        f"{tmp_path}/data/models/../jobs/someone-else/output/pipeline": "config.model_name",
        "https://example.com/sdxl.safetensors": "config.model_name",
        "models/sdxl/../../etc": "config.model_name",
    }
    for value, field in refused.items():
        output = worker({"model_name": value})
        assert output["error"]["field"] == field and output["error"]["stage"] == "validate", (value, output)
    vae = worker({"model_name": "stabilityai/stable-diffusion-xl-base-1.0", "vae": str(outside)})
    assert vae["error"]["field"] == "config.pretrained_vae_model_name_or_path"
    assert "MODELS_ROOT" in worker({"model_name": str(outside)})["error"]["message"]

    for allowed in (model_folder(tmp_path / "data" / "models" / "mine"),
                    model_folder(tmp_path / "models-root" / "team" / "sdxl")):
        output = worker({"model_name": str(allowed)})
        assert output.get("status") == "dry_run", output
    assert not any((tmp_path / "data" / "jobs").rglob("config.json"))  # nothing was configured for a refused job


def test_a_caption_model_folder_is_checked_before_anything_reads_it(tmp_path, worker):
    started = time.monotonic()
    for folder in ("/usr", "/"):
        output = worker({"model_name": "stabilityai/stable-diffusion-xl-base-1.0"}, captioning={"model": folder})
        assert output["error"]["field"] == "captioning.model" and output["error"]["stage"] == "validate", output
        assert "no model folder" in output["error"]["message"]
    assert time.monotonic() - started < 10  # refused on sight, not after walking /usr
    captioner = tmp_path / "elsewhere" / "captioner"
    captioner.mkdir(parents=True)
    (captioner / "config.json").write_text("{}")
    outside = worker({"model_name": "stabilityai/stable-diffusion-xl-base-1.0"}, captioning={"model": str(captioner)})
    assert outside["error"]["field"] == "captioning.model" and "outside" in outside["error"]["message"]


def test_a_conditioning_generator_loads_its_model_from_the_hub_only(worker):
    entry = {"id": "edit", "instance_data_dir": "edits", "conditioning": [
        {"type": "segmentation", "model_name": "/data/jobs/other/output"}]}
    output = worker({"model_name": "stabilityai/stable-diffusion-xl-base-1.0"}, dataloader=[entry])
    assert output["error"]["field"] == "dataloader.0.conditioning.0.model_name", output
    assert "Hub" in output["error"]["message"]


def test_the_ui_and_command_line_load_any_model_folder_but_never_a_url_or_a_non_model(tmp_path):
    settings = Settings.from_env({"DATA_DIR": str(tmp_path / "data"), "TRAINER_DEVICE": "cpu"})
    dataset = tmp_path / "set"
    dataset.mkdir()

    def check(model: str) -> None:
        job = {"dataset": {"path": str(dataset)}, "dry_run": True, "config": {"model_family": "sdxl",
                                                                            "model_name": model}}
        run_job(parse_job(job), tmp_path / "job", settings=settings, allow_local_paths=True)

    for value, words in (("https://example.com/model", "URL"), (str(tmp_path), "no model folder")):
        with pytest.raises(SpecError, match=words) as caught:
            check(value)
        assert caught.value.field == "config.model_name" and caught.value.stage == "validate"
    with pytest.raises(Exception) as later:  # a model folder anywhere passes validate; the empty dataset fails next
        check(str(model_folder(tmp_path / "anywhere" / "sdxl")))
    assert getattr(later.value, "stage", None) != "validate"
