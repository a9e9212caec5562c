"""The playground's warm generation process (core/generation/playground.py + tools/generate_images.py in the trainer
env), and
the worker's `mode: "generate"` job against the project's local Hub server. The tiny random model renders noise,
which is all these tests need: real images, of the asked size, through the real diffusers pipeline."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from pathlib import Path

import pytest
from PIL import Image

from app.state import RunRegistry
from core.errors import SpecError
from core.generation.playground import GenerateRequest, Playground, parse_generate_job
from core.pipeline import publish
from core.spec.job import parse_job
from tests.conftest import tiny_job
from tests.support.hub_server import running_hub_server

TOKEN = "hf_PlaygroundToken0123456789abcdefXY"
REQUEST = GenerateRequest(prompt="sks a red circle", steps=2, width=128, height=128, seed=3)


def wait_until(predicate, *, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_a_generate_job_names_its_bad_fields():
    with pytest.raises(SpecError) as caught:
        parse_generate_job({"mode": "generate", "model": "a/b", "prompt": "", "steps": 0, "widht": 64})
    fields = {error["field"] for error in caught.value.errors}
    assert {"prompt", "steps", "widht"} <= fields


@pytest.mark.trainer_env
def test_the_warm_process_renders_twice_the_second_time_faster_then_stops_when_idle(tmp_path: Path,
                                                                                   tiny_model: Path, settings):
    playground = Playground(settings=settings)
    try:
        first = playground.generate(REQUEST, model=str(tiny_model), lora=None, out_dir=tmp_path, name="first")
        pid = playground.pid
        second = playground.generate(REQUEST, model=str(tiny_model), lora=None, out_dir=tmp_path, name="second")
        assert playground.pid == pid  # the same process: nothing loaded again
        assert (first.warm["pipeline"], second.warm["pipeline"]) == (False, True)
        assert second.seconds["total"] < first.seconds["total"]
        for rendered in (first, second):
            with Image.open(rendered.images[0]) as image:
                assert image.size == (128, 128)
        playground.idle_s = 0.5
        assert wait_until(lambda: not playground.running, timeout_s=20)
    finally:
        playground.stop()


@pytest.mark.trainer_env
def test_a_training_start_stops_the_playground(tmp_path: Path, tiny_model: Path, settings):
    registry = RunRegistry(settings=settings)
    registry.playground.generate(REQUEST, model=str(tiny_model), lora=None, out_dir=tmp_path, name="x")
    assert registry.playground.running
    run = registry.start_training(parse_job(tiny_job(tiny_model, tmp_path / "no-such-dataset")))
    assert not registry.playground.running
    run.thread.join(60)


@pytest.mark.training
def test_mode_generate_renders_a_published_lora_checkpoint(tmp_path: Path, trained_copy, tiny_model: Path,
                                                            settings, monkeypatch):
    from worker.handler import handler

    result = trained_copy
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    with running_hub_server(tmp_path, token=TOKEN):
        spec = parse_job({**tiny_job(tiny_model, tmp_path), "hub": {"repo_id": "tester/gen", "token": TOKEN,
                                                                   "checkpoint": 5}})
        publish(spec, result, settings=settings)
        job = {"mode": "generate", "lora": "tester/gen", "token": TOKEN, "model": str(tiny_model),
               "prompt": "sks a red circle", "steps": 2, "width": 128, "height": 128, "count": 2, "strength": 0.8}
        output = asyncio.run(handler({"id": "gen-1", "input": job}))
    assert output.get("status") == "succeeded", output
    assert len(output["images"]) == 2 and output["strength"] == 0.8
    for image in output["images"]:
        with Image.open(io.BytesIO(base64.b64decode(image["base64"]))) as png:
            assert png.format == "PNG" and png.size == (128, 128)
    assert TOKEN not in str(output)
