"""Runs tab: every run of this data folder, from the history on disk (app/history.py), so a restarted app lists
them all. Choosing one (its row, or the picker) makes it the chosen run that the Publish and Playground tabs work
on; its files download under its name (`<run>.json`, `<run>-lora.safetensors`); a run that is not running can be
deleted, with its folder, after a confirmation, and a running one cancelled.

Its Queue lists the trainings waiting for their GPUs (app/run_queue.py), first to start first: move one up or down,
or take it out. The tab polls every two seconds and redraws only when a run started, ended or the queue changed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from app.chosen_run import ChosenRun
from app.data_path import in_data_folder
from app.edge import surface
from app.history import COLUMN_WIDTHS, COLUMNS, describe, published_links
from app.run_queue import QueuedRun
from app.state import RunRegistry

QUEUE_COLUMNS = ["#", "run", "job", "GPUs", "queued"]
POLL_S = 2.0


@dataclass
class RunsTab:
    tab: gr.Tab
    table: gr.Dataframe
    choice: gr.Dropdown
    refresh_button: gr.Button
    details: gr.Markdown
    download_job: gr.DownloadButton
    download_lora: gr.DownloadButton
    download_comfyui: gr.DownloadButton
    delete_button: gr.Button
    cancel_button: gr.Button
    queue_table: gr.Dataframe
    queue_choice: gr.Dropdown
    up_button: gr.Button
    down_button: gr.Button
    remove_button: gr.Button
    queue_message: gr.Markdown
    timer: gr.Timer
    seen: gr.State
    confirm: gr.Group
    confirm_text: gr.Markdown
    confirm_button: gr.Button
    keep_button: gr.Button
    message: gr.Markdown


def build() -> RunsTab:
    with gr.Tab("Runs", id="runs") as tab:
        gr.Markdown("Every run of this data folder, kept across restarts. Choose one: the Publish and Playground "
                    "tabs then work on it.")
        table = gr.Dataframe(headers=COLUMNS, interactive=False, wrap=True, column_widths=COLUMN_WIDTHS,
                             elem_id="runs-table")
        with gr.Row():
            choice = gr.Dropdown(label="Chosen run", choices=[], scale=4)
            refresh_button = gr.Button("Refresh", scale=1)
        details = gr.Markdown()
        with gr.Row():
            download_job = gr.DownloadButton("Download job JSON", interactive=False)
            download_lora = gr.DownloadButton("Download LoRA", interactive=False)
            download_comfyui = gr.DownloadButton("Download for ComfyUI", interactive=False)
            cancel_button = gr.Button("Cancel run", variant="stop", interactive=False)
            delete_button = gr.Button("Delete run…", variant="stop", interactive=False)
        with gr.Group(visible=False) as confirm:
            confirm_text = gr.Markdown()
            with gr.Row():
                confirm_button = gr.Button("Delete it", variant="stop")
                keep_button = gr.Button("Keep it")
        message = gr.Markdown()
        with gr.Group(elem_id="run-queue"):
            gr.Markdown("### Queue\nTrainings waiting for their GPUs, the first to start first (**Add to queue** on "
                        "the Train tab). Kept across restarts.")
            queue_table = gr.Dataframe(headers=QUEUE_COLUMNS, interactive=False, wrap=True, elem_id="queue-table",
                                       column_widths=["6%", "22%", "48%", "8%", "16%"])
            with gr.Row():
                queue_choice = gr.Dropdown(label="Queued run", choices=[], scale=3, elem_id="queue-choice")
                up_button = gr.Button("↑ Up", scale=1)
                down_button = gr.Button("↓ Down", scale=1)
                remove_button = gr.Button("Remove from queue", variant="stop", scale=1)
            queue_message = gr.Markdown()
        timer = gr.Timer(POLL_S)
        seen = gr.State("")
    return RunsTab(tab, table, choice, refresh_button, details, download_job, download_lora, download_comfyui,
                   delete_button, cancel_button, queue_table, queue_choice, up_button, down_button, remove_button,
                   queue_message, timer, seen, confirm, confirm_text, confirm_button, keep_button, message)


def queue_rows(entries: list[QueuedRun]) -> list[list[str]]:
    """The queue's table: position, run, what it trains, the GPUs it asks for, when it was queued."""
    return [[str(number), entry.id, entry.label, str(entry.gpus) if entry.gpus else "all",
             time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.added_at))]
            for number, entry in enumerate(entries, start=1)]


