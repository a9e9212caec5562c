"""Publish tab: push the latest trained LoRA to the Hub (a private repo unless told otherwise), or download it:
the diffusers file, or the same LoRA in ComfyUI/kohya format (for ComfyUI/models/loras/). The checkpoint picker
says which LoRA goes up: the final one, the best (lowest smoothed loss), or a checkpoint's step (`hub.checkpoint`).

The token comes from the password field or HF_TOKEN; it is an input only: no handler ever returns it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from app.edge import surface
from app.run import RunSnapshot
from app.state import RunRegistry
from core.errors import ErrorCode, JobError
from core.outputs import lora_checkpoints
from core.settings import Settings

PUSH_POLL_S = 0.5
LAST, BEST = "last", "best"
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
        latest = gr.Markdown("No trained LoRA yet: train one on the Train tab.")
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


def describe_latest(snap: RunSnapshot | None) -> tuple[str, Any]:
    """The latest trained LoRA and the download button for it."""
    if snap is None or not snap.output or not snap.lora_path:
        return "No trained LoRA yet: train one on the Train tab.", gr.update(value=None, interactive=False)
    metrics, lora = snap.output["metrics"], snap.lora_path
    loss = f", final loss {metrics['loss']:.4f}" if metrics.get("loss") is not None else ""
    hub = snap.output.get("hub")
    pushed = f" Last pushed to [{hub['repo_id']}]({hub['url']})." if hub else ""
    text = f"Latest LoRA: run `{snap.id}`, {metrics['steps']} steps{loss}.{pushed}"
    return text, gr.update(value=lora, interactive=True, label="Download LoRA (diffusers .safetensors)")


def describe_comfyui(snap: RunSnapshot | None) -> Any:
    """The download button for the latest run's ComfyUI/kohya-format file, when it has one."""
    found = comfyui_file(snap)
    if found is None:
        return gr.update(value=None, interactive=False, label="Download for ComfyUI")
    return gr.update(value=str(found), interactive=True, label=f"Download for ComfyUI ({found.name})")


def comfyui_file(snap: RunSnapshot | None) -> Path | None:
    """The ComfyUI file on this machine: beside the diffusers file, under the name the output reports (a path, or
    once published its URL, which ends with the same name)."""
    if snap is None or not snap.output or not snap.lora_path or not snap.output.get("comfyui_checkpoint"):
        return None
    local = Path(snap.lora_path).with_name(str(snap.output["comfyui_checkpoint"]).rsplit("/", 1)[-1])
    return local if local.is_file() else None


def checkpoint_choices(output_dir: Path | None) -> list[tuple[str, str]]:
    """The picker's choices: last, best, and each checkpoint of the run that holds a LoRA (by step)."""
    return [*FIXED_CHOICES, *((name, str(step)) for name, step in lora_checkpoints(output_dir))]


def chosen_checkpoint(choice: str | None) -> str | int:
    """hub.checkpoint from the picker: "last", "best" or a step."""
    text = str(choice or LAST).strip()
    return int(text) if text.isdigit() else text


def bind(tab: PublishTab, *, registry: RunRegistry) -> None:
    def refresh() -> tuple[str, Any]:
        run = registry.last_trained()
        return describe_latest(run.snapshot() if run else None)

    def refresh_comfyui() -> Any:
        run = registry.last_trained()
        return describe_comfyui(run.snapshot() if run else None)

    tab.tab.select(refresh, None, [tab.latest, tab.download], api_name="latest_lora", show_progress="hidden")
    tab.tab.select(refresh_comfyui, None, [tab.download_comfyui], api_name="latest_comfyui_lora",
                   show_progress="hidden")

    def refresh_checkpoints() -> Any:
        """The checkpoints of the latest trained run the picker offers ("last" stays chosen)."""
        run = registry.last_trained()
        output = run.result.output_dir if run and run.result else None
        return gr.update(choices=checkpoint_choices(output), value=LAST)

    tab.tab.select(refresh_checkpoints, None, [tab.checkpoint], api_name="publish_checkpoints",
                   show_progress="hidden")

    @surface
    def push_to_hub(repo_id: str, private: bool, token: str | None, checkpoint: str = LAST) -> Iterator[str]:
        """Push the latest trained LoRA (or the picked checkpoint's), its model card and config to `repo_id`;
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
