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
from core.errors import JobError, SpecError
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


SLOW = GenerateRequest(prompt="sks a long render", steps=150, width=1024, height=1024, count=8, seed=1)
"""Minutes of work for the tiny model on a CPU: only a cancel ends it early."""


@pytest.mark.trainer_env
def test_a_cancelled_render_frees_the_process_within_seconds_and_the_next_request_is_served(tmp_path: Path,
                                                                                          tiny_model: Path, settings):
    import threading

    from core.cancel import Cancel
    from core.errors import JobCancelled

    playground = Playground(settings=settings)
    try:
        playground.generate(REQUEST, model=str(tiny_model), lora=None, out_dir=tmp_path, name="warm")
        cancel, asked = Cancel(), []
        threading.Timer(1.0, lambda: (asked.append(time.monotonic()), cancel.set())).start()
        with pytest.raises(JobCancelled) as caught:
            playground.generate(SLOW, model=str(tiny_model), lora=None, out_dir=tmp_path, name="slow", cancel=cancel)
        assert time.monotonic() - asked[0] < 5
        assert caught.value.stage == "generate" and not playground.running  # its memory went back
        started = time.monotonic()
        served = playground.generate(REQUEST, model=str(tiny_model), lora=None, out_dir=tmp_path, name="next")
        assert served.images and time.monotonic() - started < 120
        with pytest.raises(JobCancelled):  # already stopped: nothing starts
            playground.generate(REQUEST, model=str(tiny_model), lora=None, out_dir=tmp_path, name="no", cancel=cancel)
    finally:
        playground.stop()


@pytest.mark.trainer_env
def test_a_generate_job_obeys_its_time_limit_and_runpods_cancel(tmp_path: Path, tiny_model: Path, monkeypatch):
    from worker.handler import handler

    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    base = {"mode": "generate", "model": str(tiny_model), "prompt": "sks", "width": 128, "height": 128, "steps": 2}
    slow = {**base, "steps": 150, "width": 1024, "height": 1024, "count": 8}

    started = time.monotonic()
    limited = asyncio.run(handler({"id": "gen-limit", "input": {**slow, "timeout_s": 3}}))
    assert limited["error"]["code"] == "timeout" and limited["error"]["stage"] == "generate", limited
    assert time.monotonic() - started < 60  # the first request also starts the process

    async def cancelled_then_served() -> tuple[float, dict]:
        task = asyncio.ensure_future(handler({"id": "gen-cancel", "input": slow}))
        await asyncio.sleep(3)
        task.cancel()  # what RunPod's /cancel does to an async handler
        with pytest.raises(asyncio.CancelledError):
            await task
        started = time.monotonic()
        served = await handler({"id": "gen-next", "input": base})
        return time.monotonic() - started, served

    took, served = asyncio.run(cancelled_then_served())
    assert served.get("status") == "succeeded", served
    assert took < 60  # served at once: the cancelled render did not hold the process or its lock
    assert not (tmp_path / "data" / "jobs" / "gen-cancel").exists()


def mp4_frames(data: bytes) -> int:
    """The video track's sample (frame) count, from the MP4's own boxes: ftyp first, then moov/trak/mdia/minf/stbl/
    stsz. A file that is no MP4 fails here."""
    assert data[4:8] == b"ftyp", data[:16]

    def boxes(chunk: bytes):
        at = 0
        while at + 8 <= len(chunk):
            size, kind = int.from_bytes(chunk[at:at + 4], "big"), chunk[at + 4:at + 8]
            yield kind, chunk[at + 8:at + size]
            at += size

    def find(chunk: bytes, path: list[bytes]) -> list[bytes]:
        found = [body for kind, body in boxes(chunk) if kind == path[0]]
        return found if len(path) == 1 else [hit for body in found for hit in find(body, path[1:])]

    [stsz] = [box for trak in find(data, [b"moov", b"trak"]) if find(trak, [b"mdia", b"hdlr"])[0][8:12] == b"vide"
              for box in find(trak, [b"mdia", b"minf", b"stbl", b"stsz"])]
    return int.from_bytes(stsz[8:12], "big")  # version/flags, sample_size, then sample_count


@pytest.mark.trainer_env
def test_a_wan_model_renders_an_mp4_of_the_asked_frames_in_the_playground_and_a_generate_job(
        tmp_path: Path, tiny_family_model, settings, monkeypatch):
    from worker.handler import handler

    wan = tiny_family_model("wan")
    request = GenerateRequest(prompt="sks a red circle", steps=2, width=64, height=64, frames=9, seed=3)
    playground = Playground(settings=settings)
    try:
        rendered = playground.generate(request, model=str(wan), lora=None, out_dir=tmp_path, name="wan")
    finally:
        playground.stop()
    [video] = rendered.images
    assert video.suffix == ".mp4" and rendered.videos == [video]
    assert mp4_frames(video.read_bytes()) == 9
    assert rendered.plan is not None and rendered.plan.placement == "cpu"  # on the CPU nothing is planned

    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    job = {"mode": "generate", "model": str(wan), "prompt": "sks", "steps": 2, "width": 64, "height": 64, "frames": 5}
    output = asyncio.run(handler({"id": "gen-wan", "input": job}))
    assert output.get("status") == "succeeded", output
    [answer] = output["images"]
    assert answer["media"] == "video" and answer["file"].endswith(".mp4")
    assert mp4_frames(base64.b64decode(answer["base64"])) == 5
    assert output["placement"]["placement"] == "cpu"