def choice_label(row: list[str]) -> str:
    """A run in the picker: its id, status, steps and start."""
    run, started, status, steps = row[:4]
    return f"{run} · {status}" + (f" · {steps} steps" if steps else "") + f" · {started}"


def render_details(chosen: ChosenRun | None, *, data_root: Path) -> str:
    if chosen is None:
        return "No run yet: train one on the Train tab."
    record = chosen.record
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(record.started_at))
    took = f", {round((record.ended_at - record.started_at) / 60, 1)} min" if record.ended_at else ""
    steps = f"{record.steps}/{record.total_steps}" if record.total_steps else str(record.steps)
    loss = f", loss {record.loss:.4f}" if record.loss is not None else ""
    lines = [f"**Run `{chosen.id}`**: {record.status}, {steps} steps{loss}; started {when}{took}.",
             f"- Folder: `{in_data_folder(chosen.job_dir, data_root=data_root)}` in your data folder"]
    if chosen.lora_path is not None:
        lines.append(f"- LoRA: `{chosen.lora_path.name}`"
                     + (f", checkpoints {', '.join(name for name, _ in chosen.checkpoints())}"
                        if chosen.checkpoints() else ""))
    elif record.status == "succeeded":
        lines.append("- Its LoRA is no longer in its folder.")
    if record.published:
        lines.append("- Published: " + ", ".join(f"[{name}]({url})" for name, url in published_links(record.published)))
    if record.resumed_from:
        lines.append(f"- Resumed from `{in_data_folder(record.resumed_from, data_root=data_root)}`")
    if record.error:
        lines.append(f"- {record.error}")
    return "\n".join(lines)


def shown(chosen: ChosenRun | None, *, data_root: Path) -> list[Any]:
    """The chosen run's details, its downloads and whether it can be deleted now."""
    files = chosen.downloads() if chosen is not None else {}

    def button(key: str, label: str) -> Any:
        path = files.get(key)
        return gr.update(value=str(path) if path else None, interactive=path is not None,
                         label=f"⬇ {path.name}" if path else label)

    running = chosen is not None and chosen.record.status == "running"
    return [render_details(chosen, data_root=data_root), button("job", "Download job JSON"),
            button("lora", "Download LoRA"), button("comfyui", "Download for ComfyUI"),
            gr.update(interactive=chosen is not None and not running),
            gr.update(interactive=running), gr.update(visible=False)]


