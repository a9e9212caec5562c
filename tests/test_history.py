"""The UI's run history (app/history.py): a restarted app lists the runs of the same data folder, and a run whose
process died (a pod restart) is listed as interrupted, with its last checkpoint and a Resume that finishes it.

A real app process is killed mid-training (SIGKILL, as a pod restart does), then a new app on the same DATA_DIR is
driven through gradio_client. Records written by hand check the rest: secrets, a file that is not ours."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
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
    from app.job_form import FIELDS

    _note, *config = client.predict("Tiny demo (CPU)", api_name="/apply_preset")
    *_, source, _status, trigger = client.predict("sks", api_name="/load_demo_dataset")
    return {**dict(zip(FIELDS[:16], config, strict=True)), "dataset": source, "trigger_word": trigger,
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
    finally:  # the pod goes away: the app and SimpleTuner die at once, nothing is written on the way out
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    for pid in trainers + processes_working_in(job_dir):  # SimpleTuner's own process group dies with the pod too
        if _alive(pid):
            os.killpg(os.getpgid(pid), signal.SIGKILL)
    assert status["status"] == "running" and status["step"] < 12

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
