"""Runs tab: every run of this data folder, from the history on disk (app/history.py), so a restarted app lists
them all. Choosing one (its row, or the picker) makes it the chosen run that the Publish and Playground tabs work
on; its files download under its name (`<run>.json`, `<run>-lora.safetensors`); a run that is not running can be
deleted, with its folder, after a confirmation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import gradio as gr

from app.chosen_run import ChosenRun
from app.edge import surface
from app.history import COLUMN_WIDTHS, COLUMNS, describe, published_links
from app.state import RunRegistry


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
            delete_button = gr.Button("Delete run…", variant="stop", interactive=False)
        with gr.Group(visible=False) as confirm:
            confirm_text = gr.Markdown()
            with gr.Row():
                confirm_button = gr.Button("Delete it", variant="stop")
                keep_button = gr.Button("Keep it")
        message = gr.Markdown()
    return RunsTab(tab, table, choice, refresh_button, details, download_job, download_lora, download_comfyui,
                   delete_button, confirm, confirm_text, confirm_button, keep_button, message)


def choice_label(row: list[str]) -> str:
    """A run in the picker: its id, status, steps and start."""
    run, started, status, steps = row[:4]
    return f"{run} · {status}" + (f" · {steps} steps" if steps else "") + f" · {started}"


def render_details(chosen: ChosenRun | None) -> str:
    if chosen is None:
        return "No run yet: train one on the Train tab."
    record = chosen.record
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(record.started_at))
    took = f", {round((record.ended_at - record.started_at) / 60, 1)} min" if record.ended_at else ""
    steps = f"{record.steps}/{record.total_steps}" if record.total_steps else str(record.steps)
    loss = f", loss {record.loss:.4f}" if record.loss is not None else ""
    lines = [f"**Run `{chosen.id}`**: {record.status}, {steps} steps{loss}; started {when}{took}.",
             f"- Folder: `{chosen.job_dir}`"]
    if chosen.lora_path is not None:
        lines.append(f"- LoRA: `{chosen.lora_path.name}`"
                     + (f", checkpoints {', '.join(name for name, _ in chosen.checkpoints())}"
                        if chosen.checkpoints() else ""))
    elif record.status == "succeeded":
        lines.append("- Its LoRA is no longer in its folder.")
    if record.published:
        lines.append("- Published: " + ", ".join(f"[{name}]({url})" for name, url in published_links(record.published)))
    if record.resumed_from:
        lines.append(f"- Resumed from `{record.resumed_from}`")
    if record.error:
        lines.append(f"- {record.error}")
    return "\n".join(lines)


def bind(tab: RunsTab, *, registry: RunRegistry) -> None:
    def shown(chosen: ChosenRun | None) -> list[Any]:
        """The chosen run's details, its downloads and whether it can be deleted now."""
        files = chosen.downloads() if chosen is not None else {}

        def button(key: str, label: str) -> Any:
            path = files.get(key)
            return gr.update(value=str(path) if path else None, interactive=path is not None,
                             label=f"⬇ {path.name}" if path else label)

        deletable = chosen is not None and chosen.record.status != "running"
        return [render_details(chosen), button("job", "Download job JSON"), button("lora", "Download LoRA"),
                button("comfyui", "Download for ComfyUI"), gr.update(interactive=deletable), gr.update(visible=False)]

    shown_outputs = [tab.details, tab.download_job, tab.download_lora, tab.download_comfyui, tab.delete_button,
                     tab.confirm]

    def list_runs() -> list[Any]:
        """The table, the picker (the chosen run picked), and the chosen run."""
        rows = [describe(record) for record in registry.runs()]
        chosen = registry.chosen()
        return [rows or None, gr.update(choices=[(choice_label(row), row[0]) for row in rows],
                                        value=chosen.id if chosen else None), *shown(chosen)]

    listed = [tab.table, tab.choice, *shown_outputs]
    tab.tab.select(list_runs, None, listed, api_name="list_runs", show_progress="hidden")
    tab.refresh_button.click(list_runs, None, listed, api_visibility="private")

    @surface
    def choose_run(run_id: str) -> list[Any]:
        """Make `run_id` the chosen run (what Publish and Playground work on); its details and named downloads."""
        if not run_id:
            return [gr.skip()] * len(shown_outputs)
        return shown(registry.choose(run_id))

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
        return [gr.update(visible=True), f"Delete run `{chosen.id}` and {what} (`{chosen.job_dir}`)? This cannot "
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
