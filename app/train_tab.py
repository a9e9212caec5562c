"""Train tab: start, a progress bar, the live loss plot, the log tail, validation images, the sample grid (images,
or a video family's clips as players: app/sample_grid.py), Cancel.

The run lives in the registry on the server; this tab polls a snapshot every second (gr.Timer), so no request
waits for training and a reloaded page picks the run up again.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from app.edge import surface
from app.form_view import FormView
from app.history import COLUMN_WIDTHS, COLUMNS, describe
from app.job_form import spec_from_form
from app.run import Run, RunSnapshot
from app.sample_grid import gallery_items, render_videos, sample_cells
from app.state import RunRegistry
from core.cache import describe as describe_reuse
from core.outputs import checkpoint_name, checkpoint_step
from core.result import human_duration
from core.secrets import scrub

POLL_S = 1.0
RAW_LOG_LINES = 30
STATUS_WORDS = {"running": "Training", "succeeded": "Finished", "failed": "Failed", "cancelled": "Cancelled"}


@dataclass
class TrainTab:
    start_button: gr.Button
    cancel_button: gr.Button
    message: gr.Markdown
    status: gr.HTML
    loss: gr.LinePlot
    validation: gr.Gallery
    log: gr.Textbox
    raw_log: gr.Textbox
    summary: gr.Markdown
    timer: gr.Timer
    seen: gr.State
    samples: gr.Gallery
    """The sample grid: a row per checkpoint, a column per prompt."""
    sample_videos: gr.HTML
    """The same grid for a video family: players with their poster and controls."""
    marks: gr.HTML
    """The checkpoints, marked on the loss plot's step axis."""
    history: gr.Dataframe
    """Every run of this data folder, kept across restarts (app/history.py)."""
    resume_choice: gr.Dropdown
    resume_button: gr.Button
    checkpoint_button: gr.Button
    """Asks the running training for a checkpoint at its next step."""
    samples_button: gr.Button
    """Asks the running training to render its sample prompts at its next step."""


def build() -> TrainTab:
    with gr.Tab("Train", id="train"):
        gr.Markdown("Trains the job of the Config tab on the Dataset tab's dataset. The run lives on the server: "
                    "close or reload this page and come back to it. One training at a time.")
        with gr.Row():
            start_button = gr.Button("Start training", variant="primary")
            cancel_button = gr.Button("Cancel", variant="stop", interactive=False)
            checkpoint_button = gr.Button("Save a checkpoint now", size="sm")
            samples_button = gr.Button("Render samples now", size="sm")
        message = gr.Markdown()
        status = gr.HTML(render_status(None))
        with gr.Row():
            loss = gr.LinePlot(no_losses(), x="step", y="loss", title="Loss", x_title="step", y_title="loss",
                               height=280, scale=3)
            validation = gr.Gallery(label="Validation images", columns=2, height=280, scale=2, interactive=False)
        marks = gr.HTML(render_marks([], None))
        samples = gr.Gallery(label="Samples: a row per checkpoint, a column per prompt (click for full size)",
                             columns=1, height="auto", interactive=False, object_fit="contain", visible=False)
        sample_videos = gr.HTML("", label="Samples: a row per checkpoint, a column per prompt", visible=False,
                                elem_id="sample-videos")
        log = gr.Textbox(label="Log", lines=12, max_lines=12, interactive=False, autoscroll=True)
        with gr.Accordion("SimpleTuner output (training.log)", open=False):
            raw_log = gr.Textbox(show_label=False, lines=12, max_lines=12, interactive=False, autoscroll=True,
                                 elem_classes=["mono"])
        summary = gr.Markdown()
        with gr.Accordion("Run history", open=True):
            history = gr.Dataframe(headers=COLUMNS, interactive=False, wrap=True, column_widths=COLUMN_WIDTHS)
            with gr.Row():
                resume_choice = gr.Dropdown(label="Resume an interrupted run from its last checkpoint", choices=[],
                                            scale=3)
                resume_button = gr.Button("Resume", scale=1)
        timer = gr.Timer(POLL_S)
        seen = gr.State("")
    return TrainTab(start_button, cancel_button, message, status, loss, validation, log, raw_log, summary, timer,
                    seen, samples, sample_videos, marks, history, resume_choice, resume_button, checkpoint_button,
                    samples_button)


