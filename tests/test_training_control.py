"""Acting on a running training (core/training/control.py): "save a checkpoint now" and "render samples now" reach
SimpleTuner 4.10.1 through the request file its train.py polls at every step. One real training of the tiny SDXL
(six steps, no checkpoint or sample scheduled before the end) asks for both at its first step; the same job's
webhook goes to a receiver that never answers, which costs the job its bounded delivery attempts, not its result."""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from core.events import Event, TrainingProgress, ValidationImage
from core.outputs import checkpoint_step, checkpoints
from core.pipeline import run_job
from core.result import JobResult
from core.spec import parse_job
from core.training import TrainingControl
from core.training.control import NOT_TRAINING, SIGNAL_ENV, SIGNAL_FILE, can_sample
from tests.conftest import tiny_job
from tests.support.webhook_receiver import silent_receiver

STEPS = 6
SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def test_requests_are_counts_in_the_file_simpletuner_polls(tmp_path):
    control = TrainingControl()
    assert control.request_checkpoint() == NOT_TRAINING
    env = control.attach(tmp_path, samples=False)
    assert env == {SIGNAL_ENV: str(tmp_path / SIGNAL_FILE)}
    assert json.loads((tmp_path / SIGNAL_FILE).read_text()) == {}
    assert control.request_checkpoint() is None and control.request_checkpoint() is None
    assert json.loads((tmp_path / SIGNAL_FILE).read_text()) == {"manual_checkpoint": 2}
    assert "no sample prompts" in (control.request_samples() or "")
    control.detach()
    assert control.request_samples() == NOT_TRAINING
    assert can_sample({"--validation_prompt": "a cat"}) and not can_sample({"--validation_prompt": "a cat",
                                                                             "--validation_disable": True})


@dataclass
class Controlled:
    result: JobResult
    events: list[Event]
    asked: list[str | None]


@pytest.fixture(scope="module")
def controlled(tmp_path_factory, tiny_model, settings) -> Controlled:
    from core.generation.demo import write_demo_dataset

    base = tmp_path_factory.mktemp("control")
    dataset = write_demo_dataset(base / "dataset", count=4)
    control, events, asked = TrainingControl(), [], []
    once = threading.Lock()

    def on_event(event: Event) -> None:
        events.append(event)
        if isinstance(event, TrainingProgress) and event.step == 1 and once.acquire(blocking=False):
            asked.extend([control.request_checkpoint(), control.request_samples()])

    with silent_receiver() as url:
        job = tiny_job(tiny_model, dataset, config={
            "max_train_steps": STEPS, "checkpointing_steps": 100, "validation_prompt": "sks a red circle",
            "validation_steps": 100, "validation_resolution": 128, "validation_num_inference_steps": 2},
            webhook={"url": url, "secret": SECRET})
        result = run_job(parse_job(job), base / "job", on_event, control=control,
                         settings=replace(settings, allow_private_urls=True))  # the loopback receiver
    return Controlled(result=result, events=events, asked=asked)


@pytest.mark.training
def test_a_checkpoint_asked_for_at_the_first_step_is_saved_before_the_end(controlled):
    assert controlled.asked == [None, None]
    steps = [checkpoint_step(path) for path in checkpoints(Path(controlled.result.job_dir) / "output")]
    assert len(steps) == 1 and 1 <= steps[0] < STEPS, steps  # none was scheduled: this is the one asked for
    assert controlled.result.status == "succeeded" and controlled.result.metrics.steps == STEPS


@pytest.mark.training
def test_samples_asked_for_at_the_first_step_are_rendered_before_the_end(controlled):
    early = [event for event in controlled.events
             if isinstance(event, ValidationImage) and event.step is not None and event.step < STEPS]
    assert early and all(Path(event.path).is_file() for event in early)
    assert any(event.prompt == "sks a red circle" for event in early)


@pytest.mark.training
def test_a_receiver_that_never_answers_costs_deliveries_not_the_result(controlled):
    counts = controlled.result.webhook
    assert counts is not None and counts["delivered"] == 0
    assert counts["failed"] >= 1 and counts["failed"] + counts["dropped"] >= 3  # started, checkpoint, completed
    assert controlled.result.to_output()["webhook"] == counts
