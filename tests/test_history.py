"""The UI's run history (app/history.py): a restarted app lists the runs of the same data folder, and a run whose
process died (a pod restart) is listed as interrupted, with its last checkpoint and a Resume that finishes it; never
two trainers: a killed app's trainer stops by itself (its watchdog), and one that outlived even that is stopped by
the next app as it starts.

A real app process is killed mid-training (SIGKILL, as a pod restart does), then a new app on the same DATA_DIR is
driven through gradio_client; the trainers are counted by the processes at work in the job's folder. Records written
by hand check the rest: secrets, a file that is not ours."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from gradio_client import Client
from gradio_client.exceptions import AppError

from app.history import RunHistory, RunRecord
from core.settings import Settings
from tests.support.processes import processes_working_in
from tests.support.ui_port import free_port, serve_ui

ROOT = Path(__file__).resolve().parent.parent
SECRET = "hf_HistoryPlantedToken0123456789abcdXYZ"


def with_tiny_model(data_root: Path, tiny_model: Path) -> Path:
    (data_root / "models").mkdir(parents=True, exist_ok=True)
    link = data_root / "models" / "tiny-sdxl"
    if not link.exists():
        link.symlink_to(tiny_model, target_is_directory=True)
    return data_root


def wait_for(check, *, timeout_s: float, what: str) -> Any:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


@pytest.fixture
def app_in_process(tmp_path: Path) -> Iterator[Any]:
    """A function launching the app in this process on `data_root`; every app it launched is closed after."""
    launched: list[Any] = []

    def launch(data_root: Path) -> str:
        settings = Settings.from_env({**os.environ, "DATA_DIR": str(data_root)})
        ui, url = serve_ui(settings=settings, env={k: v for k, v in os.environ.items()
                                                   if k not in ("UI_PASSWORD", "UI_AUTH")})
        launched.append(ui)
        return url

    yield launch
    for ui in launched:
        ui.registry.shutdown()
        ui.blocks.close()


def tiny_form(client: Client, **overrides: Any) -> dict[str, Any]:
    from app.config_tab import PRESET_FIELDS

    _note, *config = client.predict("Tiny demo (CPU)", api_name="/apply_preset")
    *_, source, _status, trigger = client.predict("sks", api_name="/load_demo_dataset")
    return {**dict(zip(PRESET_FIELDS, config, strict=True)), "dataset": source, "trigger_word": trigger,
            "repo_id": "", "private": True, **overrides}


@pytest.mark.training
def test_a_restarted_app_lists_a_killed_run_as_interrupted_and_resume_finishes_it(tmp_path, tiny_model,
                                                                                  app_in_process):
    data_root = with_tiny_model(tmp_path / "data", tiny_model)
    port = free_port()
    env = {**os.environ, "DATA_DIR": str(data_root), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_SERVER_PORT": str(port), "TRAINER_DEVICE": "cpu"}
    env.pop("UI_PASSWORD", None)
    env.pop("UI_AUTH", None)
    with (tmp_path / "first-app.log").open("wb") as log:
        first = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for(lambda: _answers(url), timeout_s=120, what="the first app")
        client = Client(url, verbose=False)
        client.predict(**tiny_form(client, length=12, checkpoint_step_interval=2, validation_prompt=""),
                       api_name="/start_training")
        status = wait_for(lambda: (s := client.predict(api_name="/run_status"))["checkpoints"] and s,
                          timeout_s=300, what="the first checkpoint")
        job_dir = status["job_dir"]
        trainers = processes_working_in(job_dir)
    finally:  # the app is killed: nothing is written on the way out, and it stops nothing itself
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    try:  # SimpleTuner's own process group (another session) stops by itself: its watchdog saw the app go
        wait_for(lambda: not processes_working_in(job_dir), timeout_s=60, what="the killed app's trainer to stop")
    finally:
        for pid in trainers + processes_working_in(job_dir):  # only if it failed: no process outlives the test
            if _alive(pid):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
    assert trainers and status["status"] == "running" and status["step"] < 12

    client = Client(app_in_process(data_root), verbose=False)
    runs = client.predict(api_name="/run_history")
    assert [run["run"] for run in runs] == [status["id"]]
    killed = runs[0]
    assert killed["status"] == "interrupted" and killed["resumable"] is True
    assert killed["last checkpoint"].startswith("checkpoint-") and "sdxl" in killed["job"]
    history_table = json.dumps(client.predict("", api_name="/poll")[9])  # the Train tab's table, as the page gets it
    assert status["id"] in history_table and "interrupted" in history_table

    message = client.predict(status["id"], api_name="/resume_run")
    assert f"Resuming run `{status['id']}`" in message
    resumed = wait_for(lambda: (s := client.predict(api_name="/run_status"))["step"] and s, timeout_s=300,
                       what="the resumed run's first step")
    at_work = processes_working_in(resumed["job_dir"])  # one trainer: one process group, none in the old folder
    assert len({os.getpgid(pid) for pid in at_work if _alive(pid)}) == 1 and not processes_working_in(job_dir)
    done = wait_for(lambda: (s := client.predict(api_name="/run_status"))["status"] != "running" and s,
                    timeout_s=300, what="the resumed run")
    assert done["status"] == "succeeded", done.get("error")
    resumed_at = int(killed["last checkpoint"].rsplit("-", 1)[1])
    assert done["step"] == done["total_steps"] == 12
    assert min(p["step"] for p in done["losses"]) > resumed_at  # continued, not restarted
    runs = {run["run"]: run for run in client.predict(api_name="/run_history")}
    assert runs[done["id"]]["status"] == "succeeded" and runs[done["id"]]["steps"] == "12/12"
    assert runs[status["id"]]["status"] == "resumed" and not runs[status["id"]]["resumable"]
    with pytest.raises(AppError, match="no checkpoint to resume from"):
        client.predict(status["id"], api_name="/resume_run")


@pytest.mark.training
def test_a_trainer_that_outlived_its_app_and_watchdog_is_stopped_when_the_app_starts(tmp_path, tiny_model,
                                                                                   app_in_process):
    """The worst case: the app and the trainer's watchdog (the group's leader) both killed at once. SimpleTuner trains
    on as an orphan; the next app finds its group from the history (pid, group id, start time) and stops it before
    it lists the run: interrupted, and resumable only then."""
    data_root = with_tiny_model(tmp_path / "data", tiny_model)
    port = free_port()
    env = {**os.environ, "DATA_DIR": str(data_root), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_SERVER_PORT": str(port), "TRAINER_DEVICE": "cpu"}
    env.pop("UI_PASSWORD", None)
    env.pop("UI_AUTH", None)
    with (tmp_path / "first-app.log").open("wb") as log:
        first = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    job_dir = ""
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for(lambda: _answers(url), timeout_s=120, what="the first app")
        client = Client(url, verbose=False)
        client.predict(**tiny_form(client, length=60, checkpoint_step_interval=30, validation_prompt=""),
                       api_name="/start_training")
        status = wait_for(lambda: (s := client.predict(api_name="/run_status"))["step"] and s,
                          timeout_s=300, what="the first step")
        job_dir = status["job_dir"]
        trainer = json.loads((data_root / "history" / f"{status['id']}.json").read_text())["trainer"]
        assert trainer["pid"] == trainer["pgid"] and trainer["started"] > 0
        os.kill(trainer["pid"], signal.SIGKILL)  # the watchdog first: nothing is left to stop the group
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    try:
        time.sleep(3)
        orphans = processes_working_in(job_dir)
        assert orphans and {os.getpgid(pid) for pid in orphans} == {trainer["pgid"]}  # it trains on, alone

        client = Client(app_in_process(data_root), verbose=False)  # the app starts again: it stops the group
        assert not processes_working_in(job_dir)
        [run] = client.predict(api_name="/run_history")
        assert run["run"] == status["id"] and run["status"] == "interrupted"
    finally:
        for pid in processes_working_in(job_dir) if job_dir else []:  # only if it failed
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(pid), signal.SIGKILL)


def test_records_keep_no_secret_and_skip_files_that_are_not_runs(tmp_path):
    history = RunHistory(tmp_path)
    job = {"input": {"dataset": {"url": f"https://example.com/d.zip?token={SECRET}"}, "trigger_word": "sks"}}
    history.save(RunRecord(id="r1", started_at=1.0, status="failed", job=job, job_dir=str(tmp_path / "jobs" / "r1"),
                           error=f"refused {SECRET}"), secrets=[SECRET])
    (tmp_path / "history" / "junk.json").write_text("{not json")
    text = (tmp_path / "history" / "r1.json").read_text()
    assert SECRET not in text and json.loads(text)["id"] == "r1"
    [record] = history.records()
    assert record.status == "failed" and not record.resumable  # no checkpoint in its folder
    assert history.get("../r1") is None


def test_a_local_checkpoint_outside_the_data_folder_is_refused(tmp_path):
    from core.errors import ResumeError
    from core.training.local_checkpoint import copy_local_checkpoint

    outside = tmp_path / "elsewhere" / "checkpoint-2"
    outside.mkdir(parents=True)
    (outside / "training_state.json").write_text("{}")
    with pytest.raises(ResumeError) as caught:
        copy_local_checkpoint(str(outside), tmp_path / "data" / "jobs" / "j" / "output", root=tmp_path / "data")
    assert caught.value.field == "resume_from" and "inside the data folder" in caught.value.message


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).ok
    except requests.RequestException:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
