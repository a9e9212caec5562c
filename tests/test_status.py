"""The one status model (core/status.py): what every face shows of a running job, folded from its events."""

from __future__ import annotations

from functools import reduce

from core.events import (
    CheckpointSaved,
    DownloadProgress,
    JobWarning,
    LogLine,
    StageEvent,
    TrainerFailed,
    TrainerStage,
    TrainingProgress,
    ValidationImage,
)
from core.status import JobStatus, apply, summary

PRESIGNED = ("https://bucket.s3.us-east-1.amazonaws.com/data/ds.zip?X-Amz-Algorithm=AWS4-HMAC-SHA256"
             "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20240101%2Fus-east-1%2Fs3%2Faws4_request"
             "&X-Amz-Date=20240101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
             "&X-Amz-Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7")


def fold(*events) -> JobStatus:
    return reduce(apply, events, JobStatus())


def test_each_stage_reads_as_a_user_would_say_it():
    assert fold(StageEvent("dataset", "started")).stage == "downloading"
    assert fold(StageEvent("preflight", "started")).stage == "checking"
    assert fold(StageEvent("model", "started")).stage == "downloading"
    assert fold(StageEvent("train", "started")).stage == "loading"
    assert fold(TrainerStage("init_cache_text_embeds_status_update", "running", "Text Embedding Caching")).stage \
        == "caching"
    assert fold(TrainerStage("run_validations", "running", "Validation")).stage == "validating"
    loading = fold(TrainerStage("init_load_base_model", "running", "Loading base model"))
    assert (loading.stage, loading.message) == ("loading", "Loading base model")
    assert fold(StageEvent("publish", "started")).stage == "publishing"
    assert fold(StageEvent("upload", "started")).stage == "publishing"


def test_a_stage_keeps_the_pipelines_name_for_error_payloads():
    status = fold(StageEvent("dataset", "started"), DownloadProgress(source="x.zip", bytes_done=1))
    assert status.pipeline_stage == "dataset"
    assert fold(StageEvent("train", "started"), TrainingProgress(step=1, total_steps=2)).pipeline_stage == "train"


def test_a_training_step_sets_step_loss_and_eta_and_keeps_the_last_known_ones():
    status = fold(StageEvent("train", "started"),
                  TrainingProgress(step=3, total_steps=10, loss=0.123456789, eta_s=4.26, percent=30.0))
    assert status.to_dict() == {"stage": "training", "message": "step 3/10", "step": 3, "total_steps": 10,
                                "percent": 30.0, "loss": 0.123457, "eta_s": 4.3}
    later = apply(status, TrainingProgress(step=4, total_steps=10))
    assert (later.step, later.loss, later.eta_s) == (4, 0.123456789, 4.26)


def test_events_that_change_nothing_a_user_sees_return_the_same_status():
    status = fold(StageEvent("train", "started"))
    for event in (LogLine("chatter"), JobWarning("careful"), StageEvent("train", "completed"),
                  TrainerStage("init_resume_checkpoint", "completed", "Resume Checkpoint")):  # every run says this
        assert apply(status, event) is status
    resumed = apply(status, TrainerStage("init_resume_checkpoint", "running", "Resume Checkpoint"))
    assert (resumed.stage, resumed.message) == ("loading", "resuming from the checkpoint")


def test_a_downloads_bytes_leave_with_its_stage():
    status = fold(DownloadProgress(source="https://x/d.zip", bytes_done=10, bytes_total=100),
                  DownloadProgress(source="https://x/d.zip", bytes_done=100, bytes_total=100))
    assert (status.stage, status.bytes_done, status.bytes_total) == ("downloading", 100, 100)
    trained = apply(status, StageEvent("train", "started"))
    assert trained.bytes_done is None and "bytes_done" not in trained.to_dict()


def test_checkpoints_validation_images_and_failures_say_so():
    status = fold(TrainingProgress(step=5, total_steps=10), CheckpointSaved(path="/o/checkpoint-5", step=5))
    assert status.message == "saved checkpoint-5" and status.step == 5
    assert apply(status, ValidationImage(path="/o/v.png", step=5)).message == "validation image at step 5"
    assert apply(status, TrainerFailed(title="CUDA out of memory", message="...")).message == "CUDA out of memory"
    failed = apply(status, StageEvent("publish", "failed", "repo not found"))
    assert failed.message == "publish failed: repo not found"


def test_a_presigned_source_never_reaches_the_status():
    status = fold(StageEvent("dataset", "started", f"fetching {PRESIGNED}"),
                  DownloadProgress(source=PRESIGNED, bytes_done=5, bytes_total=None))
    line = summary(status)
    assert "AKIAIOSFODNN7EXAMPLE" not in line and "5d672d79" not in line and "X-Amz-Signature=***" in line
    assert "bucket.s3.us-east-1.amazonaws.com/data/ds.zip" in line


def test_the_summary_line_is_what_a_terminal_shows():
    training = fold(StageEvent("train", "started"), TrainingProgress(step=3, total_steps=10, loss=0.5, eta_s=12.4))
    assert summary(training) == "[training] step 3/10 loss=0.5000 eta=12s"
    assert summary(training, elapsed_s=61.2) == "[training] step 3/10 loss=0.5000 eta=12s elapsed=61s"
    download = fold(DownloadProgress(source="https://x/d.zip", bytes_done=12_000_000, bytes_total=100_000_000))
    assert summary(download) == "[downloading] downloading https://x/d.zip 12.0 MB/100.0 MB"
    assert summary(JobStatus()) == "[starting]"


def test_a_sent_status_reads_back_as_the_same_status():
    status = fold(StageEvent("train", "started"), TrainingProgress(step=3, total_steps=10, loss=0.25))
    assert JobStatus.from_dict({**status.to_dict(), "elapsed_s": 3.0}) == JobStatus(
        stage="training", step=3, total_steps=10, loss=0.25, message="step 3/10")


def test_every_stage_after_the_last_step_is_shown_by_name():
    trained = apply(JobStatus(), TrainingProgress(step=10, total_steps=10, loss=0.1))
    seen = []
    for event in (TrainerStage(key="model_save", status="running", label="Saving the model"),
                  StageEvent(stage="samples", status="started", message="rendering the samples of step 10"),
                  StageEvent(stage="comfyui", status="started"), StageEvent(stage="publish", status="started")):
        trained = apply(trained, event)
        seen.append((trained.stage, trained.message))
    assert seen == [("saving", "Saving the model"), ("sampling", "rendering the samples of step 10"),
                    ("converting", "writing the ComfyUI file"), ("publishing", "publishing the LoRA")]
    assert trained.step == 10  # the steps stay: the bar says how far training went
