"""The SimpleTuner runner: webhook events, failures, cancel and time limits, with the real SimpleTuner."""

from __future__ import annotations

import shutil
import threading
import time

import pytest

from core.adapters import TrainerEnv
from core.errors import JobCancelled, JobTimeout, TrainingError
from core.events import CheckpointSaved, TrainerFailed, TrainerStage, TrainingProgress
from core.jobdir import JobDir
from core.pipeline import run_job
from core.settings import Settings
from core.spec.job import parse_job
from core.training.config import build_trainer_files
from core.training.trainer import image_prompt, launch_command, translate_event
from tests.conftest import ROOT, tiny_job
from tests.support.processes import processes_working_in

# Shapes SimpleTuner 4.10.1 posts to a raw webhook (docs/simpletuner-notes.md).
STATUS = {"type": "training.status", "progress": {"current": 2, "total": 6, "percent": 33.3, "eta_seconds": 0.5,
          "metrics": {"loss": 1.15, "learning_rate": 0.0001}}, "data": {"status": "running", "global_step": 2}}


def test_a_step_status_becomes_a_progress_event():
    (event,) = translate_event(STATUS)
    assert event == TrainingProgress(step=2, total_steps=6, loss=1.15, learning_rate=0.0001, eta_s=0.5, percent=33.3)


def test_the_opening_status_and_a_nan_loss_carry_no_fake_numbers():
    opening = {**STATUS, "progress": {**STATUS["progress"], "current": 0}}
    assert translate_event(opening) == []
    nan = {**STATUS, "progress": {**STATUS["progress"], "metrics": {"loss": "nan"}}}
    assert translate_event(nan)[0].loss is None


def test_a_sample_image_is_labelled_with_its_own_prompt_not_the_validation_prompt(tmp_path):
    spec = parse_job({"dataset": {"path": "/data"}, "trigger_word": "sks",
                      "config": {"model_family": "sdxl", "model_name": "/models/tiny", "validation_prompt": "sks dog"},
                      "samples": {"prompts": ["a [trigger] circle",
                                              {"prompt": "[trigger] square", "lora_scale": 0.5}]}})
    files = build_trainer_files(spec, images_dir=tmp_path, job=JobDir(tmp_path / "job").create(), device="cpu")
    assert image_prompt("step_5_sample_0_0_128x128.png", files) == "a sks circle"
    assert image_prompt("step_5_sample_1_0_128x128.png", files) == "sks square"
    assert image_prompt("step_5_sks_dog_0_128x128.png", files) == str(files.config.get("--validation_prompt") or "")


def test_checkpoint_stage_and_error_events():
    assert translate_event({"type": "training.checkpoint", "checkpoint": {"path": "/o/checkpoint-3"}}) == [
        CheckpointSaved(path="/o/checkpoint-3", step=3, is_final=False)]
    stage = translate_event({"type": "lifecycle.stage", "stage": {"key": "training_complete", "status": "completed"}})
    assert stage == [TrainerStage(key="training_complete", status="completed")]
    assert translate_event({"type": "error", "title": "Training failed: OSError", "message": "boom"}) == [
        TrainerFailed(title="Training failed: OSError", message="boom")]
    assert translate_event({"type": "something.new"}) == []


@pytest.mark.trainer_env  # reads SimpleTuner's train.py and accelerate from the trainer env
def test_the_launcher_is_accelerate_with_the_runs_own_config_file_and_nothing_else(settings, tmp_path):
    """Every launch setting is in the run's config file: accelerate never reads a default_config.yaml then."""
    config = tmp_path / "accelerate_config.json"
    command = launch_command(TrainerEnv(settings), config_file=config)
    assert command[:4] == [str(settings.trainer_bin / "accelerate"), "launch", "--config_file", str(config)]
    assert len(command) == 5 and command[-1].endswith("simpletuner/train.py")
    assert launch_command(TrainerEnv(settings), config_file=config, family="wan") == command


@pytest.mark.trainer_env
def test_ltx_video_launches_simpletuners_train_py_through_its_fix(settings, tmp_path):
    """SimpleTuner 4.10.1's LTX-Video builds its text-encoding pipeline without a scheduler: tools/simpletuner_train.py
    gives it one, then runs train.py (tests/test_ltx_training.py trains through it)."""
    config = tmp_path / "accelerate_config.json"
    command = launch_command(TrainerEnv(settings), config_file=config, family="ltxvideo")
    assert command[:4] == [str(settings.trainer_bin / "accelerate"), "launch", "--config_file", str(config)]
    assert command[-1] == str(ROOT / "tools" / "simpletuner_train.py")


