"""The deadline seen from training (core/training/deadline.py), without a training: DeadlineStop on a real Cancel
with a short timeout_s, the CheckpointSaved events SimpleTuner would post, and `checkpoint-N` folders with real files
in tmp_path for latest_checkpoint and ends_partial. (test_durability.py runs the stop inside real trainings.)"""

from __future__ import annotations

import time
from pathlib import Path

from core.cancel import Cancel
from core.events import CheckpointSaved, LogLine
from core.jobdir import JobDir
from core.outputs import latest_checkpoint
from core.spec.job import parse_job
from core.training.deadline import MAX_RESERVE_S, DeadlineStop, ends_partial
from tests.conftest import tiny_job


def write_checkpoint(job: JobDir, name: str, *, complete: bool = True) -> Path:
    folder = job.output / name
    folder.mkdir(parents=True)
    (folder / "pytorch_lora_weights.safetensors").write_bytes(b"\0" * 1024)
    if complete:
        (folder / "training_state.json").write_text('{"global_step": 1}')
        (folder / ".guard").write_text("")
    return folder


def test_a_checkpoint_written_inside_the_margin_stops_training_and_says_why():
    events: list = []
    stop = DeadlineStop(Cancel(timeout_s=50), margin_s=100, on_event=events.append)
    passed_on: list = []
    sink = stop.watching(passed_on.append)
    assert stop.in_margin() and not stop.is_set() and not stop.fired
    sink(CheckpointSaved(path="/job/output/checkpoint-2", step=2))
    assert passed_on == [CheckpointSaved(path="/job/output/checkpoint-2", step=2)]
    assert stop.fired and stop.is_set() and stop.wait(0) is True
    (said,) = events
    assert isinstance(said, LogLine) and said.severity == "warning"
    assert said.message.startswith("stopping training: checkpoint-2 is written and ")
    assert said.message.endswith(" s are left before timeout_s")
    sink(CheckpointSaved(path="/job/output/checkpoint-4", step=4))
    assert len(events) == 1  # said once


def test_outside_the_margin_a_checkpoint_changes_nothing_and_no_deadline_never_fires():
    far = DeadlineStop(Cancel(timeout_s=3600), margin_s=600)
    far.watching(lambda event: None)(CheckpointSaved(path="/o/checkpoint-2", step=2))
    assert not far.in_margin() and not far.fired and not far.is_set()
    started = time.monotonic()
    assert far.wait(0.3) is False and time.monotonic() - started >= 0.25
    unlimited = DeadlineStop(Cancel(), margin_s=600)
    unlimited.watching(lambda event: None)(CheckpointSaved(path="/o/checkpoint-2", step=2))
    assert not unlimited.in_margin() and not unlimited.is_set() and not unlimited.fired


def test_the_reserve_stops_training_without_a_checkpoint_in_time_to_upload_the_last_one():
    events: list = []
    stop = DeadlineStop(Cancel(timeout_s=0.6), margin_s=2.0, on_event=events.append)
    assert stop.reserve_s == 0.5  # a quarter of the margin
    assert DeadlineStop(Cancel(), margin_s=3600).reserve_s == MAX_RESERVE_S
    assert not stop.is_set()
    started = time.monotonic()
    assert stop.wait(5) is True
    assert 0.05 < time.monotonic() - started < 1.5  # woke at the reserve, long before the 5 s asked
    assert stop.fired
    assert [e.message for e in events] == [
        "stopping training: 0 s are left before timeout_s: the rest is for uploading the latest checkpoint"]


def test_a_cancel_stops_training_but_is_no_deadline():
    cancel = Cancel(timeout_s=50)
    events: list = []
    stop = DeadlineStop(cancel, margin_s=100, on_event=events.append)
    cancel.set()
    assert stop.is_set() and stop.wait(0) is True
    stop.watching(lambda event: None)(CheckpointSaved(path="/o/checkpoint-2", step=2))
    assert not stop.fired and events == []
    other = DeadlineStop(Cancel(), margin_s=100)
    assert not other.is_set()
    Cancel.of(other).set()  # the job's Cancel shares the flag: its set() stops training too
    assert other.is_set() and not other.fired


def test_the_latest_checkpoint_is_the_newest_complete_one(tmp_path):
    job = JobDir(tmp_path / "job")
    assert latest_checkpoint(job.output) is None
    write_checkpoint(job, "checkpoint-2")
    write_checkpoint(job, "checkpoint-10")
    write_checkpoint(job, "checkpoint-12", complete=False)  # being written: no training_state.json yet
    write_checkpoint(job, "checkpoint-final")
    (job.output / "checkpoint-99").write_text("a file, not a folder")
    assert latest_checkpoint(job.output) == job.output / "checkpoint-10"


def test_ends_partial_for_the_deadline_or_a_cancel_of_a_job_that_keeps_what_it_trains(tmp_path):
    with_checkpoint = JobDir(tmp_path / "a")
    write_checkpoint(with_checkpoint, "checkpoint-4")
    without = JobDir(tmp_path / "b")
    write_checkpoint(without, "checkpoint-4", complete=False)

    def spec(**extra):
        return parse_job(tiny_job(tmp_path, tmp_path, **extra))

    plain = spec()
    keeps = [spec(hub={"repo_id": "tester/x", "on_failure": True}),
             spec(hub={"repo_id": "tester/x", "checkpoints": True}),
             spec(storage={"bucket": "b", "checkpoints": True})]
    for job in (with_checkpoint, without):
        assert ends_partial(plain, deadline=True, cancelled=False, job=job)  # the deadline: always partial
        assert not ends_partial(plain, deadline=False, cancelled=True, job=job)
    for kept in keeps:
        assert ends_partial(kept, deadline=False, cancelled=True, job=with_checkpoint)
        assert not ends_partial(kept, deadline=False, cancelled=True, job=without)  # nothing to keep
        assert not ends_partial(kept, deadline=False, cancelled=False, job=with_checkpoint)  # a failure
    assert not ends_partial(spec(hub={"repo_id": "tester/x"}), deadline=False, cancelled=True, job=with_checkpoint)
    assert not ends_partial(spec(storage={"bucket": "b"}), deadline=False, cancelled=True, job=with_checkpoint)
