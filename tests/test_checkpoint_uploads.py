"""Checkpoint uploads while training goes on (core/publishing/checkpoints.py CheckpointUploads), without a training:
`checkpoint-N` folders with real files are written to tmp_path as SimpleTuner writes them, and the CheckpointSaved
events it would post are fed to the uploader. The destinations are the real ones: the local Hub server and moto S3.
(test_durability.py runs them inside real trainings.)"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest

from core.adapters import RetryPolicy
from core.events import CheckpointSaved, JobWarning, LogLine
from core.jobdir import JobDir
from core.publishing.checkpoints import BucketCheckpoints, CheckpointUploads, HubCheckpoints, checkpoint_destinations
from core.publishing.destinations import HubDestination
from core.settings import Settings
from core.spec import HubSpec
from core.spec.job import parse_job
from tests.conftest import tiny_job
from tests.support.hub_server import running_hub_server
from tests.support.s3_server import moto_s3

TOKEN = "hf_CheckpointUploadsToken0123456789ab"
LORA = "pytorch_lora_weights.safetensors"


def write_checkpoint(job: JobDir, step: int, *, complete: bool = True, note: str = "") -> Path:
    """A checkpoint-N folder as SimpleTuner leaves it: weights, optimizer state, its training state and its
    completion guard (incomplete: neither yet)."""
    folder = job.output / f"checkpoint-{step}"
    (folder / "random_states").mkdir(parents=True)
    (folder / LORA).write_bytes(bytes([step]) * 4096)
    (folder / "optimizer.bin").write_bytes(bytes([step, 1]) * 2048)
    (folder / "random_states" / "rng_state_0.pkl").write_bytes(b"rng-%d" % step)
    (folder / "notes.txt").write_text(note or f"step {step}\n")
    if complete:
        (folder / "training_state.json").write_text(f'{{"global_step": {step}}}')
        (folder / ".guard").write_text("")
    return folder


def hub_repo(repo_id: str, hub) -> HubDestination:
    """The job's private Hub repo on the local Hub server, with the token that writes to it."""
    return HubDestination(spec=HubSpec(repo_id=repo_id, private=True), token=TOKEN, endpoint=hub.endpoint)


def saved(folder: Path) -> CheckpointSaved:
    step = int(folder.name.rsplit("-", 1)[1])
    return CheckpointSaved(path=str(folder), step=step)


def checkpoint_folders(files: dict) -> list[str]:
    return sorted({m.group(1) for path in files if (m := re.match(r"checkpoints/(checkpoint-\d+)/", path))})


