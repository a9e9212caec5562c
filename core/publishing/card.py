"""The model card: the facts of one training run, rendered into the README.md a Hub repo shows.

`CardFacts` is the data; `render_model_card` fills the template. The YAML header is what the Hub and
diffusers read (base model, licence, library, tags, trigger word as `instance_prompt`, the validation gallery as
`widget`); the body is for people: which file is for which tool, how to load the LoRA in diffusers and in ComfyUI,
the trigger word, and how it was trained.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from string import Template
from typing import cast

from core.adapters import is_hub_model_id
from core.outputs import LORA_FILE
from core.publishing.card_pairs import CardPair
from core.publishing.lora_files import comfyui_reads_diffusers_file
from core.result import human_duration
from core.secrets import sanitize_config
from core.simpletuner import VIDEO_FAMILIES, edit_inputs, takes_input_image

BASE_TAGS = ["lora", "diffusers", "text-to-image", "simpletuner", "template:sd-lora"]
FULL_TAGS = ["diffusers", "text-to-image", "simpletuner", "full-finetune"]

# The diffusers pipeline class that loads each model family's LoRA; others get the generic loader.
PIPELINE_CLASSES = {
    "sdxl": "StableDiffusionXLPipeline",
    "flux": "FluxPipeline",
    "sd3": "StableDiffusion3Pipeline",
}
# An edit flavour's diffusers pipeline: it takes the input image beside the instruction.
EDIT_PIPELINES = {
    ("flux", "kontext"): "FluxKontextPipeline",
    ("qwen_image", "edit-v1"): "QwenImageEditPipeline",
    ("qwen_image", "edit-v2"): "QwenImageEditPlusPipeline",
    ("qwen_image", "edit-v2+"): "QwenImageEditPlusPipeline",
    ("qwen_image", "edit-v3"): "QwenImageEditPlusPipeline",
    ("longcat_image", "edit"): "LongCatImageEditPipeline",
}

# (row label, SimpleTuner flag names tried in order) for the training settings table.
SETTINGS_ROWS = [
    ("LoRA rank", ("lora_rank",)),
    ("LoRA alpha", ("lora_alpha",)),
    ("LoRA type", ("lora_type",)),
    ("Learning rate", ("learning_rate",)),
    ("LR scheduler", ("lr_scheduler",)),
    ("Optimizer", ("optimizer",)),
    ("Max steps", ("max_train_steps",)),
    ("Epochs", ("num_train_epochs",)),
    ("Batch size", ("train_batch_size",)),
    ("Gradient accumulation", ("gradient_accumulation_steps",)),
    ("Resolution", ("resolution",)),
    ("Mixed precision", ("mixed_precision",)),
    ("Seed", ("seed",)),
]

# Model families whose LoRA can also touch the text encoders (UNet models with CLIP): ComfyUI's LoraLoader takes
# both MODEL and CLIP; the others patch the model only.
VIDEO_SUFFIXES = (".mp4", ".webm")
"""Samples the card links rather than shows (the widget gallery is for images)."""
CLIP_LORA_FAMILIES = {"sdxl", "sd1x", "sd2x", "kolors"}
COMFYUI_FOLDER = "ComfyUI/models/loras/"
# Families whose trained model is a UNet (pipeline.unet); the others train pipeline.transformer.
UNET_FAMILIES = {"sdxl", "sd1x", "sd2x", "kolors", "deepfloyd"}
LYCORIS_CONFIG_FILE = "lycoris_config.json"
# The opening line per kind, and the "Trained" row of the settings table.
WHAT = {"lora": "A LoRA for", "lycoris": "A LyCORIS adapter ({algo}) for", "full": "A full fine-tune of"}
TRAINED = {"lora": "LoRA", "lycoris": "LyCORIS ({algo})", "full": "full fine-tune"}
FULL_COMFYUI_NOTE = ("a full fine-tune is a diffusers model folder, not a LoRA; ComfyUI loads a single-file "
                     "checkpoint, which this run did not write")
# ComfyUI maps SimpleTuner's LyCORIS key names (lycoris_<module path>) in its LoRA loader.
LYCORIS_COMFYUI = ("There is no separate ComfyUI file: ComfyUI's LoRA loader reads SimpleTuner's LyCORIS key "
                   "names (`lycoris_...`) as they are, for SDXL and the diffusers-named transformer models. ")



@dataclass(frozen=True)
class CardExpert:
    """One expert's LoRA in a repo of a two-expert model (Wan 2.2 A14B): its folder, and its ComfyUI file."""

    folder: str
    """high_noise | low_noise"""
    label: str
    """high-noise | low-noise"""
    comfyui_file: str | None = None
    """The ComfyUI-format file's name in the folder; None when there is none."""

    @property
    def lora(self) -> str:
        return f"{self.folder}/{LORA_FILE}"


