"""A tiny FLUX.1 Kontext: `python -m core demo-model DIR --family flux --flavour kontext` builds it offline, and an
edit LoRA really trains on it from four synthetic pairs through `python -m core run` on CPU (two steps)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.generation.demo import write_demo_pairs
from tests.conftest import ROOT


def core_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, env=dict(os.environ), capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.mark.trainer_env
def test_the_cli_builds_a_tiny_kontext(tmp_path):
    done = core_cli("demo-model", str(tmp_path / "kontext"), "--family", "flux", "--flavour", "kontext")
    assert done.returncode == 0, done.stderr[-3000:]
    index = json.loads((tmp_path / "kontext" / "model_index.json").read_text())
    assert index["_class_name"] == "FluxKontextPipeline" and index["transformer"] == ["diffusers",
                                                                                       "FluxTransformer2DModel"]


def test_the_cli_refuses_a_flavour_the_tiny_family_has_not(tmp_path):
    done = core_cli("demo-model", str(tmp_path / "m"), "--family", "sd3", "--flavour", "kontext")
    assert done.returncode == 1 and "the tiny sd3 model has no flavour 'kontext'" in done.stdout
    assert not (tmp_path / "m").exists()


@pytest.mark.training
def test_an_edit_lora_trains_on_tiny_kontext_from_pairs(tmp_path, tiny_kontext):
    pairs = write_demo_pairs(tmp_path / "pairs", count=4)
    # No model_flavour: the model's FluxKontextPipeline says kontext.
    job = {"dataset": {"path": str(pairs)},
           "config": {"model_name": str(tiny_kontext), "resolution": 64, "max_train_steps": 2,
                      "checkpointing_steps": 100, "lora_rank": 2, "seed": 42},
           "dataloader": {"minimum_image_size": 64}}
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    done = core_cli("run", str(path), "--workdir", str(tmp_path / "work"))
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["status"] == "succeeded" and result["metrics"]["steps"] == 2
    assert result["preflight"]["pairs"]["pairs"] == 4 and result["preflight"]["pairs"]["inputs_per_pair"] == 1
    assert Path(result["model_checkpoint"]).stat().st_size > 0
    config = json.loads((tmp_path / "work" / "trainer" / "config" / "config.json").read_text())
    assert config["--model_flavour"] == "kontext"
    log = (tmp_path / "work" / "training.log").read_text(errors="replace")
    # SimpleTuner read the inputs as the targets' conditioning, aligned by file name.
    assert "Connected conditioning datasets: ['control']" in log
    assert "Duplicating metadata for reference_strict conditioning dataset from dataset" in log
    staged = sorted(p.name for p in (tmp_path / "work" / "dataset" / "control").glob("*.png"))
    assert staged == [f"pair_{i:03d}.png" for i in range(4)]