@pytest.mark.training
def test_a_model_simpletuner_cannot_load_fails_with_simpletuners_own_message(tmp_path, tiny_model, demo_dataset,
                                                                            settings):
    """A folder that says it holds a pipeline but has no weights passes the project's checks; SimpleTuner's own
    error is what the job ends with. (A folder that is no model at all is refused at validate: test_local_model.)"""
    broken = tmp_path / "broken-model"
    broken.mkdir()
    shutil.copy(tiny_model / "model_index.json", broken / "model_index.json")
    job = tiny_job(tiny_model, demo_dataset, config={"model_name": str(broken)})
    with pytest.raises(TrainingError) as caught:
        run_job(parse_job(job), tmp_path / "job", settings=settings)
    error = caught.value
    assert type(error) is TrainingError and error.code == "training_failed" and error.exit_code != 0
    assert "broken-model" in error.message and "OSError" in error.message
    assert processes_working_in(tmp_path / "job") == []


@pytest.mark.training
def test_cancel_stops_training_within_seconds_and_keeps_checkpoints(tmp_path, tiny_model, demo_dataset, settings):
    job = tiny_job(tiny_model, demo_dataset, config={"max_train_steps": 500, "checkpointing_steps": 2})
    cancel = threading.Event()
    cancelled_at: list[float] = []

    def on_event(event):
        if isinstance(event, CheckpointSaved) and not cancel.is_set():
            cancelled_at.append(time.monotonic())
            cancel.set()

    with pytest.raises(JobCancelled) as caught:
        run_job(parse_job(job), tmp_path / "job", on_event, settings=settings, cancel=cancel)
    stopped_after = time.monotonic() - cancelled_at[0]
    assert stopped_after < 8, stopped_after
    assert caught.value.code == "cancelled" and caught.value.stage == "train"
    assert processes_working_in(tmp_path / "job") == []
    assert (tmp_path / "job" / "output" / "checkpoint-2" / "pytorch_lora_weights.safetensors").exists()


@pytest.mark.training
def test_the_time_limit_stops_training_with_a_clear_error(tmp_path, tiny_model, demo_dataset, settings):
    job = tiny_job(tiny_model, demo_dataset, timeout_s=3)
    started = time.monotonic()
    with pytest.raises(JobTimeout) as caught:
        run_job(parse_job(job), tmp_path / "job", settings=settings)
    assert time.monotonic() - started < 15
    assert "timeout_s=3" in caught.value.message and caught.value.code == "timeout" and caught.value.stage == "train"
    assert processes_working_in(tmp_path / "job") == []


def test_a_missing_trainer_env_is_a_setup_error_naming_the_variable(tmp_path, demo_dataset, tiny_model):
    from core.errors import SetupError

    settings = Settings.from_env({"TRAINER_VENV": str(tmp_path / "nowhere"), "TRAINER_DEVICE": "cpu"})
    with pytest.raises(SetupError) as caught:
        run_job(parse_job(tiny_job(tiny_model, demo_dataset)), tmp_path / "job", settings=settings)
    assert caught.value.field == "TRAINER_VENV"


def test_the_wandb_key_reaches_simpletuner_only_through_its_environment_and_only_when_chosen(tmp_path):
    from dataclasses import replace

    from core.training.config import TrainerFiles
    from core.training.trainer import trackers_env

    key = "wandb-key-0123456789abcdef0123456789abcdef"
    settings = Settings.from_env({"DATA_DIR": str(tmp_path), "WANDB_API_KEY": key}, mountinfo="")
    chosen = TrainerFiles(config={"--report_to": "wandb"}, backends=[])
    assert trackers_env(chosen, settings) == {"WANDB_API_KEY": key, "WANDB_MODE": "online"}
    assert trackers_env(TrainerFiles(config={"--report_to": "none"}, backends=[]), settings) == {}
    assert trackers_env(chosen, replace(settings, wandb_api_key=None)) == {}
    assert key not in repr(settings)
    # Never in the env's own allow-listed part, even when set in the process's environment.
    assert "WANDB_API_KEY" not in TrainerEnv(settings, base={"WANDB_API_KEY": key, "PATH": "/bin"}).env()
    from core.secrets import job_secrets, scrub
    assert scrub(f"logged {key}", secrets=job_secrets(None, settings=settings)) == "logged ***"
