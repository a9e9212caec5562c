"""The input image of an image-to-video job's samples (core/training/sample_image.py): the first frame of a training
clip by default, the job's own `samples.input_image` otherwise, given to SimpleTuner's validation as
`--validation_input` with the job's prompts, and read back by the end-of-run samples."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from core.dataset import InputImageError, clip_first_frame
from core.errors import SpecError
from core.jobdir import JobDir
from core.pipeline import check_job
from core.result import JobResult
from core.settings import Settings
from core.spec.job import parse_job
from core.training import SAMPLE_IMAGE_FILE, sample_inputs
from tests.support.clips import write_clip

I2V = {"model_family": "wan", "model_flavour": "i2v-14b-2.1", "model_name": "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"}
T2V = {"model_family": "wan", "model_flavour": "t2v-480p-1.3b-2.1", "model_name": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"}
PROMPTS = ["sks a bar moving", "[trigger] a bar at rest"]


def clips(folder: Path) -> Path:
    write_clip(folder / "b-second.mp4", frames=9, caption="a white bar, second")
    write_clip(folder / "a-first.mp4", frames=9, caption="a white bar, first")
    return folder


def job(dataset: Path, *, config: dict, samples: dict | None = None) -> dict:
    return {"dataset": {"path": str(dataset)}, "config": {**config, "resolution": 64, "max_train_steps": 2},
            "dataloader": {"minimum_image_size": 32, "video": {"num_frames": 9}}, "trigger_word": "sks",
            "samples": {"prompts": PROMPTS, **(samples or {})}}


def same_pixels(one: Path, other: Path) -> bool:
    with Image.open(one) as a, Image.open(other) as b:
        return a.size == b.size and ImageChops.difference(a.convert("RGB"), b.convert("RGB")).getbbox() is None


def test_an_i2v_jobs_samples_start_from_the_first_frame_of_its_first_clip(tmp_path: Path, settings: Settings):
    dataset = clips(tmp_path / "data")
    result = check_job(parse_job(job(dataset, config=I2V)), tmp_path / "work", settings=settings)
    config = result.trainer_files["config.json"]
    entries = json.loads(config["--validation_input"])
    image = JobDir(tmp_path / "work").config / SAMPLE_IMAGE_FILE
    assert entries == [{"path": str(image), "prompt": "sks a bar moving", "shortname": "sample_0"},
                       {"path": str(image), "prompt": "sks a bar at rest", "shortname": "sample_1"}]
    assert same_pixels(image, clip_first_frame(dataset / "a-first.mp4", tmp_path / "expected.png"))
    assert sample_inputs(config) == {"sample_0": image, "sample_1": image}


def test_an_i2v_job_may_give_its_samples_image(tmp_path: Path, settings: Settings):
    buffer = io.BytesIO()
    Image.new("RGB", (80, 48), (10, 200, 90)).save(buffer, format="JPEG")
    given = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
    result = check_job(parse_job(job(clips(tmp_path / "data"), config=I2V, samples={"input_image": given})),
                       tmp_path / "work", settings=settings)
    [path] = set(sample_inputs(result.trainer_files["config.json"]).values())
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (80, 48)
        assert all(abs(a - b) < 8 for a, b in zip(image.getpixel((40, 24)), (10, 200, 90), strict=True))


def test_a_bad_samples_image_is_refused_naming_the_field(tmp_path: Path, settings: Settings):
    with pytest.raises(InputImageError) as caught:
        check_job(parse_job(job(clips(tmp_path / "data"), config=I2V, samples={"input_image": "bm90IGFuIGltYWdl"})),
                  tmp_path / "work", settings=settings)
    assert caught.value.field == "samples.input_image" and "not an image" in caught.value.message


def test_a_text_to_video_job_refuses_a_samples_image_and_renders_from_text(tmp_path: Path, settings: Settings):
    with pytest.raises(SpecError) as refused:
        parse_job(job(tmp_path, config=T2V, samples={"input_image": "aGVsbG8="}))
    assert refused.value.field == "samples.input_image"
    assert "wan flavour 't2v-480p-1.3b-2.1'" in refused.value.message and "text only" in refused.value.message
    result = check_job(parse_job(job(clips(tmp_path / "data"), config=T2V)), tmp_path / "work", settings=settings)
    assert "--validation_input" not in result.trainer_files["config.json"]
    assert not (JobDir(tmp_path / "work").config / SAMPLE_IMAGE_FILE).exists()


@pytest.mark.trainer_env
def test_the_end_of_run_samples_of_an_i2v_model_start_from_the_samples_image(tmp_path: Path, tiny_family_model,
                                                                             settings: Settings):
    """The final step's samples (core/generation/end_samples.py) render with the image the training's samples had;
    without one an image-to-video pipeline cannot render them."""
    from core.generation.end_samples import render_end_samples

    i2v = tiny_family_model("wan", "i2v")
    image = tmp_path / "config" / SAMPLE_IMAGE_FILE
    image.parent.mkdir()
    Image.new("RGB", (64, 64), (200, 40, 40)).save(image)
    spec = parse_job(job(tmp_path, config={"model_family": "wan", "model_name": str(i2v)},
                         samples={"steps": 2, "resolution": 64}))
    config = {"--validation_resolution": "64x64", "--validation_num_video_frames": 5,
              "--validation_num_inference_steps": 2,
              "--validation_input": json.dumps([{"path": str(image), "prompt": "sks a bar", "shortname": "sample_0"},
                                                {"path": str(image), "prompt": "sks", "shortname": "sample_1"}])}
    result = JobResult(status="succeeded", job_dir=tmp_path, output_dir=tmp_path / "out",
                       trainer_files={"config.json": config})
    written = render_end_samples(spec, result, step=2, settings=settings)
    assert [path.name for path in written] == ["step_2_sample_0_0_64x64.mp4", "step_2_sample_1_0_64x64.mp4"]
    assert all(path.stat().st_size > 0 for path in written)
