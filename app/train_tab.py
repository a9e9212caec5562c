"""Train tab: start, a progress bar, the live loss plot, the log tail, validation images, the sample grid (images,
or a video family's clips as players: app/sample_grid.py), Cancel.

The run lives in the registry on the server; this tab polls a snapshot every second (gr.Timer), so no request
waits for training and a reloaded page picks the run up again. It follows the chosen run (Runs tab) when this app
trains or trained it, else the latest training. "Add to queue" puts the job behind the others (app/run_queue.py):
it starts when the GPUs it asks for are free.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from app.data_path import in_data_folder
from app.edge import surface
from app.form_view import FormView
from app.history import COLUMN_WIDTHS, COLUMNS, describe
from app.job_form import spec_from_form
from app.run import Run, RunSnapshot
from app.sample_grid import gallery_items, is_edit_grid, render_images, render_videos, sample_cells
from app.state import RunRegistry
from core.cache import describe as describe_reuse
from core.outputs import checkpoint_name, checkpoint_step
from core.result import human_duration
from core.secrets import scrub
from core.spec import JobSpec, parse_job, unwrap_input

POLL_S = 1.0
FOLLOW_TAIL_JS = """() => {
  for (const box of document.querySelectorAll('#train-log textarea, #train-raw-log textarea')) {
    if (box.offsetParent === null || box.dataset.seen === String(box.value.length)) continue;
    box.dataset.seen = String(box.value.length);
    box.scrollTop = box.scrollHeight;
  }
}"""
"""The log boxes follow their tail when new lines come, and when shown after they came while the tab was hidden
(Gradio's autoscroll scrolls only a visible box, as its value changes); a box left as it was keeps where the user
scrolled to."""
RAW_LOG_LINES = 30
STATUS_WORDS = {"running": "Training", "succeeded": "Finished", "failed": "Failed", "cancelled": "Cancelled"}


@dataclass
class TrainTab:
    start_button: gr.Button
    queue_button: gr.Button
    gpus: gr.Number
    """How many of the pod's GPUs the run takes (config.num_processes; 0: all); shown with several GPUs."""
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
    """An edit run's sample grid: a row per sample of its input(s), the result and the expected output."""
    sample_videos: gr.HTML
    """The sample grid: a compact table of images (a row per checkpoint labelled with its step, a column per prompt),
    or a video family's players with their poster and controls."""
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


def build(*, gpu_count: int = 0) -> TrainTab:
    """`gpu_count`: the pod's GPUs (0: none); with several, a run asks for some of them."""
    with gr.Tab("Train", id="train"):
        gr.Markdown("Trains the job of the Config tab on the Dataset tab's dataset. The run lives on the server: "
                    "close or reload this page and come back to it. "
                    + ("Runs on disjoint GPUs train side by side; " if gpu_count > 1 else "One training at a time; ")
                    + "**Add to queue** starts it when its GPUs are free (the queue is on the Runs tab).")
        with gr.Row():
            start_button = gr.Button("Start training", variant="primary")
            queue_button = gr.Button("Add to queue")
            gpus = gr.Number(0, label=f"GPUs (of {gpu_count}; 0: all)", precision=0, minimum=0, maximum=gpu_count,
                             visible=gpu_count > 1, elem_id="train-gpus")
            cancel_button = gr.Button("Cancel", variant="stop", interactive=False)
            checkpoint_button = gr.Button("Save a checkpoint now", size="sm")
            samples_button = gr.Button("Render samples now", size="sm")
        message = gr.Markdown()
        status = gr.HTML(render_status(None))
        with gr.Row():
            loss = gr.LinePlot(no_losses(), x="step", y="loss", color="series", title="Loss", x_title="step",
                               y_title="loss", height=280, scale=3)
            validation = gr.Gallery(label="Validation images", columns=2, height=280, scale=2, interactive=False)
        marks = gr.HTML(render_marks([], None))
        samples = gr.Gallery(label="Samples: input, result and expected output (click for full size)",
                             columns=1, height="auto", interactive=False, object_fit="contain", visible=False)
        sample_videos = gr.HTML("", label="Samples: a row per checkpoint, a column per prompt", visible=False,
                                elem_id="sample-videos", elem_classes=["sample-grid"])
        log = gr.Textbox(label="Log", lines=12, max_lines=12, interactive=False, autoscroll=True, elem_id="train-log")
        with gr.Accordion("SimpleTuner output (training.log)", open=False):
            raw_log = gr.Textbox(show_label=False, lines=12, max_lines=12, interactive=False, autoscroll=True,
                                 elem_classes=["mono"], elem_id="train-raw-log")
        summary = gr.Markdown()
        with gr.Accordion("Run history", open=True):
            history = gr.Dataframe(headers=COLUMNS, interactive=False, wrap=True, column_widths=COLUMN_WIDTHS)
            with gr.Row():
                resume_choice = gr.Dropdown(label="Resume an interrupted run from its last checkpoint", choices=[],
                                            scale=3)
                resume_button = gr.Button("Resume", scale=1)
        timer = gr.Timer(POLL_S)
        seen = gr.State("")
    return TrainTab(start_button, queue_button, gpus, cancel_button, message, status, loss, validation, log, raw_log,
                    summary, timer, seen, samples, sample_videos, marks, history, resume_choice, resume_button,
                    checkpoint_button, samples_button)


def no_losses() -> pd.DataFrame:
    return pd.DataFrame({"step": pd.Series(dtype="int64"), "loss": pd.Series(dtype="float64"),
                         "series": pd.Series(dtype="str")})


def loss_frame(snap: RunSnapshot) -> pd.DataFrame:
    """The plot's points: the training loss per step and, with held-out images, the evaluation loss per
    checkpoint, a series each."""
    rows = [(step, loss, "training") for step, loss in snap.losses]
    rows += [(step, loss, "evaluation") for step, loss in snap.eval_losses]
    return pd.DataFrame(rows, columns=["step", "loss", "series"]) if rows else no_losses()


def render_status(snap: RunSnapshot | None) -> str:
    """The progress bar: stage, step/total, ETA. role=progressbar carries the percentage for tools and tests."""
    if snap is None:
        return ('<div class="run-status" data-status="idle"><div class="run-line">No training yet.</div>'
                '</div>')
    percent = round(snap.percent)
    parts = [f"<b>{STATUS_WORDS.get(snap.status, snap.status)}</b>", html.escape(snap.stage)]
    steps = f"step {snap.step}/{snap.total_steps}"
    if snap.detail and snap.running and not snap.detail.endswith(steps):  # a step's message is the step itself
        parts.append(html.escape(snap.detail[:120]))
    if snap.total_steps:
        parts.append(steps)
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


def render_summary(snap: RunSnapshot, *, data_root: Path) -> str:
    """What the run is and where its files are (relative to the data folder), or how it ended."""
    if snap.running:
        return f"Run `{snap.id}` in `{in_data_folder(snap.job_dir, data_root=data_root)}` of your data folder."
    if snap.status == "succeeded" and snap.output:
        metrics = snap.output["metrics"]
        loss = f", final loss {metrics['loss']:.4f}" if metrics.get("loss") is not None else ""
        lines = [f"**Finished** in {metrics['elapsed_time']}: {metrics['steps']} steps{loss}.",
                 f"LoRA: `{in_data_folder(snap.lora_path or '', data_root=data_root)}` in your data folder. "
                 "Push it to the Hub, or download it, on the Publish tab."]
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
    if is_edit_grid(cells):
        images, image_columns = gallery_items(cells, columns=columns)
        return [gr.update(value=images or None, columns=image_columns, visible=True), gr.update(value="",
                                                                                               visible=False)]
    page = render_images(cells) + render_videos(cells, columns=columns, job_dir=Path(run.job_dir))
    return [gr.update(value=None, visible=False), gr.update(value=page, visible=bool(page))]


def read_log_tail(snap: RunSnapshot, *, secrets: list[str]) -> str:
    path = Path(snap.job_dir) / "training.log"
    if not path.is_file():
        return ""
    with path.open("rb") as handle:
        handle.seek(0, 2)
        handle.seek(max(0, handle.tell() - 32768))
        lines = handle.read().decode("utf-8", "replace").splitlines()[-RAW_LOG_LINES:]
    return scrub("\n".join(lines), secrets=secrets)


def with_gpus(spec: JobSpec, gpus: float | None) -> JobSpec:
    """The job on `gpus` of the pod's GPUs (its config.num_processes); 0 or None: as the job says (all)."""
    if not gpus:
        return spec
    data = unwrap_input(spec.to_job_json())
    return parse_job({**data, "config": {**data.get("config", {}), "num_processes": int(gpus)}})


def bind(tab: TrainTab, *, form: FormView, registry: RunRegistry) -> None:
    @surface
    def start_training(gpus: float | None = None, **values: Any) -> str:
        """Start training the form's job in the background now; refused while its GPUs train another run."""
        run = registry.start_training(with_gpus(spec_from_form(values), gpus))
        return f"Started run `{run.id}`."

    form.validate_on(tab.start_button.click).then(start_training, inputs_kwargs={**form.inputs, "gpus": tab.gpus},
                                                  outputs=[tab.message], api_name="start_training")

    @surface
    def add_to_queue(gpus: float | None = None, **values: Any) -> str:
        """Put the form's job at the end of the queue (Runs tab): it starts when the GPUs it asks for are free."""
        entry = registry.enqueue(with_gpus(spec_from_form(values), gpus))
        queued = [item.id for item in registry.queued()]
        if entry.id not in queued:
            return f"Run `{entry.id}` started at once: its GPUs were free."
        return f"Run `{entry.id}` queued ({queued.index(entry.id) + 1} of {len(queued)}): see the Runs tab."

    form.validate_on(tab.queue_button.click).then(add_to_queue, inputs_kwargs={**form.inputs, "gpus": tab.gpus},
                                                  outputs=[tab.message], api_name="add_to_queue")

    def cancel_training() -> str:
        """Stop the training this tab follows (SimpleTuner's whole process group)."""
        return "Cancelling…" if registry.cancel_training() else "No training is running."

    tab.cancel_button.click(cancel_training, None, [tab.message], api_name="cancel_training")

    bind_requests(tab, registry=registry)

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
               tab.samples, tab.history, tab.resume_choice, tab.sample_videos, tab.message, tab.seen]

    def history_updates() -> list[Any]:
        records = registry.runs()
        choices = [(f"{r.id} ({r.status}, {r.last_checkpoint().name})", r.id)  # type: ignore[union-attr]
                   for r in records if r.resumable]
        return [[describe(r) for r in records] or None, gr.update(choices=choices, value=None)]

    def poll(seen: str, message: str | None = None) -> list[Any]:
        """Everything the tab shows of the current run; unchanged since the last poll: nothing is sent."""
        run = registry.training()
        if run is None:  # a fresh app: only the history (runs of earlier processes), once
            return ([gr.skip()] * (len(outputs) - 5) + (history_updates() if seen == "" else [gr.skip()] * 2)
                    + [gr.skip(), gr.skip(), "-"])
        snap = run.snapshot()
        key = f"{snap.id}:{snap.version}:{snap.status}"
        if key == seen:
            return [gr.skip()] * (len(outputs) - 1) + [seen]
        history = history_updates() if not seen.endswith(f":{snap.status}") else [gr.skip()] * 2
        losses = loss_frame(snap)
        gallery, videos = grid_updates(run)
        return [render_status(snap), losses, "\n".join(snap.log[-200:]), read_log_tail(snap, secrets=run.secrets),
                list(snap.validation), render_summary(snap, data_root=registry.settings.data_root),
                gr.update(interactive=snap.running),
                render_marks(checkpoint_steps(snap.checkpoints), snap.total_steps), gallery, *history, videos,
                "" if not snap.running and (message or "").startswith("Cancelling") else gr.skip(), key]

    tab.timer.tick(poll, [tab.seen, tab.message], outputs, api_name="poll", show_progress="hidden",
                   concurrency_limit=None).then(None, js=FOLLOW_TAIL_JS)

    def run_status() -> dict:
        """The current training run as JSON: status, stage, step, losses, validation images, result or error."""
        run = registry.training()
        return run.snapshot().to_dict() if run else {"status": "none"}

    gr.api(run_status, api_name="run_status", concurrency_limit=None)


def bind_requests(tab: TrainTab, *, registry: RunRegistry) -> None:
    """*Save a checkpoint now* and *Render samples now*: asked of the running training at its next step."""
    def checkpoint_now() -> str:
        """Ask the running training for a checkpoint at its next step (SimpleTuner's manual checkpoint)."""
        return registry.request_checkpoint()

    def samples_now() -> str:
        """Ask the running training to render its sample prompts at its next step."""
        return registry.request_samples()

    tab.checkpoint_button.click(checkpoint_now, None, [tab.message], api_name="checkpoint_now")
    tab.samples_button.click(samples_now, None, [tab.message], api_name="samples_now")
