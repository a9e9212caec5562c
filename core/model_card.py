"""The model card: the facts of one training run, rendered into the README.md a Hub repo shows.

`CardFacts` is the data; `render_model_card` fills the template. The YAML header is what the Hub and
diffusers read (base model, library, tags, trigger word as `instance_prompt`, the validation gallery as
`widget`); the body is for people: how to load the LoRA, the trigger word, and how it was trained.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from string import Template

from core.result import human_duration
from core.secrets import sanitize_config

BASE_TAGS = ["lora", "diffusers", "text-to-image", "simpletuner", "template:sd-lora"]

# The diffusers pipeline class that loads each model family's LoRA; others get the generic loader.
PIPELINE_CLASSES = {
    "sdxl": "StableDiffusionXLPipeline",
    "flux": "FluxPipeline",
    "sd3": "StableDiffusion3Pipeline",
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

HUB_MODEL_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


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
    config: dict
    """SimpleTuner's config.json as trained; secrets are removed again here before it is shown."""
    validation: list[tuple[str, str]]
    """(image path inside the repo, prompt) for each validation image."""
    license: str | None = None
    tags: list[str] = field(default_factory=list)


CARD_BODY = Template("""\
# $title

A LoRA for $base_model_md ($model_family), trained with [SimpleTuner](https://github.com/bghira/SimpleTuner).

## Trigger word

$trigger_md

## Use it with diffusers

```python
import torch
from diffusers import $pipeline_class

pipeline = $pipeline_class.from_pretrained($base_model_py, torch_dtype=torch.bfloat16).to("cuda")
pipeline.load_lora_weights($repo_id_py)  # a private repo needs a token: log in, or pass token=...
image = pipeline($prompt_py).images[0]
image.save("output.png")
```

## Training

| Setting | Value |
|---|---|
$settings_rows

$gallery## Training config

SimpleTuner's `config.json` as trained, with every token, key and password removed.

<details>
<summary>config.json</summary>

```json
$config_json
```

</details>
""")


def is_hub_model_id(name: str) -> bool:
    """A Hub repo id ('org/name' or a bare canonical name), not a local folder."""
    return bool(HUB_MODEL_ID.match(name)) and ".." not in name and not name.startswith(".")


def card_metadata(facts: CardFacts) -> dict:
    """The YAML header as a dict, in the order the Hub shows it."""
    meta: dict = {}
    if is_hub_model_id(facts.base_model):
        # A local folder is no base model the Hub can link to; the body still names it.
        meta["base_model"] = facts.base_model
    meta["library_name"] = "diffusers"
    if facts.license:
        meta["license"] = facts.license
    meta["pipeline_tag"] = "text-to-image"
    meta["tags"] = list(dict.fromkeys([*BASE_TAGS, facts.model_family, *facts.tags]))
    if facts.trigger_word:
        meta["instance_prompt"] = facts.trigger_word
    if facts.validation:
        meta["widget"] = [{"text": prompt, "output": {"url": path}} for path, prompt in facts.validation]
    return meta


def render_model_card(facts: CardFacts) -> str:
    """README.md text: YAML front matter the Hub parses, then the body."""
    import yaml  # huggingface_hub's own YAML library; the card is read back with its ModelCard

    header = yaml.safe_dump(card_metadata(facts), sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{header}---\n\n{_body(facts)}"


def _body(facts: CardFacts) -> str:
    shown = sanitize_config(facts.config)
    config = {key.lstrip("-"): value for key, value in shown.items()}
    on_hub = is_hub_model_id(facts.base_model)
    base_name = facts.base_model if on_hub else facts.base_model.rstrip("/").rsplit("/", 1)[-1]
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
            else "This LoRA was trained without a trigger word: it applies to any prompt."
        ),
        pipeline_class=PIPELINE_CLASSES.get(facts.model_family, "DiffusionPipeline"),
        base_model_py=json.dumps(facts.base_model),
        repo_id_py=json.dumps(facts.repo_id),
        prompt_py=json.dumps(prompt),
        settings_rows="\n".join(f"| {label} | {value} |" for label, value in _settings(facts, config)),
        gallery=_gallery(facts),
        config_json=json.dumps(shown, indent=2, sort_keys=True, default=str),
    )


def _example_prompt(facts: CardFacts) -> str:
    trigger = facts.trigger_word or ""
    for _, prompt in facts.validation:
        if not trigger or trigger in prompt:
            return prompt
    return f"a photo of {trigger}".strip() if trigger else "a photo"


def _settings(facts: CardFacts, config: dict) -> list[tuple[str, str]]:
    rows = [("Base model", f"`{facts.base_model}`"), ("Model family", facts.model_family)]
    for label, names in SETTINGS_ROWS:
        for name in names:
            if config.get(name) not in (None, ""):
                rows.append((label, _cell(config[name])))
                break
    rows.append(("Steps trained", str(facts.steps) if facts.steps is not None else "unknown"))
    rows.append(("Dataset size", f"{facts.dataset_size} images" if facts.dataset_size is not None else "unknown"))
    rows.append(("Final loss", f"{facts.final_loss:.4f}" if facts.final_loss is not None else "unknown"))
    rows.append(("Training time", human_duration(facts.elapsed_s) if facts.elapsed_s is not None else "unknown"))
    return rows


def _cell(value: object) -> str:
    # A table cell is one line; a pipe would end it early.
    return str(value).replace("|", "\\|").replace("\n", " ")


def _gallery(facts: CardFacts) -> str:
    if not facts.validation:
        return ""
    lines = ["## Validation images", "", "<Gallery />", ""]
    lines += [f"- `{path}`: {_cell(prompt)}" for path, prompt in facts.validation]
    return "\n".join(lines) + "\n\n"
