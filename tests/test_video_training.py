"""Training from video clips: the job's video settings (SimpleTuner's `video` block, the family's defaults and frame
rule), the video backend built for the staged clips, the preflight's clip report, and one real LoRA of the tiny Wan
trained from three synthetic clips through `python -m core run`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from core.errors import PreflightError, SpecError
from core.jobdir import JobDir
from core.pipeline import check_job
from core.settings import Settings
from core.spec import parse_job
from core.training.config import build_trainer_files
from core.training.video import video_settings
from tests.support.clips import write_clip, write_hostile_clips
from tests.support.comfyui_files import assert_generic_comfyui_file
from tests.test_demo_families import core_cli

WAN = {"model_family": "wan", "model_flavour": "t2v-480p-1.3b-2.1", "model_name": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"}


def wan_job(dataset: Path | str = "/unused", *, video: dict | None = None, config: dict | None = None,
            dataloader: list | None = None) -> dict:
    shorthand = {"minimum_image_size": 32, **({"video": video} if video is not None else {})}
    return {"dataset": {"path": str(dataset)}, "config": {**WAN, "resolution": 64, "max_train_steps": 2,
                                                          **(config or {})},
            "dataloader": dataloader if dataloader is not None else shorthand, "trigger_word": "sks"}


def three_clips(folder: Path) -> Path:
    for index, frames in enumerate((9, 13, 17)):
        write_clip(folder / f"clip{index}.mp4", frames=frames, caption=f"a white bar moving, take {index}")
    return folder


# -- the video settings -------------------------------------------------------------------------------------------

def test_defaults_come_from_the_family_recipe():
    settings = video_settings(parse_job(wan_job()))
    assert settings.block() == {"num_frames": 81, "min_frames": 81, "max_frames": 5000, "is_i2v": False}


def test_the_job_block_wins_and_unknown_keys_are_refused():
    settings = video_settings(parse_job(wan_job(video={"num_frames": 17, "min_frames": 33,
                                                       "bucket_strategy": "resolution_frames"})))
    assert (settings.num_frames, settings.min_frames, settings.extra) == (17, 33, {"bucket_strategy":
                                                                                   "resolution_frames"})
    with pytest.raises(SpecError) as refused:
        parse_job(wan_job(video={"frames": 17}))
    assert refused.value.field == "dataloader.video" and "unknown video option 'frames'" in refused.value.message


@pytest.mark.parametrize(("key", "value", "nearest"), [("num_frames", 80, "73 or 81"), ("min_frames", 20, "17 or 25")])
def test_a_frame_count_wan_cannot_take_is_refused_with_the_nearest(key: str, value: int, nearest: str):
    video = {"num_frames": 17, key: value}
    with pytest.raises(SpecError) as refused:
        video_settings(parse_job(wan_job(video=video)))
    assert refused.value.field == f"dataloader.video.{key}"
    assert "8k+1" in refused.value.message and nearest in refused.value.message


def test_min_frames_below_num_frames_is_refused_as_simpletuner_would():
    with pytest.raises(SpecError) as refused:
        video_settings(parse_job(wan_job(video={"num_frames": 17, "min_frames": 9})))
    assert refused.value.field == "dataloader.video.min_frames"


def test_an_i2v_flavour_makes_the_block_image_to_video():
    job = wan_job(config={"model_flavour": "i2v-14b-2.1"}, video={"num_frames": 17, "is_i2v": False})
    assert video_settings(parse_job(job)).is_i2v is True


# -- the backends -------------------------------------------------------------------------------------------------

def test_clips_get_a_video_backend_beside_the_image_backend(tmp_path: Path):
    job = JobDir(tmp_path)
    spec = parse_job(wan_job(video={"num_frames": 9}))
    files = build_trainer_files(spec, images_dir=job.dataset / "images", job=job, device="cpu",
                                clips_dir=job.dataset / "clips")
    kinds = {backend["id"]: backend for backend in files.backends}
    assert set(kinds) == {"dataset", "clips", "text-embeds"}
    video = kinds["clips"]
    assert video["dataset_type"] == "video" and video["instance_data_dir"] == str(job.dataset / "clips")
    assert video["video"] == {"num_frames": 9, "min_frames": 9, "max_frames": 5000, "is_i2v": False}
    assert video["cache_dir_vae"] != kinds["dataset"]["cache_dir_vae"] and "video" not in kinds["dataset"]
    only_clips = build_trainer_files(spec, images_dir=job.dataset / "images", job=job, device="cpu",
                                     clips_dir=job.dataset / "clips", stills=False)
    assert [backend["id"] for backend in only_clips.backends] == ["clips", "text-embeds"]


def test_a_native_video_entry_reads_the_staged_clips_and_is_checked(tmp_path: Path):
    job = JobDir(tmp_path)
    native = [{"id": "moves", "dataset_type": "video", "resolution": 64, "video": {"num_frames": 17}}]
    files = build_trainer_files(parse_job(wan_job(dataloader=native)), images_dir=job.dataset / "images", job=job,
                                device="cpu", clips_dir=job.dataset / "clips")
    assert files.backends[0]["instance_data_dir"] == str(job.dataset / "clips")
    assert files.backends[0]["video"]["min_frames"] == 17
    bad = [{"id": "moves", "dataset_type": "video", "video": {"num_frames": 16}}]
    with pytest.raises(SpecError) as refused:
        build_trainer_files(parse_job(wan_job(dataloader=bad)), images_dir=job.dataset / "images", job=job,
                            device="cpu", clips_dir=job.dataset / "clips")
    assert refused.value.field == "dataloader.0.video.num_frames" and "9 or 17" in refused.value.message


# -- the preflight, in a dry run ----------------------------------------------------------------------------------

def test_a_dry_run_reports_clips_frames_and_skipped_files(tmp_path: Path, settings: Settings):
    dataset = three_clips(tmp_path / "data")
    expected = write_hostile_clips(dataset)
    Image.new("RGB", (64, 64), "red").save(dataset / "still.png")
    result = check_job(parse_job(wan_job(dataset, video={"num_frames": 9})), tmp_path / "work", settings=settings)
    clips = result.preflight["clips"]
    assert (clips["clips"], clips["clips_usable"], clips["total_frames"]) == (3, 3, 39)
    assert clips["total_seconds"] == pytest.approx(39 / 8, abs=0.3)
    assert clips["frame_buckets"] == {"1@9": 3} and clips["samples"] == 3
    assert clips["frames_unused"] == 4 + 8  # one sample per clip: its first 9 frames
    assert {item["name"]: item["reason"] for item in clips["skipped"]} == expected
    assert result.preflight["images_usable"] == 1 and not result.preflight["errors"]
    assert any("never trained on" in warning for warning in result.preflight["warnings"])
    ids = [backend["id"] for backend in result.trainer_files["multidatabackend.json"]]
    assert ids == ["dataset", "clips", "text-embeds"]


def test_clips_too_short_for_num_frames_are_refused_naming_the_fix(tmp_path: Path, settings: Settings):
    with pytest.raises(PreflightError) as refused:
        check_job(parse_job(wan_job(three_clips(tmp_path / "data"))), tmp_path / "work", settings=settings)
    assert "none of the 3 clips has num_frames (81)" in refused.value.message
    assert "dataloader.video.num_frames to 17 or fewer" in refused.value.message


def test_an_image_family_refuses_clips_naming_them(tmp_path: Path, settings: Settings):
    dataset = three_clips(tmp_path / "data")
    Image.new("RGB", (64, 64), "red").save(dataset / "still.png")
    job = {"dataset": {"path": str(dataset)}, "config": {"model_family": "sdxl", "model_name": "some/sdxl",
                                                         "max_train_steps": 2}}
    with pytest.raises(PreflightError) as refused:
        check_job(parse_job(job), tmp_path / "work", settings=settings)
    assert "'sdxl' trains on images" in refused.value.message and "clip0.mp4" in refused.value.message


# -- one real training --------------------------------------------------------------------------------------------

@pytest.mark.training
def test_a_wan_lora_trains_from_three_clips_through_the_cli(tmp_path: Path, tiny_family_model):
    model = tiny_family_model("wan")
    job = wan_job(three_clips(tmp_path / "data"), video={"num_frames": 9},
                  config={"model_name": str(model), "checkpointing_steps": 100, "lora_rank": 2, "seed": 42})
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    done = core_cli("run", str(path), "--workdir", str(tmp_path / "work"))
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["status"] == "succeeded" and result["metrics"]["steps"] == 2
    assert result["preflight"]["clips"]["samples"] == 3
    assert (tmp_path / "work" / "output" / "pytorch_lora_weights.safetensors").stat().st_size > 0
    log = (tmp_path / "work" / "training.log").read_text()
    assert "Total number of videos: 3" in log  # SimpleTuner read the clips, not stills
    # The ComfyUI-format file, from SimpleTuner's own converter for Wan (its --lora_format comfyui)
    comfyui = Path(result["comfyui_checkpoint"])
    assert comfyui.parent == tmp_path / "work" / "output" and comfyui.name == "sks-wan-lora.safetensors"
    assert_generic_comfyui_file(tmp_path / "work" / "output" / "pytorch_lora_weights.safetensors", comfyui, rank=2)
    assert not [warning for warning in result["warnings"] if "ComfyUI" in warning]
