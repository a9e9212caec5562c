"""The chosen run and the run workspace of the registry (app/chosen_run.py, app/state.py), on job folders written by
hand: a restarted app (a new registry on the same data folder) finds the newest run that succeeded, a run chosen
instead, its files under its own name, and deletes a run only when it is not running. A trainer an earlier app left
at work (a real process group) is stopped when the app starts, and blocks Resume and a new training until then."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.chosen_run import ChosenRun, load_result, save_result
from app.history import RunRecord, describe, published_links, short_place
from app.state import RunRegistry
from core.adapters import ProcessMark
from core.errors import JobError
from core.outputs import GUARD_FILE, LORA_FILE, STATE_FILE
from core.result import JobResult, Metrics
from core.settings import Settings
from core.spec import parse_job
from tests.conftest import tiny_job

SECRET = "hf_ChosenRunPlantedToken0123456789abcdXY"


def job_folder(data: Path, run_id: str, *, lora: bytes | None = b"lora", checkpoint: int | None = None) -> Path:
    """A job folder as a training leaves it: SimpleTuner's config, the LoRA, a complete checkpoint."""
    folder = data / "jobs" / run_id
    (folder / "trainer" / "config").mkdir(parents=True)
    (folder / "trainer" / "config" / "config.json").write_text(json.dumps({"--model_type": "lora",
                                                                            "--resolution": 128}))
    (folder / "trainer" / "config" / "multidatabackend.json").write_text("[]")
    (folder / "output").mkdir()
    if lora is not None:
        (folder / "output" / LORA_FILE).write_bytes(lora)
    if checkpoint is not None:
        saved = folder / "output" / f"checkpoint-{checkpoint}"
        saved.mkdir()
        for name in (STATE_FILE, GUARD_FILE):
            (saved / name).write_text("{}")
        (saved / LORA_FILE).write_bytes(b"early")
    return folder


def record(data: Path, run_id: str, *, status: str, started_at: float, trainer: ProcessMark | None = None,
           **folder: object) -> RunRecord:
    made = RunRecord(id=run_id, started_at=started_at, status=status, job_dir=str(job_folder(data, run_id, **folder)),
                     job=parse_job(tiny_job(data / "model", data / "dataset")).to_job_json(), steps=10,
                     total_steps=10, loss=0.25, trainer=trainer.to_dict() if trainer else None)
    return made


def registry(data: Path) -> RunRegistry:
    return RunRegistry(settings=Settings(data_root=data, trainer_venv=data / "no-venv"), env={})


def sleeping_group() -> subprocess.Popen:
    """A trainer stand-in: its own process group, with a worker in it."""
    return subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; subprocess.Popen([sys.executable, "
                             "'-c', 'import time; time.sleep(600)']); time.sleep(600)"], start_new_session=True)


