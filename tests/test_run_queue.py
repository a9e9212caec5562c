"""The run queue (app/run_queue.py) and the registry that starts it (app/state.py): the queue file kept across
restarts, which runs start on which of a pod's GPUs (four faked: GPU_COUNT with TRAINER_DEVICE=cuda, and a fake
nvidia-smi listing), each run's own CUDA_VISIBLE_DEVICES reaching its accelerate config and its trainer's
environment, and two queued tiny trainings that really train one after the other on the CPU."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from app.run_queue import CPU_SLOT, QueuedRun, RunQueue, assign
from app.state import RunRegistry
from core.adapters import TrainerEnv, visible_gpu_ids
from core.adapters.gpus import parse_gpu_query, select_visible
from core.errors import ErrorCode, JobError
from core.settings import Settings
from core.spec import parse_job
from tests.conftest import tiny_job

FOUR = ["0", "1", "2", "3"]


def entry(run_id: str, gpus: int | None = None) -> QueuedRun:
    return QueuedRun(id=run_id, job={"input": {"trigger_word": run_id}}, gpus=gpus, label=f"job {run_id}")


# -- the queue file --------------------------------------------------------------------------------------------------

def test_the_queue_keeps_its_order_moves_and_removals_in_its_file_across_a_reopen(tmp_path):
    queue = RunQueue(tmp_path)
    for run_id in ("a", "b", "c"):
        queue.add(entry(run_id))
    assert queue.move("c", by=-1) and queue.move("a", by=1)
    assert [e.id for e in queue.entries()] == ["c", "a", "b"]
    assert queue.move("b", by=-1) and queue.move("c", by=5)  # the ends hold it
    assert queue.remove("a").label == "job a" and queue.remove("a") is None  # type: ignore[union-attr]
    assert not queue.move("a", by=-1)

    reopened = RunQueue(tmp_path)  # a restarted app
    assert [(e.id, e.label, e.job) for e in reopened.entries()] == [
        ("b", "job b", {"input": {"trigger_word": "b"}}), ("c", "job c", {"input": {"trigger_word": "c"}})]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["queue.json"]  # written whole: no partial file left
    assert [e["id"] for e in json.loads((tmp_path / "queue.json").read_text())["queue"]] == ["b", "c"]


def test_a_missing_or_damaged_queue_file_is_an_empty_queue(tmp_path):
    assert RunQueue(tmp_path / "none").entries() == []
    (tmp_path / "queue.json").write_text('{"queue": [')
    queue = RunQueue(tmp_path)
    assert queue.entries() == []
    queue.add(entry("a"))
    assert [e.id for e in queue.entries()] == ["a"]


# -- which runs start on which GPUs ----------------------------------------------------------------------------------

def test_four_faked_gpus_are_the_ids_a_pod_hands_out():
    pod = Settings(trainer_venv=Path("/none"), data_root=Path("/none"), device="cuda", gpu_count=4)
    assert visible_gpu_ids(pod) == FOUR
    listing = parse_gpu_query("".join(f"{i}, GPU-{i}aaa-0000, NVIDIA H100 80GB HBM3, 81559\n" for i in range(4)))
    assert [entry for entry, _ in select_visible(listing, None)] == FOUR  # what nvidia-smi's listing gives
    assert visible_gpu_ids(Settings(trainer_venv=Path("/none"), data_root=Path("/none"), device="cpu")) == []


def test_runs_asking_1_2_1_4_gpus_of_four_start_on_disjoint_gpus_and_the_4_waits():
    waiting = [("a", 1), ("b", 2), ("c", 1), ("d", 4)]
    started = assign(waiting, devices=FOUR)
    assert started == {"a": ("0",), "b": ("1", "2"), "c": ("3",)}  # d waits: every GPU is taken
    # a and c end: two GPUs free, not four; d still waits, and so does a 1-GPU run behind it (no jumping the queue)
    assert assign([("d", 4), ("e", 1)], devices=FOUR, busy=["1", "2"]) == {}
    assert assign([("e", 1), ("d", 4)], devices=FOUR, busy=["1", "2"]) == {"e": ("0",)}  # moved up: it goes
    assert assign([("d", 4)], devices=FOUR) == {"d": tuple(FOUR)}
    assert assign([("all", None), ("a", 1)], devices=FOUR) == {"all": tuple(FOUR)}  # no count: every GPU
    assert assign([("big", 5), ("a", 1)], devices=FOUR) == {}  # never fits (refused when added)


def test_without_a_gpu_the_machine_is_one_slot_one_training_at_a_time():
    assert assign([("a", None), ("b", 2)], devices=[CPU_SLOT]) == {"a": (CPU_SLOT,)}
    assert assign([("b", 2)], devices=[CPU_SLOT], busy=[CPU_SLOT]) == {}


def test_a_runs_own_gpus_reach_its_trainers_environment(tmp_path):
    share = Settings(trainer_venv=tmp_path, data_root=tmp_path, device="cuda", cuda_visible_devices="1,2")
    assert TrainerEnv(share, base={"CUDA_VISIBLE_DEVICES": "0,1,2,3"}).env(device="cuda")[
        "CUDA_VISIBLE_DEVICES"] == "1,2"
    assert TrainerEnv(share, base={}).env(device="cpu")["CUDA_VISIBLE_DEVICES"] == ""


# -- the registry on a faked four-GPU pod: dry runs through the real pipeline ----------------------------------------

def test_queued_runs_on_a_four_gpu_pod_start_on_their_own_gpus_and_plan_for_them(tmp_path, tiny_model,
                                                                                       demo_dataset):
    pod = Settings.from_env({"TRAINER_DEVICE": "cuda", "GPU_COUNT": "4", "GPU_MEMORY_GB": "80",
                             "DATA_DIR": str(tmp_path / "data")})
    hold = threading.Event()

    def captions_being_written() -> None:
        if not hold.is_set():
            raise JobError("captions are being written", code=ErrorCode.BUSY, stage="train")

    registry = RunRegistry(settings=pod, env={}, before_training=captions_being_written)
    assert registry.devices == FOUR
    ids = [registry.enqueue(parse_job(tiny_job(tiny_model, demo_dataset, dry_run=True,
                                               config={"num_processes": n}))).id for n in (1, 2, 1, 4)]
    with pytest.raises(JobError, match="num_processes 5 asks for more GPUs than this machine's 4"):
        registry.enqueue(parse_job(tiny_job(tiny_model, demo_dataset, dry_run=True, config={"num_processes": 5})))
    assert [e.id for e in registry.queued()] == ids  # held back while captions are written
    hold.set()
    started = registry.schedule()
    assert [run.id for run in started] == ids[:3]  # the 4-GPU run waits for all of them
    assert [e.id for e in registry.queued()] == ids[3:]
    deadline = time.monotonic() + 120
    while (registry.queued() or registry.busy()) and time.monotonic() < deadline:
        time.sleep(0.2)
    records = {record.id: record for record in registry.runs()}
    assert [records[run_id].status for run_id in ids] == ["succeeded"] * 4, [records[i].error for i in ids]
    planned = [json.loads((Path(records[run_id].job_dir) / "result.json").read_text())["preflight"]["gpu"]
               for run_id in ids]
    assert [gpu["gpu_count"] for gpu in planned] == [1, 2, 1, 4]  # each run's memory plan is for its own GPUs
    logs = []
    for run_id in ids:
        registry.choose(run_id)  # the Train tab follows the chosen run
        logs.append(next(line.split(" ", 1)[1] for line in registry.training().snapshot().log if " on GPU" in line))
    assert logs == ["on GPU 0", "on GPUs 1, 2", "on GPU 3", "on GPUs 0, 1, 2, 3"]


# -- two queued tiny trainings, one after the other ------------------------------------------------------------------

@pytest.mark.training
def test_two_queued_tiny_trainings_run_one_after_the_other_on_the_cpu(tmp_path, tiny_model, demo_dataset):
    registry = RunRegistry(settings=Settings.from_env({"DATA_DIR": str(tmp_path / "data")}), env={})
    assert registry.devices == [CPU_SLOT]
    job = {"config": {"max_train_steps": 1, "checkpointing_steps": 1}}
    first = registry.enqueue(parse_job(tiny_job(tiny_model, demo_dataset, **job)))
    second = registry.enqueue(parse_job(tiny_job(tiny_model, demo_dataset, trigger_word="ohwx", **job)))
    assert [e.id for e in registry.queued()] == [second.id]  # the first took the one slot at once
    assert [run.id for run in registry.trainings()] == [first.id]
    deadline = time.monotonic() + 300
    while (registry.queued() or registry.busy()) and time.monotonic() < deadline:
        time.sleep(0.5)
    records = {record.id: record for record in registry.runs()}
    assert records[first.id].status == records[second.id].status == "succeeded", records
    assert records[second.id].started_at >= records[first.id].ended_at  # one after the other
    assert records[second.id].job["input"]["trigger_word"] == "ohwx"
    assert RunQueue(tmp_path / "data").entries() == []