def test_a_video_frame_count_must_be_4k_plus_1():
    with pytest.raises(SpecError) as caught:
        parse_generate_job({"mode": "generate", "model": "a/b", "prompt": "x", "frames": 16})
    assert caught.value.field == "frames" and "4k+1" in caught.value.message


def first_frame(video: bytes) -> list[int]:
    """The first frame of an .mp4, as greyscale pixels."""
    import av

    with av.open(io.BytesIO(video), format="mov") as container:
        frame = next(container.decode(video=0))
        return list(frame.to_image().convert("L").getdata())


def input_png(path: Path, colour: tuple[int, int, int]) -> Path:
    image = Image.new("RGB", (96, 64), (240, 240, 235))
    image.paste(colour, (20, 10, 70, 54))
    image.save(path)
    return path


@pytest.mark.trainer_env
def test_an_i2v_model_renders_its_clip_from_the_input_image_in_the_playground_and_a_generate_job(
        tmp_path: Path, tiny_family_model, settings, monkeypatch):
    """The tiny Wan I2V (random weights) cannot make the first frame look like the image, so what is proven is
    that the image reaches the pipeline: it says so, and another image gives another clip at the same seed."""
    from worker.handler import handler

    i2v = tiny_family_model("wan", "i2v")
    request = GenerateRequest(prompt="sks a red square", steps=2, width=64, height=64, frames=9, seed=3)
    red, blue = input_png(tmp_path / "red.png", (220, 30, 30)), input_png(tmp_path / "blue.png", (30, 60, 220))
    playground = Playground(settings=settings)
    try:
        with pytest.raises(JobError) as missing:  # an image-to-video pipeline cannot render without its image
            playground.generate(request, model=str(i2v), lora=None, out_dir=tmp_path, name="none")
        rendered = playground.generate(request, model=str(i2v), lora=None, out_dir=tmp_path, name="red",
                                       input_image=red)
        other = playground.generate(request, model=str(i2v), lora=None, out_dir=tmp_path, name="blue",
                                    input_image=blue)
    finally:
        playground.stop()
    assert missing.value.field == "input_image" and "image-to-video" in missing.value.message
    [video] = rendered.videos
    assert mp4_frames(video.read_bytes()) == 9
    assert rendered.input_image == {"width": 64, "height": 64, "pipeline": "WanImageToVideoPipeline",
                                    "conditions": "first_frame"}
    assert first_frame(video.read_bytes()) != first_frame(other.videos[0].read_bytes())

    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    job = {"mode": "generate", "model": str(i2v), "prompt": "sks", "steps": 2, "width": 96, "height": 64,
           "frames": 5, "input_image": "data:image/png;base64," + base64.b64encode(red.read_bytes()).decode()}
    output = asyncio.run(handler({"id": "gen-i2v", "input": job}))
    assert output.get("status") == "succeeded", output
    [answer] = output["images"]
    assert answer["media"] == "video" and mp4_frames(base64.b64decode(answer["base64"])) == 5
    assert output["input_image"] == {"width": 96, "height": 64, "pipeline": "WanImageToVideoPipeline",
                                     "conditions": "first_frame"}


@pytest.mark.trainer_env
def test_a_ti2v_model_renders_from_text_or_from_an_input_image(tmp_path: Path, tiny_family_model, settings):
    """Wan 2.2 TI2V's pipeline is a WanPipeline with expand_timesteps: an image switches it to its image-to-video
    sibling (the same components), no image renders from the text."""
    ti2v = tiny_family_model("wan", "ti2v")
    request = GenerateRequest(prompt="sks a red square", steps=2, width=64, height=64, frames=5, seed=3)
    playground = Playground(settings=settings)
    try:
        text = playground.generate(request, model=str(ti2v), lora=None, out_dir=tmp_path, name="text")
        image = playground.generate(request, model=str(ti2v), lora=None, out_dir=tmp_path, name="image",
                                    input_image=input_png(tmp_path / "red.png", (220, 30, 30)))
    finally:
        playground.stop()
    assert text.input_image is None and mp4_frames(text.videos[0].read_bytes()) == 5
    assert image.input_image is not None and image.input_image["pipeline"] == "WanImageToVideoPipeline"
    assert mp4_frames(image.videos[0].read_bytes()) == 5
    assert first_frame(text.videos[0].read_bytes()) != first_frame(image.videos[0].read_bytes())


@pytest.mark.trainer_env
def test_a_text_to_video_model_refuses_an_input_image_naming_the_field_and_the_family(tmp_path: Path,
                                                                                       tiny_family_model, settings):
    wan = tiny_family_model("wan")
    playground = Playground(settings=settings)
    with pytest.raises(JobError) as refused:
        playground.generate(GenerateRequest(prompt="x", steps=1, width=64, height=64, frames=5), model=str(wan),
                            lora=None, out_dir=tmp_path, name="t2v", input_image=input_png(tmp_path / "in.png",
                                                                                            (1, 2, 3)))
    assert not playground.running  # refused before the generation process started
    assert refused.value.field == "input_image"
    assert "wan family, WanPipeline" in refused.value.message and "text only" in refused.value.message


def test_a_generate_jobs_bad_input_image_is_refused_before_anything_loads(tmp_path: Path, monkeypatch):
    from worker.handler import handler

    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    job = {"mode": "generate", "model": "some/model", "prompt": "x", "input_image": "/etc/passwd"}
    output = asyncio.run(handler({"id": "gen-bad-image", "input": job}))
    assert output["error"]["field"] == "input_image", output
    assert output["error"]["code"] == "invalid_input"
