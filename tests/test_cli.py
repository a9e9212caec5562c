"""`python -m core`: what a person at a terminal sees."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, tiny_job


def core_cli(*args: str, env_extra: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_check_prints_the_resolved_simpletuner_files(tmp_path, tiny_model, demo_dataset):
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"input": tiny_job(tiny_model, demo_dataset)}))
    done = core_cli("check", str(job), "--workdir", str(tmp_path / "work"))
    assert done.returncode == 0, done.stdout + done.stderr
    output = json.loads(done.stdout)
    assert output["status"] == "dry_run"
    assert output["trainer_files"]["config.json"]["--pretrained_model_name_or_path"] == str(tiny_model)
    assert output["trainer_files"]["multidatabackend.json"][-1]["dataset_type"] == "text_embeds"
    assert output["preflight"]["images_usable"] == 6
    assert "[stage] stage=preflight status=completed" in done.stderr


def test_a_bad_job_prints_the_error_json_and_exits_non_zero(tmp_path, tiny_model, demo_dataset):
    job = tmp_path / "job.json"
    job.write_text(json.dumps(tiny_job(tiny_model, demo_dataset, config={"max_train_steps": -3})))
    done = core_cli("run", str(job), "--workdir", str(tmp_path / "work"))
    assert done.returncode == 1
    error = json.loads(done.stdout)["error"]
    assert error["field"] == "config.max_train_steps" and error["stage"] == "validate"
    assert not (tmp_path / "work").exists()


def test_a_missing_job_file_is_named(tmp_path):
    done = core_cli("run", str(tmp_path / "nope.json"))
    assert done.returncode == 1
    assert json.loads(done.stdout)["error"]["field"] == "job_file" and "nope.json" in done.stdout


def test_demo_dataset_writes_captioned_images(tmp_path):
    done = core_cli("demo-dataset", str(tmp_path / "ds"), "--count", "3")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == [
        "demo_000.png", "demo_000.txt", "demo_001.png", "demo_001.txt", "demo_002.png", "demo_002.txt"]


@pytest.mark.training
def test_run_trains_and_prints_progress_then_the_result(tmp_path, tiny_model, demo_dataset):
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"input": tiny_job(tiny_model, demo_dataset)}))
    done = core_cli("run", str(job), "--workdir", str(tmp_path / "work"), timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    progress = [line for line in done.stderr.splitlines() if line.startswith("[train] step ")]
    assert [line.split()[2] for line in progress] == [f"{n}/10" for n in range(1, 11)]
    result = json.loads(done.stdout)
    assert result["status"] == "succeeded" and result["metrics"]["steps"] == 10
    assert (tmp_path / "work" / "output" / "pytorch_lora_weights.safetensors").stat().st_size > 0
