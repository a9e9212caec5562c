"""The app: the tabs built into one gr.Blocks around the one run registry. `python -m app` launches it."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from app import config_tab, dataset_tab, playground_tab, publish_tab, runs_tab, train_tab
from app.dataset_store import DatasetStore
from app.form_view import FormView
from app.presets import TINY
from app.run_queue import CPU_SLOT
from app.state import RunRegistry
from core.adapters import detect_device
from core.settings import Settings

TITLE = "SimpleTuner LoRA trainer"
GPU_PRESET = "SDXL"
# Uploads and Gradio's copies of shown files are cleaned after a day (checked every hour).
DELETE_CACHE = (3600, 86400)


@dataclass
class UI:
    blocks: gr.Blocks
    registry: RunRegistry
    store: DatasetStore


def build_ui(*, settings: Settings, max_upload_bytes: int | None = None) -> UI:
    """The app; `max_upload_bytes` limits one upload of the Dataset tab (None: no limit)."""
    store = DatasetStore(settings=settings, max_upload_bytes=max_upload_bytes)
    registry = RunRegistry(settings=settings, before_training=store.refuse_training_while_captioning)
    device, _ = detect_device(settings)
    with gr.Blocks(title=TITLE, delete_cache=DELETE_CACHE) as blocks:
        gr.Markdown(f"## {TITLE}\nConfig → Dataset → Train → Runs → Publish."
                    + (" No GPU here: the tiny demo model trains on the CPU in about a minute." if device == "cpu"
                       else ""))
        with gr.Tabs():
            config = config_tab.build(settings=settings, preset=TINY if device == "cpu" else GPU_PRESET)
            dataset = dataset_tab.build()
            train = train_tab.build(gpu_count=0 if registry.devices == [CPU_SLOT] else len(registry.devices))
            runs = runs_tab.build()
            publish = publish_tab.build(settings=settings)
            playground = playground_tab.build()
        form = FormView(components={**config.fields, "dataset": dataset.source, "trigger_word": dataset.trigger_word,
                                    "repo_id": publish.repo_id, "private": publish.private, "goal": config.goal},
                        summary=config.errors)
        config_tab.bind(config, form=form, settings=settings)
        show_dataset, dataset_outputs = dataset_tab.bind(dataset, form=form, store=store, registry=registry,
                                                         settings=settings)
        train_tab.bind(train, form=form, registry=registry)
        runs_tab.bind(runs, registry=registry)
        publish_tab.bind(publish, registry=registry)
        playground_tab.bind(playground, registry=registry)
        blocks.load(show_dataset, None, dataset_outputs, api_visibility="private", show_progress="hidden")
    return UI(blocks=blocks, registry=registry, store=store)
