"""Job -> SimpleTuner files: golden files for whole outputs, and the rules a user relies on."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from core.errors import SpecError
from core.jobdir import JobDir
from core.spec.job import parse_job
from core.training.config import build_trainer_files
from tests.test_spec import SEED_REQUEST

GOLDEN = Path(__file__).parent / "golden"
JOB = JobDir(Path("/JOB"))
IMAGES = Path("/JOB/dataset/images")


def tiny(**extra) -> dict:
    return {"dataset": {"path": "/data"}, "trigger_word": "sks",
            "config": {"model_family": "sdxl", "model_name": "/MODEL", "resolution": 128, "max_train_steps": 10,
                       "lora_rank": 4}, "dataloader": {"minimum_image_size": 64}, **extra}


def check_golden(name: str, files) -> None:
    path = GOLDEN / f"{name}.json"
    actual = json.dumps(files.to_dict(), indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(actual)
    assert path.exists(), f"{path} is missing: run with UPDATE_GOLDEN=1 once and review it"
    assert actual == path.read_text()


@pytest.mark.parametrize(
    ("name", "job", "device"),
    [
        ("seed_cuda", SEED_REQUEST, "cuda"),
        ("tiny_cpu", tiny(), "cpu"),
        ("native_backends_cpu", tiny(dataloader=[{"id": "mine", "dataset_type": "image", "repeats": 2}]), "cpu"),
    ],
)
def test_golden_files(name, job, device):
    check_golden(name, build_trainer_files(parse_job(job), images_dir=IMAGES, job=JOB, device=device))


def test_a_cpu_run_gets_the_settings_that_train_without_cuda():
    files = build_trainer_files(parse_job(tiny()), images_dir=IMAGES, job=JOB, device="cpu")
    assert files.config["--mixed_precision"] == "no"
    assert all(b.get("vae_cache_ondemand") for b in files.backends if b.get("dataset_type") == "image")


def test_the_user_wins_except_for_the_paths_the_job_owns():
    job = tiny()
    job["config"].update({"optimizer": "optimi-lion", "--output_dir": "/etc", "lora_alpha": 8})
    files = build_trainer_files(parse_job(job), images_dir=IMAGES, job=JOB, device="cpu")
    assert files.config["--optimizer"] == "optimi-lion" and files.config["--lora_alpha"] == 8
    assert files.config["--output_dir"] == "/JOB/output"


def test_seed_dataloader_shorthand_becomes_caption_shuffle_on_the_backend():
    files = build_trainer_files(parse_job(SEED_REQUEST), images_dir=IMAGES, job=JOB, device="cuda")
    image = files.backends[0]
    assert image["caption_shuffle"] == {"enable": True, "split_on": "comma", "position_start": 1, "count": 1}
    assert files.backends[-1] == {"id": "text-embeds", "dataset_type": "text_embeds", "default": True,
                                  "type": "local", "cache_dir": "/JOB/cache/text"}


def test_steps_or_epochs_lead_and_the_other_is_zero():
    by_epochs = build_trainer_files(parse_job(SEED_REQUEST), images_dir=IMAGES, job=JOB, device="cuda").config
    assert (by_epochs["--num_train_epochs"], by_epochs["--max_train_steps"]) == (10, 0)
    by_steps = build_trainer_files(parse_job(tiny()), images_dir=IMAGES, job=JOB, device="cpu").config
    assert (by_steps["--num_train_epochs"], by_steps["--max_train_steps"]) == (0, 10)


def test_a_native_list_reads_a_folder_inside_the_dataset_only(tmp_path):
    images = tmp_path / "images"
    (images / "portraits").mkdir(parents=True)
    (images / "escape").symlink_to("/etc")
    job = JobDir(tmp_path / "job")
    spec = parse_job(tiny(dataloader=[{"id": "p", "instance_data_dir": "portraits"}]))
    files = build_trainer_files(spec, images_dir=images, job=job, device="cpu")
    assert files.backends[0]["instance_data_dir"] == str(images / "portraits")
    linked = parse_job(tiny(dataloader=[{"id": "p", "instance_data_dir": "escape"}]))
    with pytest.raises(SpecError) as caught:
        build_trainer_files(linked, images_dir=images, job=job, device="cpu")
    assert caught.value.field == "dataloader.0.instance_data_dir"


def test_what_the_project_composes_is_checked_for_env_placeholders_and_names_the_job_field():
    """The job's own values are checked as they come in; the files built from them are checked again, so a text the
    project puts together (here a prompt library past the job's own checks) cannot reach SimpleTuner's loader."""
    spec = parse_job(tiny(trigger_word="env", samples={"prompts": ["a photo of [trigger]"]}))
    assert build_trainer_files(spec, images_dir=IMAGES, job=JOB, device="cpu").config  # as sent: fine
    composed = spec.samples.model_copy(update={"prompts": ["{[trigger]:HF_TOKEN}"],
                                               "negative_prompt": "{ ENV :BUCKET_SECRET_ACCESS_KEY}"})
    with pytest.raises(SpecError) as refused:
        build_trainer_files(spec.model_copy(update={"samples": composed}), images_dir=IMAGES, job=JOB, device="cpu")
    fields = {(e["field"], e["message"].split(" in ")[1].split(",")[0]) for e in refused.value.errors}
    assert fields == {("samples", "--validation_negative_prompt"),
                      ("samples.prompts", "user_prompt_library.json.sample_0")}


def test_metrics_go_to_tensorboard_files_and_to_wandb_only_when_its_key_is_set():
    job = {"dataset_url": "https://example.com/d.zip", "hub": {"repo_id": "me/my-style"},
           "config": {"model_family": "sdxl", "model_name": "a/b"}}
    plain = build_trainer_files(parse_job(job), images_dir=IMAGES, job=JOB, device="cpu").config
    assert plain["--report_to"] == "none"  # SimpleTuner's tensorboard tracker fails; the project writes the files
    assert (plain["--tracker_project_name"], plain["--tracker_run_name"]) == ("my-style", "JOB")
    assert plain["--logging_dir"] == "/JOB/trainer/logs"  # inside the job, whatever a job says
    wandb = build_trainer_files(parse_job(job), images_dir=IMAGES, job=JOB, device="cpu", wandb=True).config
    assert wandb["--report_to"] == "wandb"
    own = build_trainer_files(parse_job({**job, "config": {**job["config"], "tracker_project_name": "mine",
                                                           "logging_dir": "/etc"}}),
                              images_dir=IMAGES, job=JOB, device="cpu", wandb=True).config
    assert own["--tracker_project_name"] == "mine" and own["--logging_dir"] == "/JOB/trainer/logs"
