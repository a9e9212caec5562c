"""Config tab: presets, the common SimpleTuner fields, advanced JSON, import and export of the worker's job JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from app.edge import surface
from app.form_view import FormView
from app.job_form import FIELDS, NO_GOAL, curl_example, job_to_form, spec_from_form
from app.presets import preset_fields, presets
from core.errors import SpecError
from core.settings import Settings
from core.spec import GOALS, model_families, parse_job, simpletuner_flags

MAX_IMPORT_BYTES = 1024 * 1024
GOAL_SETS = ("lora_rank", "lora_alpha", "learning_rate", "length")
"""The fields a chosen goal empties, so the goal's values apply (core/training/goals.py)."""


@dataclass
class ConfigTab:
    preset: gr.Radio
    note: gr.Markdown
    fields: dict[str, Any]
    """The config fields of the form (every name of FIELDS but dataset, trigger word, repo and goal)."""
    goal: gr.Dropdown
    """What the LoRA is for: asked first; a preset leaves it as it is."""
    errors: gr.Markdown
    import_file: gr.File
    import_text: gr.Textbox
    import_button: gr.Button
    import_status: gr.Markdown
    export_button: gr.Button
    job_json: gr.Code
    curl: gr.Code


PRESET_FIELDS: tuple[str, ...] = (
    "base_model", "model_family", "lora_rank", "lora_alpha", "learning_rate", "optimizer", "train_batch_size",
    "resolution", "checkpoint_step_interval", "validation_prompt", "sample_prompts", "sample_every", "seed",
    "schedule", "length", "extra_flags", "extra_job")
"""The Config tab's fields, which a preset sets, in the order /apply_preset returns them (after the note)."""


def build(*, settings: Settings, preset: str) -> ConfigTab:
    catalogue = presets(settings=settings)
    start = preset_fields(preset, settings=settings)
    with gr.Tab("Config", id="config"):
        goal = gr.Dropdown([("None: the fields below as they are", NO_GOAL), *((name, name) for name in GOALS)],
                           value=NO_GOAL, label="What is this LoRA for?", elem_id="goal",
                           info="likeness: a person or character; style: a look; object: a thing or concept. "
                                "Choosing one empties rank, alpha, learning rate and length: the goal sets them "
                                "(steps from the dataset's size), with captions and crops; a value you type wins. "
                                "Check dataset shows what and why")
        chosen = gr.Radio(list(catalogue), value=preset, label="Preset",
                          info="Sets the fields below to sensible LoRA defaults for the model")
        note = gr.Markdown(catalogue[preset]["note"])
        with gr.Row():
            base_model = gr.Textbox(start["base_model"], label="Base model", scale=3,
                                    info="Hub id or local folder of the model to train a LoRA for")
            family = gr.Dropdown(model_families(), value=start["model_family"], label="Model family",
                                 info="Guessed from the base model when empty")
        with gr.Row():
            rank = gr.Number(start["lora_rank"], label="LoRA rank", precision=0, info="Capacity: 4-64")
            alpha = gr.Number(start["lora_alpha"], label="LoRA alpha", info="Usually equal to the rank")
            rate = gr.Number(start["learning_rate"], label="Learning rate", info="1e-4 is a safe start")
            optimizer = gr.Dropdown(simpletuner_flags()["optimizer"]["choices"], value=start["optimizer"],
                                    label="Optimizer", info="Empty: adamw_bf16 on a GPU, torch-adamw on a CPU")
        with gr.Row():
            schedule = gr.Radio(["steps", "epochs"], value=start["schedule"], label="Train for",
                                info="A number of steps, or of passes over the dataset")
            length = gr.Number(start["length"], label="Steps or epochs", precision=0, info="How many")
            batch = gr.Number(start["train_batch_size"], label="Batch size", precision=0, info="Images per step")
            resolution = gr.Number(start["resolution"], label="Resolution", precision=0,
                                   info="Training size in pixels (shorter side)")
        with gr.Row():
            checkpoint = gr.Number(start["checkpoint_step_interval"], label="Checkpoint every", precision=0,
                                   info="Steps between saved checkpoints")
            prompt = gr.Textbox(start["validation_prompt"], label="Validation prompt", scale=2,
                                info="Rendered during training to show progress; empty: none")
            seed = gr.Number(start["seed"], label="Seed", precision=0, info="Same seed, same run")
        with gr.Row():
            sample_prompts = gr.Textbox(start["sample_prompts"], label="Sample prompts", lines=3, scale=3,
                                        elem_id="sample-prompts",
                                        info="One per line ([trigger] becomes the trigger): the Train tab's grid "
                                             "shows each at every interval. A line may be a JSON object with its "
                                             'own settings: {"prompt": "...", "seed": 7, "lora_scale": 0.8}')
            sample_every = gr.Number(start["sample_every"], label="Sample every", precision=0,
                                     info="Steps between renders (the sample prompts', else the validation "
                                          "prompt's); empty: at each checkpoint")
        with gr.Accordion("Advanced", open=False):
            extra_flags = gr.Textbox(start["extra_flags"], label="Other SimpleTuner flags (JSON)", lines=6,
                                     elem_classes=["mono"],
                                     info='Any flag of SimpleTuner\'s config.json, e.g. {"lr_scheduler": "cosine"}')
            extra_job = gr.Textbox(start["extra_job"], label="Other job fields (JSON)", lines=6,
                                   elem_classes=["mono"],
                                   info='dataloader, storage, timeout_s, resume_from, hub options, webhook: '
                                        '{"dataloader": {"repeats": 2}, "timeout_s": 7200}')
        errors = gr.Markdown()
        with gr.Row():
            with gr.Column():
                gr.Markdown("### Import a job\nA job JSON as the worker takes it (`{\"input\": {...}}` or the bare "
                            "job). It replaces every field, on all tabs.")
                import_file = gr.File(label="Job file (.json)", file_types=[".json"], type="filepath")
                import_text = gr.Textbox(label="…or paste it", lines=6, elem_classes=["mono"])
                import_button = gr.Button("Import")
                import_status = gr.Markdown()
            with gr.Column():
                gr.Markdown("### Export\nExactly the JSON the worker takes, and a request for a RunPod endpoint.")
                export_button = gr.Button("Export job JSON", variant="primary")
                job_json = gr.Code(language="json", label="Job JSON (worker input)", buttons=["copy", "download"])
                curl = gr.Code(language="shell", label="Copy as API request", buttons=["copy"])
    fields = {"base_model": base_model, "model_family": family, "lora_rank": rank, "lora_alpha": alpha,
              "learning_rate": rate, "optimizer": optimizer, "train_batch_size": batch, "resolution": resolution,
              "checkpoint_step_interval": checkpoint, "validation_prompt": prompt, "sample_prompts": sample_prompts,
              "sample_every": sample_every, "seed": seed, "schedule": schedule, "length": length,
              "extra_flags": extra_flags,
              "extra_job": extra_job}
    fields = {name: fields[name] for name in PRESET_FIELDS}  # /apply_preset returns them in this order
    return ConfigTab(chosen, note, fields, goal, errors, import_file, import_text, import_button, import_status,
                     export_button, job_json, curl)


