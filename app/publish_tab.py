"""Publish tab: push the chosen run's LoRA (the Runs tab picks it; else the newest run that succeeded) to the Hub
(a private repo unless told otherwise), or download it: the diffusers file, or the same LoRA in ComfyUI/kohya format
(for ComfyUI/models/loras/), named after the run. The checkpoint picker says which LoRA goes up: the final one, the
best (lowest smoothed loss), or a checkpoint's step (`hub.checkpoint`).

The token comes from the password field or HF_TOKEN; it is an input only: no handler ever returns it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from app.chosen_run import ChosenRun
from app.edge import surface
from app.history import published_links
from app.state import RunRegistry
from core.errors import ErrorCode, JobError
from core.outputs import lora_checkpoints
from core.settings import Settings

PUSH_POLL_S = 0.5
LAST, BEST = "last", "best"
NO_LORA = "No trained LoRA yet: train one on the Train tab, or choose a run that succeeded on the Runs tab."
FIXED_CHOICES = [("last: the final LoRA", LAST), ("best: the checkpoint of lowest smoothed loss", BEST)]


@dataclass
class PublishTab:
    tab: gr.Tab
    latest: gr.Markdown
    download: gr.DownloadButton
    download_comfyui: gr.DownloadButton
    repo_id: gr.Textbox
    private: gr.Checkbox
    checkpoint: gr.Dropdown
    token: gr.Textbox
    push_button: gr.Button
    status: gr.Markdown


def build(*, settings: Settings) -> PublishTab:
    env_token = settings.hf_token is not None
    with gr.Tab("Publish", id="publish") as tab:
        latest = gr.Markdown(NO_LORA)
        with gr.Row():
            download = gr.DownloadButton("Download LoRA", interactive=False)
            download_comfyui = gr.DownloadButton("Download for ComfyUI", interactive=False)
        with gr.Row():
            repo_id = gr.Textbox(label="Repo id", placeholder="your-name/my-lora", scale=3,
                                 info="Created if it does not exist")
            private = gr.Checkbox(True, label="Private repo", scale=1, info="Only you can see it")
        checkpoint = gr.Dropdown(FIXED_CHOICES, value=LAST, label="Checkpoint to publish",
                                 info="Compare them on the Train tab's sample grid or in the Playground")
        token = gr.Textbox(label="Hugging Face token", type="password", max_lines=1,
                           placeholder="HF_TOKEN from the environment is used" if env_token else "hf_…",
                           info="A token with the write role. Used for this push only; never shown or stored."
                           + (" Leave empty to use HF_TOKEN." if env_token else ""))
        push_button = gr.Button("Push to Hub", variant="primary")
        status = gr.Markdown()
    return PublishTab(tab, latest, download, download_comfyui, repo_id, private, checkpoint, token, push_button,
                      status)


def describe_latest(chosen: ChosenRun | None) -> tuple[str, Any]:
    """The chosen run's LoRA and the download button for it (a file named after the run)."""
    if chosen is None or chosen.lora_path is None:
        text = NO_LORA if chosen is None else (f"Run `{chosen.id}` ({chosen.record.status}) has no trained LoRA: "
                                               "choose a run that succeeded on the Runs tab.")
        return text, gr.update(value=None, interactive=False, label="Download LoRA")
    record = chosen.record
    loss = f", final loss {record.loss:.4f}" if record.loss is not None else ""
    pushed = ", ".join(f"[{name}]({url})" for name, url in published_links(record.published))
    text = (f"Chosen run: `{chosen.id}`, {record.steps} steps{loss}." + (f" Pushed to {pushed}." if pushed else "")
            + " Choose another on the Runs tab.")
    lora = chosen.downloads().get("lora")
    return text, gr.update(value=str(lora) if lora else None, interactive=lora is not None,
                           label=f"Download LoRA ({lora.name})" if lora else "Download LoRA")


def describe_comfyui(chosen: ChosenRun | None) -> Any:
    """The download button for the chosen run's ComfyUI/kohya-format file, when it has one."""
    found = chosen.downloads().get("comfyui") if chosen is not None and chosen.comfyui_path else None
    if found is None:
        return gr.update(value=None, interactive=False, label="Download for ComfyUI")
    return gr.update(value=str(found), interactive=True, label=f"Download for ComfyUI ({found.name})")


def checkpoint_choices(output_dir: Path | None) -> list[tuple[str, str]]:
    """The picker's choices: last, best, and each checkpoint of the run that holds a LoRA (by step)."""
    return [*FIXED_CHOICES, *((name, str(step)) for name, step in lora_checkpoints(output_dir))]


def chosen_checkpoint(choice: str | None) -> str | int:
    """hub.checkpoint from the picker: "last", "best" or a step."""
    text = str(choice or LAST).strip()
    return int(text) if text.isdigit() else text


def bind(tab: PublishTab, *, registry: RunRegistry) -> None:
    def refresh() -> tuple[str, Any]:
        return describe_latest(registry.chosen())

    def refresh_comfyui() -> Any:
        return describe_comfyui(registry.chosen())

    tab.tab.select(refresh, None, [tab.latest, tab.download], api_name="latest_lora", show_progress="hidden")
    tab.tab.select(refresh_comfyui, None, [tab.download_comfyui], api_name="latest_comfyui_lora",
                   show_progress="hidden")

    def refresh_checkpoints() -> Any:
        """The checkpoints of the chosen run the picker offers ("last" stays chosen)."""
        chosen = registry.chosen()
        return gr.update(choices=checkpoint_choices(chosen.output_dir if chosen and chosen.result else None),
                         value=LAST)

    tab.tab.select(refresh_checkpoints, None, [tab.checkpoint], api_name="publish_checkpoints",
                   show_progress="hidden")

    @surface
    def push_to_hub(repo_id: str, private: bool, token: str | None, checkpoint: str = LAST) -> Iterator[str]:
        """Push the chosen run's LoRA (or the picked checkpoint's), its model card and config to `repo_id`;
        returns the repo's link."""
        run = registry.start_publish(repo_id=(repo_id or "").strip(), private=bool(private), token=token or None,
                                     checkpoint=chosen_checkpoint(checkpoint))
        while True:
            snap = run.snapshot()
            if not snap.running:
                break
            yield f"Pushing to **{repo_id}**… {snap.detail}"
            time.sleep(PUSH_POLL_S)
        if snap.status != "succeeded":
            error = snap.error or {}
            raise JobError(error.get("message", "the push failed"), field=error.get("field"),
                           code=ErrorCode.PUBLISH_FAILED, stage="publish")
        hub = snap.output["hub"] if snap.output else None
        if not hub:
            raise JobError("the push ended without a repo", stage="publish")
        visibility = "private" if hub.get("private") else "public"
        # core.training.published_view says which checkpoint went up, when it was not the final LoRA.
        which = next((w for w in snap.warnings if w.startswith("published ")), "the final LoRA")
        yield (f"Pushed to [{hub['repo_id']}]({hub['url']}) ({visibility}), commit `{hub['commit'][:8]}`: "
               f"{which.removeprefix('published ')}.")

    tab.push_button.click(push_to_hub, [tab.repo_id, tab.private, tab.token, tab.checkpoint], [tab.status],
                          api_name="push_to_hub").then(refresh, None, [tab.latest, tab.download],
                                                       api_visibility="private").then(
        refresh_comfyui, None, [tab.download_comfyui], api_visibility="private")
