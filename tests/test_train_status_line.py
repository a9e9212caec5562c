"""The Train tab's status line (app/train_tab.py render_status): one step count, the stage by name, and no
"cancelling" once the run has ended."""

from __future__ import annotations

import re
from pathlib import Path

from app.run import Run
from app.train_tab import render_status
from core.events import StageEvent, TrainerStage, TrainingProgress
from core.spec import parse_job
from tests.conftest import tiny_job


def line(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html.split('class="run-line">')[1]).strip()


def test_the_status_line_says_the_step_once_and_names_the_stage_after_training(tmp_path: Path):
    run = Run(kind="train", spec=parse_job(tiny_job(tmp_path / "model", tmp_path / "data")), job_dir=tmp_path)
    run.on_event(TrainingProgress(step=2, total_steps=10, loss=0.5))
    assert line(render_status(run.snapshot())) == "Training · training · step 2/10 · loss 0.5000 · 20%"
    run.on_event(TrainingProgress(step=10, total_steps=10, loss=0.25))
    run.on_event(TrainerStage(key="model_save", status="running", label="Saving the LoRA"))
    assert line(render_status(run.snapshot())).startswith("Training · saving · Saving the LoRA · step 10/10")
    run.on_event(StageEvent(stage="samples", status="started", message="rendering the samples of step 10"))
    assert "sampling · rendering the samples of step 10" in line(render_status(run.snapshot()))
    run.cancel.set()
    assert line(render_status(run.snapshot())).endswith("cancelling… · 99%")
    run.finish(status="cancelled", error={"message": "cancelled"})
    assert "cancelling" not in line(render_status(run.snapshot()))
