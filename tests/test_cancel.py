"""The job's stop signal (core/cancel.py) and what it stops: a dataset download that trickles from a real loopback
server is stopped within seconds by a cancel from the core, the command line, the worker and the UI, and by the
job's timeout_s, with the error naming the dataset stage."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from core.cancel import Cancel
from core.errors import JobCancelled, JobTimeout
from core.events import StageEvent
from core.generation.demo import write_demo_dataset
from core.pipeline import run_job
from core.settings import Settings
from core.spec.job import parse_job
from tests.conftest import ROOT
from tests.support.http_server import FileServer, serve_files

CONFIG = {"model_family": "sdxl", "model_name": "stabilityai/stable-diffusion-xl-base-1.0", "resolution": 128,
          "max_train_steps": 10}


# -- the Cancel itself ---------------------------------------------------------------------------------------------


def test_a_cancel_is_an_event_that_raises_the_jobs_error():
    cancel = Cancel()
    assert not cancel.is_set() and cancel.remaining() is None
    cancel.check("while doing nothing")  # not set: returns
    threading.Timer(0.2, cancel.set).start()
    started = time.monotonic()
    assert cancel.wait(30) is True and time.monotonic() - started < 2  # the wait ends at the cancel
    assert cancel.is_set() and cancel.cancelled
    with pytest.raises(JobCancelled) as caught:
        cancel.check("while downloading x.zip", stage="dataset")
    assert caught.value.to_payload() == {"code": "cancelled", "stage": "dataset", "field": None,
                                         "message": "cancelled while downloading x.zip"}


def test_the_deadline_counts_as_set_and_raises_a_timeout():
    cancel = Cancel(timeout_s=0.3)
    assert not cancel.is_set() and 0 < cancel.remaining() <= 0.3
    started = time.monotonic()
    assert cancel.wait(30) is True and 0.25 < time.monotonic() - started < 2  # ends at the deadline
    assert cancel.is_set() and not cancel.cancelled and cancel.remaining() == 0
    with pytest.raises(JobTimeout) as caught:
        cancel.check("during training at step 3")
    assert caught.value.code == "timeout" and caught.value.message == (
        "stopped by the time limit (timeout_s=0.3) during training at step 3")


def test_a_job_cancel_shares_the_callers_flag_and_keeps_the_sooner_deadline():
    event = threading.Event()
    job = Cancel.of(event, timeout_s=3600)
    assert job.deadline is not None and not job.is_set()
    event.set()  # the face sets its own Event: the job sees it
    assert job.is_set() and job.cancelled
    tight = Cancel(timeout_s=1)
    assert Cancel.of(tight, timeout_s=3600).deadline == tight.deadline
    assert Cancel.of(tight) is tight
    assert Cancel.of(None).deadline is None
    loose = Cancel.of(Cancel(timeout_s=3600), timeout_s=1)
    assert loose.remaining() <= 1 and loose.timeout_s == 1
    loose.set()
    assert loose.cancelled


# -- a trickling dataset download, stopped from every face ------------------------------------------------------


@pytest.fixture
def trickling(tmp_path: Path):
    """A loopback server whose slow.zip (a real dataset zip) arrives at 2 kB/s: minutes for the whole file."""
    import shutil

    served = tmp_path / "served"
    served.mkdir()
    shutil.make_archive(str(served / "slow"), "zip", write_demo_dataset(tmp_path / "demo", count=6))
    with serve_files(served) as server:
        server.trickle["slow.zip"] = 2000
        yield server


def local(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"ALLOW_PRIVATE_URLS": "1", "DATA_DIR": str(tmp_path / "data"), "TRAINER_DEVICE": "cpu",
                              **env})


def job(server: FileServer, **extra) -> dict:
    return {"dataset_url": server.url("slow.zip"), "config": dict(CONFIG), **extra}


def when_downloading(server: FileServer, action, *, after_s: float = 0.3) -> threading.Thread:
    """Run `action` once the server has been asked for slow.zip (and `after_s` more): mid-download."""
    def body() -> None:
        deadline = time.monotonic() + 60
        while not any(name == "slow.zip" for _, name, _ in server.requests) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(after_s)
        action()

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread


def stages(events: list) -> list[tuple[str, str]]:
    return [(e.stage, e.status) for e in events if isinstance(e, StageEvent)]


def test_a_cancel_during_the_dataset_download_stops_the_job_within_seconds(tmp_path, trickling):
    cancel = Cancel()
    asked: list[float] = []
    when_downloading(trickling, lambda: (asked.append(time.monotonic()), cancel.set()))
    events: list = []
    with pytest.raises(JobCancelled) as caught:
        run_job(parse_job(job(trickling)), tmp_path / "job", events.append, settings=local(tmp_path), cancel=cancel)
    assert time.monotonic() - asked[0] < 3
    assert caught.value.code == "cancelled" and caught.value.stage == "dataset"
    assert stages(events) == [("validate", "started"), ("validate", "completed"), ("dataset", "started"),
                              ("dataset", "failed")]


def test_timeout_s_covers_the_whole_job_from_the_dataset_on(tmp_path, trickling):
    started = time.monotonic()
    with pytest.raises(JobTimeout) as caught:
        run_job(parse_job(job(trickling, timeout_s=2)), tmp_path / "job", settings=local(tmp_path))
    assert 1.8 < time.monotonic() - started < 5
    payload = caught.value.to_payload()
    assert payload["code"] == "timeout" and payload["stage"] == "dataset" and "timeout_s=2" in payload["message"]


def test_ctrl_c_stops_the_command_line_during_the_download(tmp_path, trickling):
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(job(trickling)))
    env = {**os.environ, "ALLOW_PRIVATE_URLS": "1", "DATA_DIR": str(tmp_path / "data")}
    process = subprocess.Popen([sys.executable, "-m", "core", "run", str(job_file), "--workdir", str(tmp_path / "w")],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    asked: list[float] = []
    when_downloading(trickling, lambda: (asked.append(time.monotonic()), process.send_signal(signal.SIGINT)))
    try:
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert time.monotonic() - asked[0] < 3, stderr[-2000:]
    assert process.returncode == 1, stderr[-2000:]
    error = json.loads(stdout)["error"]
    assert error["code"] == "cancelled" and error["stage"] == "dataset"


def test_runpods_cancel_stops_the_worker_during_the_download(tmp_path, trickling):
    from worker.handler import run_pipeline

    events: list = []
    spec = parse_job(job(trickling))

    async def cancel_mid_download() -> float:
        task = asyncio.create_task(run_pipeline(spec, tmp_path / "job", events.append, settings=local(tmp_path)))
        while not any(name == "slow.zip" for _, name, _ in trickling.requests):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        asked = time.monotonic()
        task.cancel()  # what runpod does on /cancel
        with pytest.raises(asyncio.CancelledError):
            await task
        return asked

    asked = asyncio.run(cancel_mid_download())
    assert time.monotonic() - asked < 3
    failed = [e for e in events if isinstance(e, StageEvent) and e.status == "failed"]
    assert [(e.stage, e.message.split(" ")[0]) for e in failed] == [("dataset", "cancelled")]


def test_the_uis_cancel_stops_a_run_during_the_download(tmp_path, trickling):
    from app.state import RunRegistry

    registry = RunRegistry(settings=local(tmp_path), env={})
    run = registry.start_training(parse_job(job(trickling)))
    asked: list[float] = []
    when_downloading(trickling, lambda: (asked.append(time.monotonic()), registry.cancel_training())).join(60)
    assert run.thread is not None
    run.thread.join(10)
    assert time.monotonic() - asked[0] < 3
    assert run.status == "cancelled" and run.error is not None
    assert run.error["code"] == "cancelled" and run.error["stage"] == "dataset"