def wait_until(check, *, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_each_checkpoint_reaches_the_hub_while_training_goes_on_and_the_last_k_stay(tmp_path):
    job = JobDir(tmp_path / "job")
    events: list = []
    passed_on: list = []
    with running_hub_server(tmp_path, token=TOKEN) as hub:
        destination = HubCheckpoints(hub_repo("tester/ckpt", hub), on_event=events.append)
        with CheckpointUploads([destination], job=job, keep=2, on_event=events.append) as uploads:
            sink = uploads.watching(passed_on.append)
            first = write_checkpoint(job, 2)
            sink(saved(first))
            assert passed_on == [saved(first)]  # the training's own sink gets the event at once
            # "Training" has not finished (the uploader is still open): the checkpoint is on the Hub already.
            wait_until(lambda: "tester/ckpt" in hub.repos and checkpoint_folders(hub.repos["tester/ckpt"].files))
            assert checkpoint_folders(hub.repos["tester/ckpt"].files) == ["checkpoint-2"]
            for step in (4, 6):
                sink(saved(write_checkpoint(job, step)))
        files = hub.repos["tester/ckpt"].files
        private = hub.repos["tester/ckpt"].private
    assert checkpoint_folders(files) == ["checkpoint-4", "checkpoint-6"]  # keep=2: checkpoint-2 deleted there
    assert files["checkpoints/checkpoint-6/pytorch_lora_weights.safetensors"] == bytes([6]) * 4096
    assert files["checkpoints/checkpoint-6/random_states/rng_state_0.pkl"] == b"rng-6"
    assert files["checkpoints/checkpoint-6/training_state.json"] == b'{"global_step": 6}'
    assert private
    assert [(u.step, u.location, u.resume_from) for u in uploads.uploaded] == [
        (step, f"hf://tester/ckpt/checkpoints/checkpoint-{step}", f"tester/ckpt/checkpoints/checkpoint-{step}")
        for step in (2, 4, 6)]
    assert [e.message for e in events if isinstance(e, LogLine)] == [
        f"checkpoint-{step} uploaded to hf://tester/ckpt/checkpoints/checkpoint-{step}" for step in (2, 4, 6)]
    assert not (job.root / "checkpoint-uploads" / "checkpoint-6").exists()  # the set-aside copies are gone


def test_a_folder_pruned_mid_upload_is_still_uploaded_whole_and_an_incomplete_one_not_at_all(tmp_path):
    job = JobDir(tmp_path / "job")
    with running_hub_server(tmp_path, token=TOKEN) as hub:
        destination = HubCheckpoints(hub_repo("tester/pruned", hub))
        with CheckpointUploads([destination], job=job) as uploads:
            sink = uploads.watching(lambda event: None)
            sink(saved(write_checkpoint(job, 3, complete=False)))  # no training_state.json yet: not queued
            folder = write_checkpoint(job, 5)
            sink(saved(folder))
            shutil.rmtree(folder)  # SimpleTuner's checkpoints_total_limit removes it while the upload may run
        files = hub.repos["tester/pruned"].files
    assert checkpoint_folders(files) == ["checkpoint-5"]
    assert files["checkpoints/checkpoint-5/pytorch_lora_weights.safetensors"] == bytes([5]) * 4096
    assert files["checkpoints/checkpoint-5/optimizer.bin"] == bytes([5, 1]) * 2048
    assert [u.step for u in uploads.uploaded] == [5]


def test_ensure_uploads_the_last_checkpoint_once_and_a_text_file_loses_the_token(tmp_path):
    job = JobDir(tmp_path / "job")
    with running_hub_server(tmp_path, token=TOKEN) as hub:
        destination = HubCheckpoints(hub_repo("tester/last", hub))
        uploads = CheckpointUploads([destination], job=job)
        folder = write_checkpoint(job, 7, note=f"pushed with {TOKEN}\n")
        done = uploads.ensure(folder)
        again = uploads.ensure(folder)
        commits = [c.summary for c in hub.commits("tester/last")]
        files = hub.repos["tester/last"].files
    assert done is not None and done.resume_from == "tester/last/checkpoints/checkpoint-7" and again == done
    assert commits == ["Checkpoint at step 7"]  # the second ensure uploaded nothing
    note = files["checkpoints/checkpoint-7/notes.txt"]
    assert TOKEN.encode() not in note and note.startswith(b"pushed with ")
    assert (folder / "notes.txt").read_text() == f"pushed with {TOKEN}\n"  # the local file is left as it was
    with pytest.raises(ValueError, match="not a checkpoint-N folder"):
        uploads.ensure(job.output)


def test_a_failed_upload_is_a_warning_and_the_next_checkpoint_still_goes(tmp_path):
    job = JobDir(tmp_path / "job")
    events: list = []
    with running_hub_server(tmp_path, token=TOKEN) as hub:
        hub.fail_next(r"/commit/", 500, times=2)
        destination = HubCheckpoints(hub_repo("tester/flaky", hub),
                                     retry=RetryPolicy(attempts=2, backoff_s=0.01), on_event=events.append)
        with CheckpointUploads([destination], job=job, on_event=events.append) as uploads:
            sink = uploads.watching(lambda event: None)
            sink(saved(write_checkpoint(job, 2)))
            wait_until(lambda: any(isinstance(e, JobWarning) for e in events))
            sink(saved(write_checkpoint(job, 4)))
        files = hub.repos["tester/flaky"].files
    (warning,) = [e for e in events if isinstance(e, JobWarning)]
    assert warning.message.startswith("checkpoint-2 was not uploaded to hf://tester/flaky/checkpoints: ")
    assert warning.field == "hub.checkpoints"
    assert checkpoint_folders(files) == ["checkpoint-4"] and [u.step for u in uploads.uploaded] == [4]


def test_bucket_checkpoints_go_under_the_prefix_and_the_job_picks_its_destinations(tmp_path):
    job = JobDir(tmp_path / "job")
    with moto_s3() as s3:
        client = s3.client()
        client.create_bucket(Bucket="ckpts")
        spec = parse_job(tiny_job(tmp_path, tmp_path, config={"checkpoints_total_limit": 1},
                                  storage={"bucket": "ckpts", "prefix": "runs/a", "checkpoints": True},
                                  hub={"repo_id": "tester/both", "checkpoints": True}))
        uploads = CheckpointUploads.for_job(spec, Settings.from_env(s3.env), job=job)
        assert uploads.keep == 1
        assert [type(d) for d in uploads.destinations] == [BucketCheckpoints]  # no token: no Hub destination
        with_token = Settings.from_env({**s3.env, "HF_TOKEN": TOKEN})
        assert [type(d) for d in checkpoint_destinations(spec, with_token)] == [HubCheckpoints, BucketCheckpoints]
        with uploads:
            sink = uploads.watching(lambda event: None)
            for step in (10, 20):
                sink(saved(write_checkpoint(job, step)))
        keys = sorted(item["Key"] for item in client.list_objects_v2(Bucket="ckpts")["Contents"])
        weights = client.get_object(Bucket="ckpts", Key=f"runs/a/checkpoints/checkpoint-20/{LORA}")["Body"].read()
    assert keys == sorted(f"runs/a/checkpoints/checkpoint-20/{name}" for name in (
        LORA, "optimizer.bin", "random_states/rng_state_0.pkl", "notes.txt", "training_state.json", ".guard"))
    assert weights == bytes([20]) * 4096
    assert [u.location for u in uploads.uploaded] == [f"s3://ckpts/runs/a/checkpoints/checkpoint-{s}" for s in (10, 20)]


def test_without_a_destination_nothing_is_queued_or_set_aside(tmp_path):
    job = JobDir(tmp_path / "job")
    passed_on: list = []
    with CheckpointUploads([], job=job) as uploads:
        sink = uploads.watching(passed_on.append)
        sink(saved(write_checkpoint(job, 2)))
    assert len(passed_on) == 1 and uploads.uploaded == [] and not (job.root / "checkpoint-uploads").exists()
    assert uploads.finish(timeout_s=0) is True
