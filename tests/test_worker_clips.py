"""The worker trains a video LoRA from clips, through runpod's production worker loop (`python -m worker` against
the local fake of RunPod's job API, tests/support/runpod_fake.py): a zip of three synthetic clips from a loopback
file server, the tiny Wan for two steps, the LoRA and its card pushed to the local Hub server. One training serves
every test of this module."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.support.clips import write_clip
from tests.support.http_server import serve_files
from tests.support.hub_server import HubServer, running_hub_server
from tests.support.processes import stop_process_group
from tests.support.runpod_fake import running_runpod_fake
from tests.test_worker import worker_env

TOKEN = "hf_WorkerClipsToken0123456789abcdefXYZ"
REPO = "tester/wan-clips-lora"
CLIP_FRAMES = (9, 13, 17)


@dataclass
class Trained:
    output: dict
    """The job's result (its `output`), as the worker posted it."""
    result_at: float
    """When the result arrived (time.monotonic())."""
    progress: list[tuple[float, dict]]
    """Every progress update the worker posted (when it arrived, the status), in order."""
    hub: HubServer
    log: str
    """The worker's own log."""


def clips_zip(folder: Path) -> Path:
    """Three clips (9, 13, 17 frames at 8 fps, 64x64) with their captions, zipped in a folder of their own."""
    source = folder / "moves"
    for index, frames in enumerate(CLIP_FRAMES):
        write_clip(source / f"move{index}.mp4", frames=frames, caption=f"a white bar moving, take {index}")
    target = folder / "served" / "moves.zip"
    target.parent.mkdir(parents=True)
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(source.iterdir()):
            archive.write(path, f"moves/{path.name}")
    return target


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_family_model) -> Trained:
    model = tiny_family_model("wan")
    area = tmp_path_factory.mktemp("worker-clips")
    served = clips_zip(area).parent
    log = area / "worker.log"
    with running_hub_server(area, token=TOKEN, connect=False) as hub, serve_files(served) as files, \
            running_runpod_fake() as fake, log.open("wb") as log_file:
        env = worker_env(**fake.env, DATA_DIR=str(area / "data"), ALLOW_PRIVATE_URLS="1", HF_ENDPOINT=hub.endpoint,
                         HF_TOKEN=TOKEN, HF_HOME=str(area / "hf-home"))
        process = subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=env, stdout=log_file,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            job = {"dataset_url": files.url("moves.zip"), "trigger_word": "sks",
                   "config": {"model_family": "wan", "model_flavour": "t2v-480p-1.3b-2.1", "model_name": str(model),
                              "resolution": 64, "max_train_steps": 2, "checkpointing_steps": 100, "lora_rank": 2,
                              "seed": 42},
                   "dataloader": {"minimum_image_size": 32, "video": {"num_frames": 9}},
                   "hub": {"repo_id": REPO}}
            job_id = fake.queue(job)
            result = fake.wait_for_result(job_id, timeout_s=900)
            progress = [(posted.at, posted.body["output"]) for posted in fake.progress.get(job_id, [])]
        finally:
            stop_process_group(process, grace_s=15)
        assert "output" in result, result
        yield Trained(output=result["output"], result_at=fake.results[job_id].at, progress=progress, hub=hub,
                      log=log.read_text(errors="replace"))


@pytest.mark.training
def test_the_hub_repo_holds_the_lora_and_a_card_that_counts_the_clips(trained):
    files = trained.hub.repos[REPO].files
    lora = files["pytorch_lora_weights.safetensors"]
    assert len(lora) > 1000
    header = json.loads(lora[8:8 + int.from_bytes(lora[:8], "little")])
    assert any(key.startswith("transformer.") and "lora" in key for key in header)
    card = files["README.md"].decode()
    assert "sks" in card and "(wan)" in card and "Wan-AI" not in card  # the tiny model it trained, not the Hub one
    assert "| Dataset size | 3 clips (39 frames) |" in card
    assert "| Steps trained | 2 |" in card
    assert TOKEN not in card and TOKEN not in trained.log


@pytest.mark.training
def test_the_result_reports_the_clips_their_frames_and_the_published_lora(trained):
    output = trained.output
    assert output["status"] == "succeeded" and output["metrics"]["steps"] == 2
    assert output["hub"]["repo_id"] == REPO
    assert output["model_checkpoint"].endswith("/pytorch_lora_weights.safetensors")
    clips = output["preflight"]["clips"]
    assert (clips["clips"], clips["clips_usable"], clips["total_frames"]) == (3, 3, sum(CLIP_FRAMES))
    assert (clips["num_frames"], clips["samples"], clips["frame_buckets"]) == (9, 3, {"1@9": 3})
    assert clips["frames_unused"] == (13 - 9) + (17 - 9)
    assert output["preflight"]["images_usable"] == 0


@pytest.mark.training
def test_progress_was_sent_while_it_trained_on_the_clips(trained):
    # Throttled to about one a second, with only what changed: quick stages (this small download, the push) may
    # fall between two updates; SimpleTuner's start and its steps do not.
    assert trained.progress and all(at < trained.result_at for at, _ in trained.progress)
    # Two steps may pass within one update: then the first update with a step already reads "saving" (the stage
    # after the last step), still with the step and its loss.
    stages = [status["stage"] for _, status in trained.progress]
    stepped = [index for index, (_, status) in enumerate(trained.progress) if status.get("step")]
    assert "loading" in stages and stepped, stages
    assert stages.index("loading") < stepped[0]
    training = [trained.progress[index][1] for index in stepped]
    assert all(status["total_steps"] == 2 and 1 <= status["step"] <= 2 for status in training)
    assert training[-1]["loss"] is not None
