"""`python -m core`: what a person at a terminal sees, and its contract: whatever fails, stdout is the one error JSON
and the exit status 1, and the job folder says the job failed. (A real `run`, its progress lines and its result, is
test_lycoris_full.py's LyCORIS run: it trains through this command.)"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

from core.__main__ import error_payload
from tests.conftest import ROOT, tiny_job
from tests.support.http_server import serve_files


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
    assert "[checking] checking the dataset" in done.stderr
    assert json.loads((tmp_path / "work" / "result.json").read_text())["status"] == "dry_run"


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


def error_of(done: subprocess.CompletedProcess) -> dict:
    """The failed command's error payload; stdout is that one JSON document and nothing else."""
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout
    error = json.loads(done.stdout)["error"]
    assert {"code", "stage", "message", "field"} <= set(error)
    return error


def test_a_workdir_that_is_a_file_is_named(tmp_path, tiny_model, demo_dataset):
    job = tmp_path / "job.json"
    job.write_text(json.dumps(tiny_job(tiny_model, demo_dataset)))
    (tmp_path / "a-file").write_text("not a folder")
    for workdir in (tmp_path / "a-file", tmp_path / "a-file" / "job"):
        error = error_of(core_cli("check", str(job), "--workdir", str(workdir)))
        assert error["field"] == "workdir" and error["code"] == "workdir_unusable", error
        assert str(workdir) in error["message"]


def test_a_data_dir_that_cannot_hold_jobs_is_named(tmp_path, tiny_model, demo_dataset):
    job = tmp_path / "job.json"
    job.write_text(json.dumps(tiny_job(tiny_model, demo_dataset)))
    (tmp_path / "a-file").write_text("not a folder")  # the tests run as root: a path under a file is one no one can use
    done = core_cli("run", str(job), env_extra={"DATA_DIR": str(tmp_path / "a-file" / "data")})
    error = error_of(done)
    assert error["field"] == "DATA_DIR" and error["stage"] == "setup", error
    assert "Traceback" not in done.stderr


def test_an_unexpected_error_is_the_error_json_with_a_one_line_note(tmp_path):
    job = tmp_path / "deep.json"
    job.write_text("[" * 100_000 + "]" * 100_000)  # valid JSON too deep for Python's parser: not a case we handle
    done = core_cli("check", str(job), "--workdir", str(tmp_path / "work"))
    error = error_of(done)
    assert error["code"] == "internal_error" and "RecursionError" in error["message"]
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_job_file_that_is_not_text_is_named(tmp_path):
    job = tmp_path / "job.json"
    job.write_bytes(b"\xff\xfe{\x00")
    assert error_of(core_cli("check", str(job)))["field"] == "job_file"


def test_a_job_that_fails_midway_leaves_a_folder_that_says_so_without_its_presigned_url(tmp_path, tiny_model):
    signature = "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
    with serve_files(tmp_path) as server:
        url = (server.url("missing.zip") + "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE"
               f"%2F20240101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Expires=3600&X-Amz-Signature={signature}")
        job = tmp_path / "job.json"
        job.write_text(json.dumps({"dataset_url": url, "config": {"model_family": "sdxl",
                                                                  "model_name": str(tiny_model)}}))
        done = core_cli("run", str(job), "--workdir", str(tmp_path / "work"), env_extra={"ALLOW_PRIVATE_URLS": "1"})
    error = error_of(done)
    assert error["stage"] == "dataset" and error["field"] == "dataset.url", error
    recorded = json.loads((tmp_path / "work" / "result.json").read_text())
    assert recorded == {"status": "failed", "error": error}
    for text in (done.stdout, done.stderr, json.dumps(recorded)):
        assert signature not in text and "AKIAIOSFODNN7EXAMPLE" not in text
    assert "[downloading]" in done.stderr


def test_a_full_disk_is_said_as_such_with_the_file_and_the_stage():
    full = OSError(errno.ENOSPC, "No space left on device", "/data/jobs/x/dataset/d.zip")
    assert error_payload(full, stage="dataset") == {
        "code": "disk_full", "stage": "dataset", "field": None,
        "message": "no space left on the device: /data/jobs/x/dataset/d.zip: free some space, or give --workdir or "
                   "DATA_DIR on a larger disk"}
