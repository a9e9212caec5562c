"""Never lose a paid training: a failed publish keeps the outputs elsewhere (core/publishing/safekeeping.py),
checkpoints leave
the machine as they are written (core/publishing/checkpoints.py), a job near its deadline stops at a checkpoint and ends
`partial` (core/training/deadline.py), and `resume_from: "auto"` continues it (core/training/resume.py). Real
trainings of the tiny
model, the local Hub server, moto S3."""

from __future__ import annotations

import dataclasses
import os
import re
import threading

import pytest

from core.endpoint import job_deadline
from core.errors import JobError
from core.events import CheckpointSaved, TrainerStage, TrainingProgress
from core.pipeline import publish, run_job
from core.publishing.safekeeping import outputs_stored
from core.result import JobResult
from core.settings import Settings
from core.spec.job import parse_job
from tests.conftest import tiny_job
from tests.support.hub_server import running_hub_server
from tests.support.s3_server import moto_s3

TOKEN = "hf_DurabilityTestToken0123456789abcd"
LORA = "pytorch_lora_weights.safetensors"


def checkpoint_folders(files: dict) -> list[str]:
    return sorted({m.group(1) for path in files if (m := re.match(r"checkpoints/(checkpoint-\d+)/", path))})


def test_a_publish_the_hub_keeps_refusing_leaves_the_lora_in_the_bucket_and_says_so(tmp_path, trained_copy):
    trained = trained_copy
    spec = parse_job(tiny_job("m", tmp_path, hub={"repo_id": "tester/lora", "token": TOKEN}))
    with running_hub_server(tmp_path, token=TOKEN) as hub, moto_s3() as s3:
        s3.client().create_bucket(Bucket="endpoint-bucket")
        endpoint = Settings.from_env({**s3.env, "BUCKET_NAME": "endpoint-bucket"})  # its bucket, as RunPod sets it
        hub.fail_next(r"/commit/", 500, times=1000)
        result = dataclasses.replace(trained, hub=None, storage=None, warnings=[])
        with pytest.raises(JobError) as caught:
            publish(spec, result, settings=endpoint)
        error = caught.value
        assert (error.code, error.stage) == ("hub_unavailable", "publish")
        job_id = trained.job_dir.name
        assert f"the outputs are in s3://endpoint-bucket/{job_id}/" in error.message
        assert error.salvaged["kept_at"] == f"s3://endpoint-bucket/{job_id}/" and LORA in error.salvaged["files"]
        stored = s3.client().get_object(Bucket="endpoint-bucket", Key=f"{job_id}/{LORA}")["Body"].read()
        assert stored == trained.lora_path.read_bytes()
        assert len(hub.requests_to(r"/commit/")) == 4  # the retry policy's attempts, then the next destination
        assert outputs_stored(trained.output_dir, error)

        # No bucket on the endpoint, a network volume: the files go to a folder there, named in the error.
        volume = tmp_path / "volume"
        volume.mkdir()
        with pytest.raises(JobError) as caught:
            publish(spec, dataclasses.replace(trained, hub=None, storage=None, warnings=[]),
                    settings=Settings.from_env({"VOLUME_DIR": str(volume)}))
        kept = volume / "kept-outputs" / job_id
        assert str(kept) in caught.value.message
        assert (kept / LORA).read_bytes() == trained.lora_path.read_bytes()

        # Nowhere else to go: the error says the files are only on this machine, and the folder is kept.
        with pytest.raises(JobError) as caught:
            publish(spec, dataclasses.replace(trained, hub=None, storage=None, warnings=[]),
                    settings=Settings.from_env({}))
        assert "only in the job's folder on this machine" in caught.value.message
        assert not outputs_stored(trained.output_dir, caught.value)


