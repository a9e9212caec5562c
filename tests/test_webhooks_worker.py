"""A training job with a webhook, through runpod's production worker loop (`python -m worker` against the local fake
of RunPod's job API): the tiny SDXL for four steps with a checkpoint every two (uploaded to the Hub as it is made),
the LoRA, its sample and its TensorBoard event files pushed to the local Hub server, and every event posted to a
loopback receiver that checks each signature as a caller would. One training serves every test of this module."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.generation.demo import write_demo_dataset
from tests.conftest import ROOT
from tests.support.http_server import serve_files
from tests.support.hub_server import HubServer, running_hub_server
from tests.support.processes import stop_process_group
from tests.support.runpod_fake import running_runpod_fake
from tests.support.webhook_receiver import Delivery, receiving_webhooks, verified
from tests.test_worker import worker_env

TOKEN = "hf_WorkerHooksToken0123456789abcdefXYZ"
REPO = "tester/hooked-lora"
SECRET = "whsec_" + base64.b64encode(b"a receiver's own 32-byte key!!!!").decode()


@dataclass
class Trained:
    output: dict
    deliveries: list[Delivery]
    hub: HubServer
    log: str


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model) -> Trained:
    area = tmp_path_factory.mktemp("worker-hooks")
    served = area / "served"
    served.mkdir()
    source = write_demo_dataset(area / "shapes", count=4, size=128)
    with zipfile.ZipFile(served / "shapes.zip", "w") as archive:
        for path in sorted(source.iterdir()):
            archive.write(path, f"shapes/{path.name}")
    log = area / "worker.log"
    with running_hub_server(area, token=TOKEN, connect=False) as hub, serve_files(served) as files, \
            receiving_webhooks() as receiver, running_runpod_fake() as fake, log.open("wb") as log_file:
        env = worker_env(**fake.env, DATA_DIR=str(area / "data"), ALLOW_PRIVATE_URLS="1", HF_ENDPOINT=hub.endpoint,
                         HF_TOKEN=TOKEN, HF_HOME=str(area / "hf-home"))
        process = subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=env, stdout=log_file,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            job = {"dataset_url": files.url("shapes.zip"), "trigger_word": "sks",
                   "config": {"model_family": "sdxl", "model_name": str(tiny_model), "resolution": 128,
                              "max_train_steps": 4, "checkpointing_steps": 2, "lora_rank": 4, "seed": 42,
                              "validation_prompt": "sks a red circle", "validation_steps": 4,
                              "validation_resolution": 128, "validation_num_inference_steps": 2},
                   "dataloader": {"minimum_image_size": 64},
                   "hub": {"repo_id": REPO, "checkpoints": True},
                   "webhook": {"url": receiver.url, "secret": SECRET}}
            job_id = fake.queue(job)
            result = fake.wait_for_result(job_id, timeout_s=900)
        finally:
            stop_process_group(process, grace_s=15)
        assert "output" in result, result
        yield Trained(output=result["output"], deliveries=list(receiver.deliveries), hub=hub,
                      log=log.read_text(errors="replace"))


@pytest.mark.training
def test_every_delivery_is_signed_with_the_jobs_secret_and_holds_no_token(trained):
    assert trained.deliveries
    assert all(verified(delivery, SECRET) for delivery in trained.deliveries)
    assert len({delivery.headers["webhook-id"] for delivery in trained.deliveries}) == len(trained.deliveries)
    assert not any(TOKEN in delivery.body.decode() or SECRET in delivery.body.decode()
                   for delivery in trained.deliveries)
    assert SECRET not in trained.log and TOKEN not in trained.log


@pytest.mark.training
def test_the_receiver_hears_started_checkpoints_samples_and_completed_in_order(trained):
    kinds = [delivery.payload["type"] for delivery in trained.deliveries]
    assert kinds[0] == "started" and kinds[-1] == "completed", kinds
    assert "checkpoint" in kinds and "progress" in kinds
    assert kinds.index("started") < kinds.index("checkpoint") < kinds.index("completed")
    checkpoints = [d.payload["data"] for d in trained.deliveries if d.payload["type"] == "checkpoint"]
    assert {c["step"] for c in checkpoints if not c["uploaded"]} >= {2}
    uploaded = [c for c in checkpoints if c["uploaded"]]  # where it was stored: the job's Hub repo
    assert any(c["location"] == f"hf://{REPO}/checkpoints/checkpoint-2" for c in uploaded), checkpoints
    samples = [d.payload["data"] for d in trained.deliveries if d.payload["type"] == "sample"]
    assert samples and all(s["url"].startswith(trained.hub.endpoint) and REPO in s["url"] for s in samples)
    completed = trained.deliveries[-1].payload
    assert completed["data"]["status"] == "succeeded" and completed["data"]["hub"]["repo_id"] == REPO
    assert completed["data"]["metrics"]["steps"] == 4


@pytest.mark.training
def test_the_result_counts_the_deliveries(trained):
    counts = trained.output["webhook"]
    assert counts["failed"] == 0 and counts["dropped"] == 0
    assert counts["delivered"] == len(trained.deliveries)
    assert trained.output["status"] == "succeeded"


@pytest.mark.training
def test_the_tensorboard_event_files_are_published_with_the_lora(trained, tmp_path, settings):
    files = trained.hub.repos[REPO].files
    events = {path: data for path, data in files.items() if path.startswith("runs/") and "tfevents" in path}
    assert len(events) == 1, sorted(files)
    path, data = next(iter(events.items()))
    assert path.startswith("runs/hooked-lora/events.out.tfevents.")  # the project: the repo's name
    assert TOKEN.encode() not in data
    # TensorBoard itself (the trainer env's) reads the published file back: one loss per step trained.
    local = tmp_path / "runs" / Path(path).name
    local.parent.mkdir()
    local.write_bytes(data)
    read = subprocess.run([str(settings.trainer_python), "-P", "-c", READ_SCALARS, str(local.parent)],
                          capture_output=True, text=True, timeout=120, check=True)
    scalars = json.loads(read.stdout.strip().splitlines()[-1])
    assert [step for step, _ in scalars["train/loss"]] == [1, 2, 3, 4]
    assert all(loss > 0 for _, loss in scalars["train/loss"])
    assert len(scalars["train/learning_rate"]) == 4


READ_SCALARS = """
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
log = EventAccumulator(sys.argv[1]); log.Reload()
print(json.dumps({tag: [(e.step, e.value) for e in log.Scalars(tag)] for tag in log.Tags()["scalars"]}))
"""