def bind(tab: RunsTab, *, registry: RunRegistry) -> None:
    shown_outputs = [tab.details, tab.download_job, tab.download_lora, tab.download_comfyui, tab.delete_button,
                     tab.cancel_button, tab.confirm]

    def queue_state() -> str:
        """What the tab's tables show, in one key: it changes when a run starts or ends or the queue changes."""
        return "|".join([*(entry.id for entry in registry.queued()), "/",
                         *(f"{record.id}:{record.status}" for record in registry.runs())])

    def list_runs() -> list[Any]:
        """The table, the picker (the chosen run picked), the chosen run, and the queue."""
        rows = [describe(record) for record in registry.runs()]
        chosen = registry.chosen()
        return [rows or None, gr.update(choices=[(choice_label(row), row[0]) for row in rows],
                                        value=chosen.id if chosen else None),
                *shown(chosen, data_root=registry.settings.data_root),
                *queue_updates(registry),
                queue_state()]

    listed = [tab.table, tab.choice, *shown_outputs, tab.queue_table, tab.queue_choice, tab.seen]
    tab.tab.select(list_runs, None, listed, api_name="list_runs", show_progress="hidden")
    tab.refresh_button.click(list_runs, None, listed, api_visibility="private")

    def poll(seen: str) -> list[Any]:
        """Everything again when a run started or ended or the queue changed; else nothing is sent."""
        return list_runs() if queue_state() != seen else [gr.skip()] * len(listed)

    tab.timer.tick(poll, [tab.seen], listed, api_visibility="private", show_progress="hidden",
                   concurrency_limit=None)

    def cancel_run(run_id: str | None) -> str:
        """Stop a running training (the chosen one), its SimpleTuner process group with it."""
        return "Cancelling…" if registry.cancel_training(run_id or None) else f"Run `{run_id}` is not running."

    tab.cancel_button.click(cancel_run, [tab.choice], [tab.message], api_name="cancel_run")

    @surface
    def choose_run(run_id: str) -> list[Any]:
        """Make `run_id` the chosen run (what Publish and Playground work on); its details and named downloads."""
        if not run_id:
            return [gr.skip()] * len(shown_outputs)
        return shown(registry.choose(run_id), data_root=registry.settings.data_root)

    tab.choice.input(choose_run, [tab.choice], shown_outputs, api_name="choose_run")

    def pick_row(event: gr.SelectData) -> Any:
        """A click on a row chooses its run."""
        row = event.row_value or []
        return gr.update(value=row[0]) if row else gr.skip()

    tab.table.select(pick_row, None, [tab.choice], api_visibility="private").then(
        choose_run, [tab.choice], shown_outputs, api_visibility="private")

    @surface
    def ask_delete(run_id: str) -> list[Any]:
        chosen = registry.choose(run_id or "")
        if chosen.record.status == "running":
            return [gr.update(visible=False), f"Run `{chosen.id}` is running: cancel it on the Train tab first."]
        what = "its LoRA, checkpoints, samples and log" if chosen.lora_path else "its folder"
        where = in_data_folder(chosen.job_dir, data_root=registry.settings.data_root)
        return [gr.update(visible=True), f"Delete run `{chosen.id}` and {what} (`{where}`)? This cannot "
                                         "be undone; what it pushed to the Hub stays there."]

    tab.delete_button.click(ask_delete, [tab.choice], [tab.confirm, tab.confirm_text], api_visibility="private")
    tab.keep_button.click(lambda: gr.update(visible=False), None, [tab.confirm], api_visibility="private")

    @surface
    def delete_run(run_id: str) -> str:
        """Delete a run that is not running: its job folder and its record."""
        record = registry.delete(run_id or "")
        return f"Deleted run `{record.id}`."

    tab.confirm_button.click(delete_run, [tab.choice], [tab.message], api_name="delete_run").then(
        list_runs, None, listed, api_visibility="private")

    bind_queue(tab, registry=registry)


def queue_updates(registry: RunRegistry, selected: str | None = None) -> list[Any]:
    """The queue's table and picker (`selected` kept picked while it is queued)."""
    entries = registry.queued()
    ids = [entry.id for entry in entries]
    return [queue_rows(entries) or None,
            gr.update(choices=[(f"{n}. {entry.id} · {entry.label}", entry.id) for n, entry in
                               enumerate(entries, start=1)], value=selected if selected in ids else None)]


def bind_queue(tab: RunsTab, *, registry: RunRegistry) -> None:
    """The queue's buttons, and the queue over the API."""
    def queued() -> list[dict]:
        """The queue, first to start first: each run's id, what it trains and the GPUs it asks for."""
        return [{"position": n, "id": e.id, "job": e.label, "gpus": e.gpus} for n, e in
                enumerate(registry.queued(), start=1)]

    gr.api(queued, api_name="queue", concurrency_limit=None)

    @surface
    def move(run_id: str | None, by: int) -> list[Any]:
        registry.move_queued(run_id or "", by=by)
        return [*queue_updates(registry, run_id), ""]

    queue_outputs = [tab.queue_table, tab.queue_choice, tab.queue_message]

    def move_up(run_id: str | None) -> list[Any]:
        """Move a queued run one place towards the start."""
        return move(run_id, -1)

    def move_down(run_id: str | None) -> list[Any]:
        """Move a queued run one place towards the end."""
        return move(run_id, 1)

    tab.up_button.click(move_up, [tab.queue_choice], queue_outputs, api_name="queue_up")
    tab.down_button.click(move_down, [tab.queue_choice], queue_outputs, api_name="queue_down")

    @surface
    def remove_queued(run_id: str | None) -> list[Any]:
        """Take a queued run out of the queue before it starts."""
        entry = registry.dequeue(run_id or "")
        return [*queue_updates(registry), f"Removed run `{entry.id}` from the queue."]

    tab.remove_button.click(remove_queued, [tab.queue_choice], queue_outputs, api_name="queue_remove")