def no_losses() -> pd.DataFrame:
    return pd.DataFrame({"step": pd.Series(dtype="int64"), "loss": pd.Series(dtype="float64")})


def render_status(snap: RunSnapshot | None) -> str:
    """The progress bar: stage, step/total, ETA. role=progressbar carries the percentage for tools and tests."""
    if snap is None:
        return ('<div class="run-status" data-status="idle"><div class="run-line">No training yet.</div>'
                '</div>')
    percent = round(snap.percent)
    parts = [f"<b>{STATUS_WORDS.get(snap.status, snap.status)}</b>", html.escape(snap.stage)]
    if snap.detail and snap.running:
        parts.append(html.escape(snap.detail[:120]))
    if snap.total_steps:
        parts.append(f"step {snap.step}/{snap.total_steps}")
    if snap.losses:
        parts.append(f"loss {snap.losses[-1][1]:.4f}")
    if snap.running and snap.eta_s is not None:
        parts.append(f"ETA {human_duration(snap.eta_s)}")
    if snap.cancel_requested and snap.running:
        parts.append("cancelling…")
    return (f'<div class="run-status" data-status="{snap.status}">'
            f'<div class="run-bar" role="progressbar" aria-valuemin="0" aria-valuemax="100" '
            f'aria-valuenow="{percent}"><div class="run-fill" style="width:{percent}%"></div></div>'
            f'<div class="run-line">{" · ".join(parts)} · {percent}%</div></div>')


def render_summary(snap: RunSnapshot) -> str:
    if snap.running:
        return f"Run `{snap.id}` in `{snap.job_dir}`."
    if snap.status == "succeeded" and snap.output:
        metrics = snap.output["metrics"]
        loss = f", final loss {metrics['loss']:.4f}" if metrics.get("loss") is not None else ""
        lines = [f"**Finished** in {metrics['elapsed_time']}: {metrics['steps']} steps{loss}.",
                 f"LoRA: `{snap.lora_path}`. Push it to the Hub, or download it, on the Publish "
                 "tab."]
        if snap.output.get("cache"):
            lines.append(f"- ♻️ {describe_reuse(snap.output['cache'])}")
    else:
        error = snap.error or {}
        lines = [f"**{STATUS_WORDS.get(snap.status, snap.status)}** ({error.get('stage', 'train')}): "
                 f"{error.get('message', '')}"]
    lines += [f"- ⚠️ {warning}" for warning in snap.warnings]
    return "\n".join(lines)


def checkpoint_steps(paths: list[str]) -> list[int]:
    return sorted({step for path in paths if (step := checkpoint_step(str(path).rstrip("/"))) is not None})


def render_marks(steps: list[int], total: int | None) -> str:
    """A ruler under the loss plot: a tick at each checkpoint's step (the plot's x axis runs 1..total)."""
    if not steps or not total:
        return '<div class="checkpoint-marks" data-steps="">No checkpoint yet.</div>'
    ticks = "".join(f'<span title="{checkpoint_name(step)}" style="position:absolute;left:{100 * step / total:.1f}%;'
                    f'transform:translateX(-50%)">◆<small>{step}</small></span>' for step in steps)
    listed = ", ".join(map(str, steps))
    return (f'<div class="checkpoint-marks" data-steps="{listed}"><div style="position:relative;height:1.6em;'
            f'margin:0 2.5em 0 3.5em">{ticks}</div><small>Checkpoints at steps {listed} (of {total})</small></div>')


def grid_updates(run: Run) -> list[Any]:
    """The sample grid's gallery (images) and players (videos)."""
    cells, columns = sample_cells(run.spec, Path(run.job_dir))
    images, image_columns = gallery_items(cells, columns=columns)
    videos = render_videos(cells, columns=columns, job_dir=Path(run.job_dir))
    return [gr.update(value=images or None, columns=image_columns, visible=bool(run.spec.samples) and not videos),
            gr.update(value=videos, visible=bool(videos))]