@dataclass
class CardFacts:
    repo_id: str
    base_model: str
    model_family: str
    trigger_word: str | None
    steps: int | None
    final_loss: float | None
    elapsed_s: float | None
    dataset_size: int | None
    """Usable images."""
    config: dict
    """SimpleTuner's config.json as trained; secrets are removed again here before it is shown."""
    validation: list[tuple[str, str]]
    """(image path inside the repo, prompt) for each validation image."""
    license: str | None = None
    license_name: str | None = None
    """A custom licence's id (with license: other), e.g. flux-1-dev-non-commercial-license."""
    license_link: str | None = None
    tags: list[str] = field(default_factory=list)
    comfyui_file: str | None = None
    """The ComfyUI/kohya-format file's name in the repo; None when there is none."""
    comfyui_note: str | None = None
    """Why there is no ComfyUI file (shown instead of the ComfyUI instructions)."""
    kind: str = "lora"
    """What was trained (core/simpletuner/kinds.py): lora | lycoris | full."""
    lycoris: dict | None = None
    """A LyCORIS run's config (the card names its algorithm)."""
    full_component: tuple[str, str] | None = None
    """A full fine-tune's trained model: (its folder in the repo, the diffusers class that loads it)."""
    dataset_clips: int = 0
    """Usable video clips (a video family's dataset), beside the images."""
    dataset_frames: int = 0
    """The clips' frames, all together."""
    experts: list[CardExpert] = field(default_factory=list)
    """A two-expert model's LoRAs, one folder each (high-noise first); [] for any other run."""
    pairs: list[CardPair] = field(default_factory=list)
    """An edit run's before/after examples (core/publishing/card_pairs.py): shown in the body, their images go up
    with the repo."""
    dataset_pairs: int = 0
    """An edit run's training pairs (its dataset_size images are their targets)."""
    job_dir: str = ""
    """The job's folder on this machine: the config's paths inside it are shown relative to it (no server path)."""

    @property
    def flavour(self) -> str | None:
        value = self.config.get("--model_flavour", self.config.get("model_flavour"))
        return str(value) if value else None

    @property
    def edit(self) -> bool:
        """An edit model's LoRA: it turns an input image into another, as the instruction says."""
        return bool(self.pairs or self.dataset_pairs or edit_inputs(self.model_family, self.flavour))


CARD_BODY = Template("""\
# $title

$what $base_model_md ($model_family), trained with [SimpleTuner](https://github.com/bghira/SimpleTuner).

## Trigger word

$trigger_md

## Files

| File | Use it with |
|---|---|
$files_rows

## Use it with diffusers

$diffusers_md

## Use it with ComfyUI

$comfyui_md

## Training

| Setting | Value |
|---|---|
$settings_rows

$pairs_md$gallery## Training config

SimpleTuner's `config.json` as trained, with every token, key and password removed.

<details>
<summary>config.json</summary>

```json
$config_json
```

</details>
""")


def card_metadata(facts: CardFacts) -> dict:
    """The YAML header as a dict, in the order the Hub shows it."""
    meta: dict = {}
    if is_hub_model_id(facts.base_model):
        # A local folder is no base model the Hub can link to; the body still names it.
        meta["base_model"] = facts.base_model
    meta["library_name"] = "diffusers"
    if facts.license:
        meta["license"] = facts.license
        if facts.license_name:
            meta["license_name"] = facts.license_name
        if facts.license_link:
            meta["license_link"] = facts.license_link
    meta["pipeline_tag"] = "image-to-image" if facts.edit else "text-to-image"
    if facts.kind == "full" and "base_model" in meta:
        meta["base_model_relation"] = "finetune"
    kind_tags = FULL_TAGS if facts.kind == "full" else [*BASE_TAGS, *(["lycoris"] if facts.kind == "lycoris" else [])]
    if facts.edit:
        kind_tags = [("image-to-image" if tag == "text-to-image" else tag) for tag in kind_tags]
    meta["tags"] = list(dict.fromkeys([*kind_tags, facts.model_family, *facts.tags]))
    if facts.trigger_word:
        meta["instance_prompt"] = facts.trigger_word
    # The Hub's widget gallery shows images; a video sample (.mp4) is linked in the body instead.
    widget = [{"text": prompt, "output": {"url": path}} for path, prompt in facts.validation
              if not path.endswith(VIDEO_SUFFIXES)]
    if widget:
        meta["widget"] = widget
    return meta