def mark_of(process: subprocess.Popen) -> ProcessMark:
    deadline = time.monotonic() + 10
    mark = ProcessMark.of(process.pid)
    while mark is not None and len(mark.members()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mark is not None
    return mark


def test_a_restarted_app_chooses_the_newest_run_that_succeeded_and_names_its_downloads(tmp_path):
    data = tmp_path / "data"
    first = registry(data)
    for run_id, status, started in (("old", "succeeded", 1.0), ("new", "succeeded", 2.0), ("newest", "failed", 3.0)):
        first.history.save(record(data, run_id, status=status, started_at=started,
                                  lora=b"lora of " + run_id.encode(), checkpoint=5), secrets=[])
    app = registry(data)  # a restart: nothing in memory, everything from the data folder
    chosen = app.chosen()
    assert chosen is not None and chosen.id == "new" and chosen.lora_path == data / "jobs/new/output" / LORA_FILE
    assert chosen.result is not None and chosen.result.kind == "lora"  # rebuilt from the folder
    assert chosen.checkpoints() == [("checkpoint-5", 5)]
    files = chosen.downloads()
    assert {key: path.name for key, path in files.items()} == {"job": "new.json", "lora": "new-lora.safetensors"}
    assert files["lora"].read_bytes() == b"lora of new"
    assert json.loads(files["job"].read_text())["input"]["trigger_word"] == "sks"

    assert app.choose("old").id == "old" and app.chosen().id == "old"  # type: ignore[union-attr]
    failed = app.choose("newest")
    assert failed.result is None and failed.lora_path is None and "lora" not in failed.downloads()
    with pytest.raises(JobError, match="no run 'nope'"):
        app.choose("nope")
    with pytest.raises(JobError, match="has no trained LoRA"):
        app.start_publish(repo_id="tester/x", private=True, token=None)


def test_a_saved_result_comes_back_whole_and_without_secrets(tmp_path):
    folder = job_folder(tmp_path, "r1")
    result = JobResult(status="succeeded", job_dir=folder, output_dir=folder / "output",
                       lora_path=folder / "output" / LORA_FILE, metrics=Metrics(steps=10, losses=[0.5, 0.25]),
                       validation=[("validation_images/step_10_a.png", "sks a circle")],
                       warnings=[f"pushed with {SECRET}"], trainer_files={"config.json": {"--resolution": 128}})
    save_result(result, secrets=[SECRET])
    assert SECRET not in (folder / "result.json").read_text()
    back = load_result(folder)
    assert back is not None and back.metrics.losses == [0.5, 0.25] and back.lora_path == result.lora_path
    assert back.validation == result.validation and back.trainer_files == result.trainer_files


def test_deleting_a_run_removes_its_folder_and_record_but_never_a_running_one(tmp_path):
    data = tmp_path / "data"
    app = registry(data)
    app.history.save(record(data, "done", status="succeeded", started_at=1.0), secrets=[])
    app.history.save(record(data, "elsewhere", status="failed", started_at=2.0), secrets=[])
    cache_entry = data / "cache" / "entries" / "dataset" / "k" / "data" / "a.png"  # a cache file linked into the job
    cache_entry.parent.mkdir(parents=True)
    cache_entry.write_bytes(b"png")
    os.link(cache_entry, data / "jobs" / "done" / "a.png")
    app.choose("done")
    assert app.delete("done").id == "done"
    assert not (data / "jobs" / "done").exists() and app.history.get("done") is None
    assert cache_entry.read_bytes() == b"png"  # the cache keeps its entry
    assert app.chosen() is None  # nothing else succeeded
    with pytest.raises(JobError, match="no run 'done'"):
        app.delete("done")

    group = sleeping_group()
    try:
        app.history.save(record(data, "training", status="running", started_at=3.0, trainer=mark_of(group)),
                         secrets=[])
        with pytest.raises(JobError, match="is running") as caught:
            app.delete("training")
        assert caught.value.code == "busy" and (data / "jobs" / "training").is_dir()
    finally:
        os.killpg(group.pid, signal.SIGKILL)
        group.wait()


def test_a_trainer_left_at_work_blocks_resume_and_training_until_the_next_start_stops_it(tmp_path):
    data = tmp_path / "data"
    app = registry(data)
    group = sleeping_group()
    try:
        mark = mark_of(group)
        app.history.save(record(data, "orphan", status="running", started_at=1.0, trainer=mark, checkpoint=5),
                         secrets=[])
        [listed] = app.runs()
        assert listed.status == "running" and not listed.resumable  # its trainer works on: no second one
        with pytest.raises(JobError, match="has no checkpoint to resume from \\(running\\)"):
            app.resume("orphan")
        with pytest.raises(JobError, match="trainer of run orphan is still at work") as caught:
            app.start_training(parse_job(tiny_job(tmp_path / "model", tmp_path / "dataset")))
        assert caught.value.code == "busy"

        restarted = registry(data)  # the app starts again: it stops the group, and the run may resume
        group.wait(timeout=30)
        assert restarted.stopped_at_start == ["orphan"] and not mark.alive()
        [after] = restarted.runs()
        assert after.status == "interrupted" and after.resumable and "stopped when the app started" in after.error
    finally:
        if group.poll() is None:
            os.killpg(group.pid, signal.SIGKILL)
            group.wait()


def test_a_reused_pid_is_not_the_runs_trainer(tmp_path):
    data = tmp_path / "data"
    app = registry(data)
    me = ProcessMark.of(os.getpid())
    assert me is not None
    impostor = ProcessMark(pid=me.pid, pgid=me.pgid, started=me.started + 1)  # the same pid, started at another time
    app.history.save(record(data, "gone", status="running", started_at=1.0, trainer=impostor, checkpoint=5),
                     secrets=[])
    [listed] = app.runs()
    assert listed.status == "interrupted" and listed.resumable
    assert registry(data).stopped_at_start == []  # and nothing of this process is signalled


def test_history_cells_stay_short():
    assert short_place("http://127.0.0.1:5000/tester/demo-lora") == "tester/demo-lora"
    assert short_place("https://huggingface.co/tester/demo-lora/resolve/main/x.safetensors") == "tester/demo-lora"
    assert short_place("https://bucket.s3.amazonaws.com/loras/job/x.safetensors?X-Amz-Signature=abc") == \
        "bucket/…/x.safetensors"
    assert short_place("s3://bucket/loras/job/x.safetensors") == "bucket/…/x.safetensors"
    made = RunRecord(id="r", started_at=1.0, status="succeeded", job_dir="/nowhere",
                     job={"input": {"config": {"model_family": "sdxl", "model_name": "/data/models/tiny-sdxl"},
                                    "trigger_word": "sks"}},
                     published=["http://hub/tester/demo-lora", "http://hub/tester/demo-lora/resolve/main/a"])
    row = describe(made)
    assert row[5] == "tester/demo-lora" and row[7] == "sdxl, tiny-sdxl, sks"
    assert published_links(made.published) == [("tester/demo-lora", "http://hub/tester/demo-lora")]


def test_a_chosen_run_of_a_full_fine_tune_has_no_lora_download(tmp_path):
    data = tmp_path / "data"
    app = registry(data)
    app.history.save(record(data, "full", status="succeeded", started_at=1.0, lora=None), secrets=[])
    chosen = ChosenRun.of(app.history.get("full"))  # type: ignore[arg-type]
    assert chosen.result is None and chosen.lora_path is None  # no LoRA file, no pipeline/: nothing to rebuild