@pytest.mark.training
def test_a_job_cut_by_its_deadline_ends_partial_and_auto_resume_finishes_it(tmp_path, trained_job, tiny_model):
    """Two real trainings of one job that uploads its checkpoints to the Hub: the first stops at its deadline with
    checkpoint-2 there; the second (`resume_from: "auto"`) continues from it, its own checkpoints reaching the Hub while
    it still trains. (test_checkpoint_uploads.py and test_deadline_stop.py check both parts without a training.)

    The job is also a second training of the session's trained job (test_cache.py's check, merged here): same
    dataset, same model, another learning rate. The first kept its text embeddings; the finished run here got them
    back, SimpleTuner embedded no caption itself and found every image already in its aspect buckets."""
    first, first_events = trained_job
    embedding = [e for e in first_events if isinstance(e, TrainerStage)
                 and e.key == "init_cache_text_embeds_status_update"]
    assert embedding, "SimpleTuner said nothing while it embedded the first run's captions"
    assert first.cache is not None and first.cache["stages_s"]["text_embeds"] > 0
    dataset = first.job_dir.parent / "dataset-src"  # the fixture's dataset, staged from the same files

    # A margin longer than the whole job: training stops right after its first checkpoint, as near a deadline.
    # The session's environment (its cache, which the trained job filled), with the margin.
    near_deadline = Settings.from_env({**os.environ, "DEADLINE_MARGIN_S": "100000"})
    job = tiny_job(tiny_model, dataset, config={"learning_rate": 3e-4, "max_train_steps": 8, "checkpointing_steps": 2},
                   hub={"repo_id": "tester/long-run", "token": TOKEN, "checkpoints": True}, timeout_s=900,
                   resume_from="auto")
    with running_hub_server(tmp_path, token=TOKEN) as hub:
        events: list = []
        cut = run_job(parse_job(job), tmp_path / "first", events.append, settings=near_deadline)
        output = cut.to_output()
        assert output["status"] == "partial", output
        assert output["resume_from"] == "tester/long-run/checkpoints/checkpoint-2"
        assert output["metrics"]["steps"] == 2
        assert "checkpoint-2" in checkpoint_folders(hub.repos["tester/long-run"].files)
        assert any(isinstance(e, CheckpointSaved) for e in events)
        assert any("starting fresh" in getattr(e, "message", "") for e in events)

        events.clear()
        seen: list[tuple[int, list[str]]] = []  # (training step, checkpoint folders on the Hub then)

        def on_event(event):
            events.append(event)
            if isinstance(event, TrainingProgress):
                seen.append((event.step, checkpoint_folders(hub.repos["tester/long-run"].files)))

        done = run_job(parse_job(job), tmp_path / "second", on_event, settings=Settings.from_env())
        final = hub.repos["tester/long-run"].files
    assert done.status == "succeeded" and done.metrics.steps == 8
    assert any("resuming from checkpoint-2" in getattr(e, "message", "") for e in events)
    assert min(e.step for e in events if isinstance(e, TrainingProgress)) > 2  # continued, not restarted
    assert LORA in final
    # uploaded while training went on: a checkpoint of this run was on the Hub before its last step
    assert any(step < 8 and {"checkpoint-4", "checkpoint-6"} & set(folders) for step, folders in seen), seen
    assert len(checkpoint_folders(final)) == 2  # the last K (config.checkpoints_total_limit, default 2)
    steps = [entry["step"] for entry in done.to_output()["checkpoints"]]
    assert steps == sorted(steps) and steps[0] == 4  # the first checkpoint after the resumed step 2
    assert f"checkpoint-{steps[-1]}" in checkpoint_folders(final)

    assert done.cache is not None and done.cache["dataset"] == "reused"
    assert done.cache["text_embeds"] >= 6  # one per caption (and SimpleTuner's empty prompt)
    assert not [e for e in events if isinstance(e, TrainerStage) and "Caching in Progress" in e.label]
    assert done.cache["saved_s"] > 0
    # SimpleTuner's aspect-bucket scan found every image already scanned (core/cache/buckets.py wrote its files).
    log = done.log_path.read_text()
    assert done.cache["buckets"] == 6 and "No new files discovered" in log and "'already_exists': 6" in log
    assert "Generating aspect bucket cache" not in log and "No cache file found" not in log


def test_a_job_folder_is_deleted_only_when_its_outputs_are_stored(tmp_path):
    output = tmp_path / "output"
    output.mkdir()
    assert outputs_stored(output, None)  # nothing trained
    (output / LORA).write_bytes(b"w")
    assert not outputs_stored(output, JobError("push failed"))
    assert outputs_stored(output, JobResult(status="succeeded", job_dir=tmp_path))
    assert not outputs_stored(output, JobResult(status="partial", job_dir=tmp_path))
    assert outputs_stored(output, JobResult(status="partial", job_dir=tmp_path, resume_from="u/r/checkpoints/c-2"))


@pytest.mark.training
def test_a_cancel_of_a_job_that_keeps_what_it_trains_ends_partial_with_its_checkpoint_on_the_hub(
        tmp_path, demo_dataset, tiny_model, settings):
    cancel = threading.Event()

    def on_event(event):
        if isinstance(event, CheckpointSaved):
            cancel.set()  # the user cancels once a checkpoint is written

    job = tiny_job(tiny_model, demo_dataset, config={"max_train_steps": 40, "checkpointing_steps": 2},
                   hub={"repo_id": "tester/cancelled", "token": TOKEN, "on_failure": True})
    with running_hub_server(tmp_path, token=TOKEN) as hub:
        output = run_job(parse_job(job), tmp_path / "job", on_event, settings=settings, cancel=cancel).to_output()
        on_hub = checkpoint_folders(hub.repos["tester/cancelled"].files)
    assert output["status"] == "partial", output
    step = output["metrics"]["steps"]
    assert 2 <= step < 40
    assert output["resume_from"] == f"tester/cancelled/checkpoints/checkpoint-{step}"
    assert f"checkpoint-{step}" in on_hub
    assert any(f"stopped at step {step} by a cancel" in warning for warning in output["warnings"])


def test_the_endpoints_execution_timeout_bounds_timeout_s(tmp_path):
    job = tiny_job(tmp_path / "m", tmp_path / "d", hub={"repo_id": "tester/t"})
    hour = Settings.from_env({"EXECUTION_TIMEOUT_S": "3600"})
    spec, warnings = job_deadline(parse_job(job), {"id": "j"}, settings=hour)
    assert spec.timeout_s == 3600 and warnings == []  # the default 6 h gives way silently
    asked = parse_job({**job, "timeout_s": 7200})
    spec, warnings = job_deadline(asked, {"id": "j", "policy": {"executionTimeout": 1_800_000}},
                                  settings=hour)
    assert spec.timeout_s == 1800 and "policy.executionTimeout" in warnings[0] and "timeout_s" in warnings[0]
    spec, _ = job_deadline(asked, {"id": "j"}, settings=Settings.from_env({}))
    assert spec.timeout_s == 7200  # no limit known: the job's own
    with pytest.raises(JobError) as caught:
        job_deadline(asked, {"id": "j"}, settings=Settings.from_env({"EXECUTION_TIMEOUT_S": "ten minutes"}))
    assert caught.value.field == "EXECUTION_TIMEOUT_S"
