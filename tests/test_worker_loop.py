"""runpod's production worker loop, for real: `python -m worker` with its RUNPOD_WEBHOOK_* variables pointing at a
local fake of RunPod's job API (tests/support/runpod_fake.py), datasets and outputs in S3 (moto_server).

One worker process serves every job of this module, in order: a refused job, a training job (progress while it
trains, then its result), the next job resuming that training from the bucket and cancelled mid-training, and a
dry run after the cancel. ALLOW_PRIVATE_URLS is unset, as on RunPod: S3 URLs name a bucket, not an address.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest
import requests

from core.generation.demo import write_demo_dataset
from tests.conftest import ROOT
from tests.support.processes import processes_working_in, stop_process_group
from tests.support.runpod_fake import RunpodFake, running_runpod_fake
from tests.support.s3_server import S3Server, moto_s3

BUCKET = "loras"
DATASET = f"s3://{BUCKET}/datasets/demo.zip"


@dataclass
class Loop:
    fake: RunpodFake
    s3: S3Server
    process: subprocess.Popen
    data_dir: Path
    log: Path

    def job_dir(self, job_id: str) -> Path:
        return self.data_dir / "jobs" / job_id

    def jobs_left(self) -> list[str]:
        jobs = self.data_dir / "jobs"
        return sorted(p.name for p in jobs.iterdir()) if jobs.exists() else []


def tiny_config(tiny_model: Path, **extra) -> dict:
    return {"model_family": "sdxl", "model_name": str(tiny_model), "resolution": 128, "lora_rank": 4, "seed": 42,
            **extra}


@pytest.fixture(scope="module")
def loop(tmp_path_factory) -> Loop:
    area = tmp_path_factory.mktemp("worker-loop")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(write_demo_dataset(area / "demo", count=6, size=128).iterdir()):
            archive.write(path, f"demo/{path.name}")
    data_dir, log = area / "data", area / "worker.log"
    with moto_s3() as s3, running_runpod_fake() as fake, log.open("wb") as log_file:
        client = s3.client()
        client.create_bucket(Bucket=BUCKET)
        client.put_object(Bucket=BUCKET, Key="datasets/demo.zip", Body=buffer.getvalue())
        env = {key: value for key, value in os.environ.items()
               if key not in ("HF_TOKEN", "DATASET_ROOT", "ALLOW_PRIVATE_URLS")
               and not key.startswith(("RUNPOD_", "BUCKET_"))}
        env.update(fake.env, **s3.env, BUCKET_NAME=BUCKET, DATA_DIR=str(data_dir), TRAINER_DEVICE="cpu",
                   PYTHONUNBUFFERED="1")
        process = subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=env, stdout=log_file,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield Loop(fake=fake, s3=s3, process=process, data_dir=data_dir, log=log)
        finally:
            stop_process_group(process)


def test_a_private_address_is_refused_and_the_worker_goes_on(loop, tiny_model):
    job_id = loop.fake.queue({"dataset_url": "http://127.0.0.1:9/demo.zip", "config": tiny_config(tiny_model),
                              "dry_run": True})
    result = loop.fake.wait_for_result(job_id, timeout_s=90)
    error = result["error"]
    assert (error["code"], error["field"]) == ("address_refused", "dataset.url"), result
    assert "loopback" in error["message"] and "ALLOW_PRIVATE_URLS" in error["message"]
    assert "stopPod" not in result and "output" not in result
    assert loop.process.poll() is None and loop.jobs_left() == []


@dataclass
class Trained:
    job_id: str
    result: dict
    result_at: float
    progress: list


@pytest.fixture(scope="module")
def trained(loop, tiny_model) -> Trained:
    """One real training through the loop: 20 steps, to the endpoint's bucket (the job names no destination)."""
    job = {"dataset_url": DATASET, "trigger_word": "sks", "dataloader": {"minimum_image_size": 64},
           "config": tiny_config(tiny_model, max_train_steps=20, checkpointing_steps=10)}
    job_id = loop.fake.queue(job)
    result = loop.fake.wait_for_result(job_id, timeout_s=400)
    return Trained(job_id, result, loop.fake.results[job_id].at, list(loop.fake.progress.get(job_id, [])))