def render_model_card(facts: CardFacts) -> str:
    """README.md text: YAML front matter the Hub parses, then the body."""
    import yaml  # huggingface_hub's own YAML library; the card is read back with its ModelCard

    header = yaml.safe_dump(card_metadata(facts), sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{header}---\n\n{_body(facts)}"


def _local_name(base_model: str) -> str:
    return base_model.rstrip("/").rsplit("/", 1)[-1]


def _base_reference(facts: CardFacts) -> str:
    """The base model as the card's code loads it: its Hub id, or for a local folder a placeholder with the folder's
    name (a path on the training machine means nothing to a reader, and says where it trained)."""
    if is_hub_model_id(facts.base_model):
        return facts.base_model
    return f"<your copy of {_local_name(facts.base_model)}>"


def _within_job(value: object, job_dir: str) -> object:
    """`value` with every path inside the job's folder made relative to it (output/, trainer/config/...)."""
    if isinstance(value, str) and job_dir and value.startswith(job_dir.rstrip("/") + "/"):
        return value[len(job_dir.rstrip("/")) + 1:]
    if isinstance(value, dict):
        return {key: _within_job(item, job_dir) for key, item in value.items()}
    if isinstance(value, list):
        return [_within_job(item, job_dir) for item in value]
    return value


def _body(facts: CardFacts) -> str:
    shown = {key: _base_reference(facts) if value == facts.base_model else value  # no path of the trainer's machine
             for key, value in cast(dict, _within_job(sanitize_config(facts.config), facts.job_dir)).items()}
    config = {key.lstrip("-"): value for key, value in shown.items()}
    on_hub = is_hub_model_id(facts.base_model)
    base_name = facts.base_model if on_hub else _local_name(facts.base_model)
    prompt = _example_prompt(facts)
    return CARD_BODY.substitute(
        title=facts.repo_id.rsplit("/", 1)[-1],
        base_model_md=(
            f"[{base_name}](https://huggingface.co/{base_name})" if on_hub else f"`{base_name}` (a local model)"
        ),
        model_family=facts.model_family,
        trigger_md=(
            f"Use `{facts.trigger_word}` in your prompt: every training caption had it."
            if facts.trigger_word
            else f"This {_noun(facts)} was trained without a trigger word: it applies to any prompt."
        ),
        files_rows="\n".join(f"| `{name}` | {use} |" for name, use in _files(facts)),
        comfyui_md=_comfyui(facts),
        what=WHAT.get(facts.kind, WHAT["lora"]).format(algo=_algo(facts)),
        diffusers_md=_diffusers(facts, prompt=prompt),
        settings_rows="\n".join(f"| {label} | {value} |" for label, value in _settings(facts, config)),
        gallery=_gallery(facts),
        pairs_md=_pairs(facts),
        config_json=json.dumps(shown, indent=2, sort_keys=True, default=str),
    )


def _files(facts: CardFacts) -> list[tuple[str, str]]:
    if facts.experts:
        return _expert_files(facts.experts)
    if facts.kind == "full":
        folder = facts.full_component[0] if facts.full_component else "unet/ or transformer/"
        return [(f"{folder.rstrip('/')}/", "the fine-tuned model: diffusers' `from_pretrained(repo, subfolder=...)`"),
                ("vae/, scheduler/, model_index.json", "the rest of the pipeline, as SimpleTuner saved it")]
    if facts.kind == "lycoris":
        return [(LORA_FILE, f"the LyCORIS adapter ({_algo(facts)}): the `lycoris` library (below) and ComfyUI"),
                (LYCORIS_CONFIG_FILE, "the LyCORIS config it was trained with")]
    rows = [(LORA_FILE, "diffusers (`load_lora_weights`) and the Hub's inference widget"
                        + (", and ComfyUI as it is" if comfyui_reads_diffusers_file(facts.comfyui_note) else ""))]
    if facts.comfyui_file:
        rows.append((facts.comfyui_file, "ComfyUI, and other tools that load kohya-format LoRAs (Forge, "
                                         "Automatic1111, SwarmUI)"))
    return rows


def _comfyui(facts: CardFacts) -> str:
    if facts.experts:
        return _expert_comfyui(facts.experts)
    if facts.kind == "full":
        return f"Not applicable: {FULL_COMFYUI_NOTE}."
    if facts.kind == "lycoris":
        return LYCORIS_COMFYUI + _comfyui_steps(facts, LORA_FILE)
    if not facts.comfyui_file and comfyui_reads_diffusers_file(facts.comfyui_note):
        return (f"There is no separate ComfyUI file, and none is needed: ComfyUI's LoRA loader reads `{LORA_FILE}` "
                f"as it is (SimpleTuner saves this family's LoRA in the layout ComfyUI loads). "
                + _comfyui_steps(facts, LORA_FILE))
    if not facts.comfyui_file:
        why = facts.comfyui_note or "no ComfyUI-format file was written for this run"
        return f"This repo has no ComfyUI-format file: {_cell(why)}. ComfyUI may still load `{LORA_FILE}`."
    return _comfyui_steps(facts, facts.comfyui_file)


def _comfyui_steps(facts: CardFacts, name: str) -> str:
    clip = facts.model_family in CLIP_LORA_FAMILIES and facts.kind == "lora"  # LyCORIS trains no text encoder
    node = "LoraLoader" if clip else "LoraLoaderModelOnly"
    inputs: dict = {"lora_name": name, "strength_model": 1.0}
    if clip:
        inputs["strength_clip"] = 1.0
    inputs["model"] = ["1", 0]
    if clip:
        inputs["clip"] = ["1", 1]
    wiring = ("between your checkpoint loader and the sampler: its MODEL and CLIP outputs into the node, the node's "
              "outputs on to the KSampler and the prompt encoders" if clip else
              "after the node that loads the model (its MODEL output into the node, the node's MODEL on to the "
              "sampler)")
    workflow = json.dumps({"2": {"class_type": node, "inputs": inputs}})
    return (f"Download `{name}` into `{COMFYUI_FOLDER}`, then add a **{node}** node {wiring}, and pick `{name}` "
            f"as its `lora_name`. In an API-format workflow, where node \"1\" loads the base model:\n\n"
            f"```json\n{workflow}\n```")


def _diffusers(facts: CardFacts, *, prompt: str) -> str:
    """How to load this run in diffusers: a LoRA with load_lora_weights, a LyCORIS adapter with the lycoris
    library, a full fine-tune's model in place of the base pipeline's own."""
    pipeline_class = EDIT_PIPELINES.get((facts.model_family, facts.flavour or ""),
                                        PIPELINE_CLASSES.get(facts.model_family, "DiffusionPipeline"))
    base, repo, prompt_py = json.dumps(_base_reference(facts)), json.dumps(facts.repo_id), json.dumps(prompt)
    private_note = "# a private repo needs a token: log in, or pass token=..."
    component = "unet" if facts.model_family in UNET_FAMILIES else "transformer"
    if facts.experts:
        return _expert_diffusers(facts, repo=repo, base=base, prompt_py=prompt_py, private_note=private_note)
    if facts.kind == "full":
        folder, cls = facts.full_component or (component, "AutoModel")
        lines = ["import torch", f"from diffusers import {cls}, {pipeline_class}", "",
                 f"{folder} = {cls}.from_pretrained({repo}, subfolder={json.dumps(folder)}, "
                 f"torch_dtype=torch.bfloat16)  {private_note}",
                 f"pipeline = {pipeline_class}.from_pretrained({base}, {folder}={folder}, "
                 "torch_dtype=torch.bfloat16).to(\"cuda\")"]
        lead = (f"The repo holds the fine-tuned `{folder}` in diffusers' layout; the text encoders are the base "
                "model's, so load the base pipeline with this model in place of its own:\n\n")
    elif facts.kind == "lycoris":
        lines = ["import torch", f"from diffusers import {pipeline_class}",
                 "from huggingface_hub import hf_hub_download", "from lycoris import create_lycoris_from_weights", "",
                 f"pipeline = {pipeline_class}.from_pretrained({base}, torch_dtype=torch.bfloat16).to(\"cuda\")",
                 f"adapter = hf_hub_download({repo}, {json.dumps(LORA_FILE)})  {private_note}",
                 f"wrapper, _ = create_lycoris_from_weights(1.0, adapter, pipeline.{component})",
                 "wrapper.merge_to()"]
        lead = ("A LyCORIS adapter loads with the `lycoris` library (`pip install lycoris-lora`), not with "
                "diffusers' `load_lora_weights`:\n\n")
    else:
        lines = ["import torch", f"from diffusers import {pipeline_class}", "",
                 f"pipeline = {pipeline_class}.from_pretrained({base}, torch_dtype=torch.bfloat16).to(\"cuda\")",
                 f"pipeline.load_lora_weights({repo})  {private_note}"]
        lead = ""
    lines += _render_lines(facts, prompt_py=prompt_py)
    return lead + "```python\n" + "\n".join(lines) + "\n```"


def _render_lines(facts: CardFacts, *, prompt_py: str) -> list[str]:
    """The lines that render with the loaded pipeline: an image, or a video family's frames written to an .mp4
    (from a first frame for a model that takes an input image), or an edit model's image from the one it changes."""
    if facts.edit:  # an edit model takes the image to change beside the instruction
        return ["from diffusers.utils import load_image", "", 'source = load_image("input.png")  # the image to edit',
                f"image = pipeline(image=source, prompt={prompt_py}).images[0]", 'image.save("output.png")']
    if facts.model_family not in VIDEO_FAMILIES:
        return [f"image = pipeline({prompt_py}).images[0]", 'image.save("output.png")']
    if takes_input_image(facts.model_family, facts.flavour):
        return ["from diffusers.utils import export_to_video, load_image", "",
                'first_frame = load_image("first_frame.png")  # the image the video starts from',
                f"frames = pipeline(image=first_frame, prompt={prompt_py}).frames[0]",
                'export_to_video(frames, "output.mp4", fps=16)']
    return ["from diffusers.utils import export_to_video", "",
            f"frames = pipeline({prompt_py}).frames[0]", 'export_to_video(frames, "output.mp4", fps=16)']


# -- a two-expert model (Wan 2.2 A14B): one LoRA per expert -----------------------------------------------------

EXPERT_TRANSFORMER = {"high_noise": "transformer", "low_noise": "transformer_2"}
"""Which of diffusers' Wan 2.2 pipeline components runs each expert: `transformer` above the boundary (high
noise), `transformer_2` below it."""


def _expert_files(experts: list[CardExpert]) -> list[tuple[str, str]]:
    rows = []
    for expert in experts:
        rows.append((expert.lora, f"the {expert.label} expert, in diffusers (`load_lora_weights(..., weight_name=...)`,"
                                  f" into `{EXPERT_TRANSFORMER.get(expert.folder, 'transformer')}`)"))
        if expert.comfyui_file:
            rows.append((f"{expert.folder}/{expert.comfyui_file}",
                         f"the {expert.label} expert in ComfyUI: after the {expert.label} model's loader"))
    return rows


def _expert_comfyui(experts: list[CardExpert]) -> str:
    lines = ["A Wan 2.2 A14B workflow loads two models, the high-noise one for the first steps and the low-noise "
             "one for the rest (two KSamplerAdvanced nodes). Each expert's LoRA goes after its own model: download "
             f"each file into `{COMFYUI_FOLDER}` and add a **LoraLoaderModelOnly** node after the matching model "
             "loader (its MODEL output into the node, the node's MODEL on to that expert's sampler):", ""]
    for expert in experts:
        name = expert.comfyui_file or LORA_FILE
        note = "" if expert.comfyui_file else " (no ComfyUI-format file was written; ComfyUI may still load it)"
        lines.append(f"- the **{expert.label}** model's loader: `{expert.folder}/{name}`{note}")
    if len(experts) == 1:
        lines += ["", f"Only the {experts[0].label} expert was trained: the other model runs without a LoRA."]
    return "\n".join(lines)


def _expert_diffusers(facts: CardFacts, *, repo: str, base: str, prompt_py: str, private_note: str) -> str:
    flavour = str(facts.config.get("--model_flavour") or facts.config.get("model_flavour") or "")
    pipeline_class = "WanImageToVideoPipeline" if "i2v" in flavour else "WanPipeline"
    lines = ["import torch", f"from diffusers import {pipeline_class}", "",
             f"pipeline = {pipeline_class}.from_pretrained({base}, torch_dtype=torch.bfloat16).to(\"cuda\")"]
    for expert in facts.experts:
        into = ", load_into_transformer_2=True" if EXPERT_TRANSFORMER.get(expert.folder) == "transformer_2" else ""
        lines.append(f"pipeline.load_lora_weights({repo}, weight_name={json.dumps(expert.lora)}, "
                     f"adapter_name={json.dumps(expert.folder)}{into})  {private_note}")
    call = (f"pipeline(image=first_frame, prompt={prompt_py})" if pipeline_class == "WanImageToVideoPipeline"
            else f"pipeline({prompt_py})")
    lines += ["from diffusers.utils import export_to_video, load_image", "",
              *(['first_frame = load_image("first_frame.png")  # the image the video starts from']
                if pipeline_class == "WanImageToVideoPipeline" else []),
              f"frames = {call}.frames[0]", 'export_to_video(frames, "output.mp4", fps=16)']
    lead = ("Each expert has its own LoRA: the high-noise one goes into the pipeline's `transformer` (the steps "
            "above its `boundary_ratio`), the low-noise one into `transformer_2`:\n\n")
    return lead + "```python\n" + "\n".join(lines) + "\n```"


def _noun(facts: CardFacts) -> str:
    return {"full": "model", "lycoris": "LyCORIS adapter"}.get(facts.kind, "LoRA")


def _algo(facts: CardFacts) -> str:
    return str((facts.lycoris or {}).get("algo") or "LyCORIS")


def _example_prompt(facts: CardFacts) -> str:
    trigger = facts.trigger_word or ""
    for pair in facts.pairs:
        if pair.instruction and (not trigger or trigger in pair.instruction):
            return pair.instruction
    for _, prompt in facts.validation:
        if not trigger or trigger in prompt:
            return prompt
    return f"a photo of {trigger}".strip() if trigger else "a photo"


def _settings(facts: CardFacts, config: dict) -> list[tuple[str, str]]:
    base = facts.base_model if is_hub_model_id(facts.base_model) else _local_name(facts.base_model)
    rows = [("Base model", f"`{base}`"), ("Model family", facts.model_family),
            ("Trained", TRAINED.get(facts.kind, TRAINED["lora"]).format(algo=_algo(facts)))]
    for label, names in SETTINGS_ROWS:
        if label.startswith("LoRA") and facts.kind != "lora":
            continue  # a LyCORIS config or a full fine-tune has no LoRA rank
        for name in names:
            if config.get(name) not in (None, ""):
                rows.append((label, _cell(config[name])))
                break
    rows.append(("Steps trained", str(facts.steps) if facts.steps is not None else "unknown"))
    rows.append(("Dataset size", _dataset_size(facts)))
    rows.append(("Final loss", f"{facts.final_loss:.4f}" if facts.final_loss is not None else "unknown"))
    rows.append(("Training time", human_duration(facts.elapsed_s) if facts.elapsed_s is not None else "unknown"))
    return rows


def _dataset_size(facts: CardFacts) -> str:
    """'12 images', '3 clips (39 frames)', or both: what the LoRA learned from."""
    if facts.dataset_size is None:
        return "unknown"
    if facts.dataset_pairs:
        return f"{facts.dataset_pairs} edit pairs"
    clips = f"{facts.dataset_clips} clips ({facts.dataset_frames} frames)" if facts.dataset_clips else ""
    images = f"{facts.dataset_size} images" if facts.dataset_size or not clips else ""
    return ", ".join(part for part in (images, clips) if part)


def _cell(value: object) -> str:
    # A table cell is one line; a pipe would end it early.
    return str(value).replace("|", "\\|").replace("\n", " ")


def _pairs(facts: CardFacts) -> str:
    """Before and after: a few training pairs, each input beside the instruction and the output it learned."""
    if not facts.pairs:
        return ""
    lines = ["## Before and after", "",
             "Pairs it was trained on: the input image, the instruction, and the output it learned to make.", "",
             "| Input | Instruction | Output |", "|---|---|---|"]
    for pair in facts.pairs:
        inputs = " ".join(f"![input]({path})" for path in pair.inputs)
        lines.append(f"| {inputs} | {_cell(pair.instruction) or '(none)'} | ![output]({pair.output}) |")
    return "\n".join(lines) + "\n\n"


def _gallery(facts: CardFacts) -> str:
    if not facts.validation:
        return ""
    lines = ["## Validation images", "", "<Gallery />", ""]
    lines += [f"- [`{path}`]({path}) (video): {_cell(prompt)}" if path.endswith(VIDEO_SUFFIXES)
              else f"- `{path}`: {_cell(prompt)}" for path, prompt in facts.validation]
    return "\n".join(lines) + "\n\n"
