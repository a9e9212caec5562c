"""The worker trains an edit LoRA from pairs, through runpod's production worker loop (`python -m worker` against the
local fake of RunPod's job API, tests/support/runpod_fake.py): a zip of three edit pairs (control/ folder layout) and
one target without its input, from a loopback file server; the tiny FLUX.1 Kontext for two steps; the LoRA and a card
showing pairs before and after pushed to the local Hub server. One training serves every training test here. A pair
zip with no inputs is refused before any GPU minute, naming the folder looked for (runpod's `--test_input` run)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from core.generation.demo import write_demo_dataset, write_demo_pairs
from tests.conftest import ROOT
from tests.support.http_server import serve_files
from tests.support.hub_server import HubServer, running_hub_server
from tests.support.processes import stop_process_group
from tests.support.runpod_fake import running_runpod_fake
from tests.test_worker import worker_env

TOKEN = "hf_WorkerPairsToken0123456789abcdefXYZ"
REPO = "tester/kontext-pairs-lora"
PAIRS = 3


@dataclass
class Trained:
    output: dict
    """The job's result (its `output`), as the worker posted it."""
    hub: HubServer
    log: str
    data_dir: Path


def zip_tree(folder: Path, target: Path) -> Path:
    """`folder` zipped under its own name, subfolders (control/) and all."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, f"{folder.name}/{path.relative_to(folder).as_posix()}")
    return target


def pairs_zip(area: Path) -> Path:
    """Three pairs (a circle becomes a square) and lonely.png, a target whose input is missing."""
    source = write_demo_pairs(area / "edits", count=PAIRS)
    Image.new("RGB", (128, 128), (10, 120, 200)).save(source / "lonely.png")
    (source / "lonely.txt").write_text("turn the blue circle into a square")
    return zip_tree(source, area / "served" / "edits.zip")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_kontext: Path) -> Trained:
    area = tmp_path_factory.mktemp("worker-pairs")
    served = pairs_zip(area).parent
    log = area / "worker.log"
    data_dir = area / "data"
    with running_hub_server(area, token=TOKEN, connect=False) as hub, serve_files(served) as files, \
            running_runpod_fake() as fake, log.open("wb") as log_file:
        env = worker_env(**fake.env, DATA_DIR=str(data_dir), ALLOW_PRIVATE_URLS="1", HF_ENDPOINT=hub.endpoint,
                         HF_TOKEN=TOKEN, HF_HOME=str(area / "hf-home"))
        process = subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=env, stdout=log_file,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            # No model_flavour: the tiny model's FluxKontextPipeline says kontext.
            job = {"dataset_url": files.url("edits.zip"),
                   "config": {"model_name": str(tiny_kontext), "resolution": 64, "max_train_steps": 2,
                              "checkpointing_steps": 100, "lora_rank": 2, "seed": 42},
                   "dataloader": {"minimum_image_size": 64},
                   "hub": {"repo_id": REPO}}
            job_id = fake.queue(job)
            result = fake.wait_for_result(job_id, timeout_s=900)
        finally:
            stop_process_group(process, grace_s=15)
        assert "output" in result, result
        yield Trained(output=result["output"], hub=hub, log=log.read_text(errors="replace"), data_dir=data_dir)


@pytest.mark.training
def test_the_hub_repo_holds_the_edit_lora_and_a_card_with_pairs_before_and_after(trained):
    files = trained.hub.repos[REPO].files
    lora = files["pytorch_lora_weights.safetensors"]
    header = json.loads(lora[8:8 + int.from_bytes(lora[:8], "little")])
    assert any(key.startswith("transformer.") and "lora" in key for key in header)
    card = files["README.md"].decode()
    assert "| Dataset size | 3 edit pairs |" in card and "| Steps trained | 2 |" in card
    assert "pipeline_tag: image-to-image" in card and "FluxKontextPipeline" in card
    assert ("| ![input](pairs/01-pair_000_input.png) | turn the red circle into a square | "
            "![output](pairs/01-pair_000_output.png) |") in card
    shown = sorted(name for name in files if name.startswith("pairs/"))
    assert shown == [f"pairs/{i:02d}-pair_{i - 1:03d}_{side}.png" for i in (1, 2, 3) for side in ("input", "output")]
    assert all(files[name][:8] == b"\x89PNG\r\n\x1a\n" for name in shown)
    assert str(trained.data_dir) not in card and "/jobs/" not in card  # no path on the worker's disk
    assert TOKEN not in card and TOKEN not in trained.log


@pytest.mark.training
def test_the_result_reports_the_pairs_and_the_file_left_out(trained):
    output = trained.output
    assert output["status"] == "succeeded" and output["metrics"]["steps"] == 2
    assert output["hub"]["repo_id"] == REPO
    pairs = output["preflight"]["pairs"]
    assert (pairs["pairs"], pairs["inputs_per_pair"], pairs["input_folders"]) == (PAIRS, 1, ["control"])
    assert pairs["unpaired_count"] == 1
    # The zip's lone top folder (edits/) is stepped into: names are the dataset's own.
    assert pairs["unpaired"] == [{"name": "lonely.png", "reason": "edit target without an input",
                                  "detail": "no input found at control/lonely.*"}]
    assert any("lonely.png" in warning for warning in output["warnings"])
    assert not (trained.data_dir / "jobs").exists() or not list((trained.data_dir / "jobs").iterdir())


def test_a_pair_zip_without_inputs_is_refused_naming_the_folder_looked_for(tmp_path: Path):
    zipped = zip_tree(write_demo_dataset(tmp_path / "shapes", count=3), tmp_path / "served" / "shapes.zip")
    with serve_files(zipped.parent) as files:
        for dataset, (stage, looked_for) in (
                ({}, ("preflight", "no input images were found in url http://127.0.0.1:")),
                ({"control_dir": "before"}, ("dataset", "no input found at before/demo_000.*"))):
            job = {"input": {"dataset": {"url": files.url("shapes.zip"), **dataset}, "dry_run": True,
                             "config": {"model_name": "black-forest-labs/FLUX.1-Kontext-dev", "resolution": 512}}}
            done = subprocess.run([sys.executable, "-m", "worker", "--test_input", json.dumps(job)], cwd=ROOT,
                                  capture_output=True, text=True, timeout=120,
                                  env=worker_env(DATA_DIR=str(tmp_path / "data"), HF_HUB_OFFLINE="1",
                                                 ALLOW_PRIVATE_URLS="1"))
            said = done.stdout + done.stderr
            assert done.returncode == 1, said[-3000:]
            # runpod logs the job's error payload (a dict's repr) on one line.
            error = ast.literal_eval(said.split("failed with error: ", 1)[1].splitlines()[0])
            assert (error["stage"], error["field"]) == (stage, "dataset"), error
            assert looked_for in error["message"], error["message"]
            if not dataset:  # both conventions named, so the user sees what to add
                assert "a control/ folder beside the images" in error["message"]
                assert "NAME_start.png / NAME_end.png" in error["message"]
            assert not list((tmp_path / "data" / "jobs").iterdir())