@pytest.mark.training
def test_progress_arrives_while_training_with_a_rising_step_count(trained):
    updates = [(posted.at, posted.body["output"]) for posted in trained.progress]
    assert updates and all(at < trained.result_at for at, _ in updates)
    stages = [status["stage"] for _, status in updates]
    assert "loading" in stages and "training" in stages
    assert stages.index("loading") < stages.index("training")
    steps = [status["step"] for _, status in updates if status["stage"] == "training"]
    assert len(set(steps)) >= 2 and steps == sorted(steps), steps
    training = [status for _, status in updates if status["stage"] == "training"]
    assert all(s["total_steps"] == 20 and s["loss"] is not None for s in training)
    assert any(s.get("eta_s") is not None for s in training)
    gaps = [b - a for (a, _), (b, _) in pairwise(updates)]
    assert min(gaps) > 0.8, gaps  # throttled: about one a second, however many events SimpleTuner posts


@pytest.mark.training
def test_the_result_arrives_with_working_urls_and_metrics(loop, trained):
    assert "error" not in trained.result, trained.result
    output = trained.result["output"]
    assert output["status"] == "succeeded" and output["metrics"]["steps"] == 20
    assert output["metrics"]["loss"] is not None and output["metrics"]["elapsed_time"]
    lora = next(f for f in output["files"] if f["path"] == "pytorch_lora_weights.safetensors")
    assert output["model_checkpoint"] == lora["url"] and lora["url"].startswith(loop.s3.endpoint)
    download = requests.get(output["model_checkpoint"], timeout=30)
    assert download.status_code == 200 and len(download.content) == lora["size"]
    log = requests.get(output["training_logs"], timeout=30)
    assert log.status_code == 200 and log.text
    assert loop.s3.secret_key not in log.text and loop.s3.secret_key not in str(output)
    assert {f["path"] for f in output["files"]} >= {"checkpoint-20/training_state.json"}
    assert loop.jobs_left() == []


@pytest.mark.training
def test_a_cancelled_training_stops_at_once_and_the_worker_takes_the_next_job(loop, trained, tiny_model):
    """The next job resumes the first one from the bucket (its latest checkpoint), and is cancelled mid-training."""
    resumed = {"dataset_url": DATASET, "trigger_word": "sks", "dataloader": {"minimum_image_size": 64},
               "resume_from": f"s3://{BUCKET}/{trained.job_id}",
               "config": tiny_config(tiny_model, max_train_steps=400, checkpointing_steps=200)}
    job_id = loop.fake.queue(resumed)
    loop.fake.wait_for_progress(job_id, lambda status: status.get("step", 0) >= 22, timeout_s=300)
    steps = [s["step"] for s in loop.fake.progress_of(job_id) if s.get("stage") == "training"]
    assert min(steps) >= 20, steps  # continued from checkpoint-20, not from step 1
    assert processes_working_in(loop.job_dir(job_id)), "SimpleTuner should be training now"

    loop.fake.stop(job_id)
    asked = loop.fake.wait_for(lambda: loop.fake.stops_sent.get(job_id), timeout_s=30, what="the stop signal")
    while processes_working_in(loop.job_dir(job_id)):
        assert time.monotonic() - asked < 15, "SimpleTuner outlived the cancel"
        time.sleep(0.2)
    stopped_after = time.monotonic() - asked
    print(f"SimpleTuner gone {stopped_after:.1f} s after the worker got the stop signal")
    assert stopped_after < 15
    deadline = time.monotonic() + 40
    while loop.job_dir(job_id).exists():
        assert time.monotonic() < deadline, "the cancelled job's folder was not removed"
        time.sleep(0.2)

    dry = loop.fake.queue({"dataset_url": DATASET, "config": tiny_config(tiny_model), "dry_run": True,
                           "dataloader": {"minimum_image_size": 64}})
    result = loop.fake.wait_for_result(dry, timeout_s=120)
    assert result["output"]["status"] == "dry_run", result
    assert job_id not in loop.fake.results  # RunPod knows of its own cancel: the worker sends no result
    assert loop.process.poll() is None and loop.jobs_left() == []
    assert not loop.fake.unknown