def read_log_tail(snap: RunSnapshot, *, secrets: list[str]) -> str:
    path = Path(snap.job_dir) / "training.log"
    if not path.is_file():
        return ""
    with path.open("rb") as handle:
        handle.seek(0, 2)
        handle.seek(max(0, handle.tell() - 32768))
        lines = handle.read().decode("utf-8", "replace").splitlines()[-RAW_LOG_LINES:]
    return scrub("\n".join(lines), secrets=secrets)


def bind(tab: TrainTab, *, form: FormView, registry: RunRegistry) -> None:
    @surface
    def start_training(**values: Any) -> str:
        """Start training the form's job in the background; refused while another training runs."""
        run = registry.start_training(spec_from_form(values))
        return f"Started run `{run.id}`."

    form.validate_on(tab.start_button.click).then(start_training, inputs_kwargs=form.inputs, outputs=[tab.message],
                                                  api_name="start_training")

    def cancel_training() -> str:
        """Stop the running training (SimpleTuner's whole process group)."""
        return "Cancelling…" if registry.cancel_training() else "No training is running."

    tab.cancel_button.click(cancel_training, None, [tab.message], api_name="cancel_training")

    def checkpoint_now() -> str:
        """Ask the running training for a checkpoint at its next step (SimpleTuner's manual checkpoint)."""
        return registry.request_checkpoint()

    def samples_now() -> str:
        """Ask the running training to render its sample prompts at its next step."""
        return registry.request_samples()

    tab.checkpoint_button.click(checkpoint_now, None, [tab.message], api_name="checkpoint_now")
    tab.samples_button.click(samples_now, None, [tab.message], api_name="samples_now")

    @surface
    def resume_run(run_id: str) -> str:
        """Start a new run of an interrupted run's job from the last checkpoint it left (its job folder)."""
        run = registry.resume(run_id or "")
        return f"Resuming run `{run_id}` as run `{run.id}`."

    tab.resume_button.click(resume_run, [tab.resume_choice], [tab.message], api_name="resume_run")

    def run_history() -> list[dict]:
        """Every run of this data folder, newest first: a row of the history table, and whether it can resume."""
        return [{**dict(zip(COLUMNS, describe(r), strict=True)), "resumable": r.resumable} for r in registry.runs()]

    gr.api(run_history, api_name="run_history", concurrency_limit=None)

    outputs = [tab.status, tab.loss, tab.log, tab.raw_log, tab.validation, tab.summary, tab.cancel_button, tab.marks,
               tab.samples, tab.history, tab.resume_choice, tab.sample_videos, tab.seen]

    def history_updates() -> list[Any]:
        records = registry.runs()
        choices = [(f"{r.id} ({r.status}, {r.last_checkpoint().name})", r.id)  # type: ignore[union-attr]
                   for r in records if r.resumable]
        return [[describe(r) for r in records] or None, gr.update(choices=choices, value=None)]

    def poll(seen: str) -> list[Any]:
        """Everything the tab shows of the current run; unchanged since the last poll: nothing is sent."""
        run = registry.training()
        if run is None:  # a fresh app: only the history (runs of earlier processes), once
            return ([gr.skip()] * (len(outputs) - 4) + (history_updates() if seen == "" else [gr.skip()] * 2)
                    + [gr.skip(), "-"])
        snap = run.snapshot()
        key = f"{snap.id}:{snap.version}:{snap.status}"
        if key == seen:
            return [gr.skip()] * (len(outputs) - 1) + [seen]
        history = history_updates() if not seen.endswith(f":{snap.status}") else [gr.skip()] * 2
        losses = pd.DataFrame(snap.losses, columns=["step", "loss"]) if snap.losses else no_losses()
        gallery, videos = grid_updates(run)
        return [render_status(snap), losses, "\n".join(snap.log[-200:]), read_log_tail(snap, secrets=run.secrets),
                list(snap.validation), render_summary(snap), gr.update(interactive=snap.running),
                render_marks(checkpoint_steps(snap.checkpoints), snap.total_steps), gallery, *history, videos, key]

    tab.timer.tick(poll, [tab.seen], outputs, api_name="poll", show_progress="hidden", concurrency_limit=None)

    def run_status() -> dict:
        """The current training run as JSON: status, stage, step, losses, validation images, result or error."""
        run = registry.training()
        return run.snapshot().to_dict() if run else {"status": "none"}

    gr.api(run_status, api_name="run_status", concurrency_limit=None)