def bind(tab: ConfigTab, *, form: FormView, settings: Settings) -> None:
    preset_names = list(PRESET_FIELDS)

    def apply_preset(name: str) -> list[Any]:
        values = preset_fields(name, settings=settings)
        return [presets(settings=settings)[name]["note"], *(values[field] for field in preset_names)]

    tab.preset.input(apply_preset, [tab.preset], [tab.note, *(form.components[f] for f in preset_names)],
                     api_name="apply_preset")
    goal_sets = [form.components[name] for name in GOAL_SETS]
    tab.goal.input(lambda goal: [None if goal else gr.skip() for _ in GOAL_SETS], [tab.goal], goal_sets,
                   api_visibility="private")

    @surface
    def import_job(job_text: str, job_file: str | None = None) -> list[Any]:
        """Replace the form with a job JSON (a file wins over pasted text). A job that does not parse or validate
        changes nothing."""
        text = _read_job_file(job_file) if job_file else (job_text or "")
        if not text.strip():
            raise SpecError("nothing to import: choose a .json file or paste a job", field="input")
        spec = parse_job(text)
        values = job_to_form(spec)
        token_note = " Its Hub token was not imported: give it on the Publish tab." \
            if spec.hub is not None and spec.hub.token is not None else ""
        return [*(values[name] for name in FIELDS), f"Imported.{token_note}"]

    imported = [*form.outputs, tab.import_status]
    tab.import_button.click(import_job, [tab.import_text, tab.import_file], imported, api_name="import_job") \
        .success(lambda: [*form.error_updates({}), ""], None, form.error_outputs, api_visibility="private")
    tab.import_file.upload(import_job, [tab.import_text, tab.import_file], imported, api_visibility="private") \
        .success(lambda: [*form.error_updates({}), ""], None, form.error_outputs, api_visibility="private")

    @surface
    def export_job(**values: Any) -> tuple[str, str]:
        """The worker's job JSON for the form, and a curl request for a RunPod endpoint."""
        job = spec_from_form(values).to_job_json()
        return json.dumps(job, indent=2), curl_example(job)

    form.validate_on(tab.export_button.click).then(export_job, inputs_kwargs=form.inputs,
                                                   outputs=[tab.job_json, tab.curl], api_name="export_job")


def _read_job_file(path: str) -> str:
    file = Path(path)
    if file.stat().st_size > MAX_IMPORT_BYTES:
        raise SpecError(f"{file.name} is larger than {MAX_IMPORT_BYTES // 1024} KB: not a job file", field="input")
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SpecError(f"{file.name} is not UTF-8 text", field="input") from None
