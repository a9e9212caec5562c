"""Goal presets: what a LoRA is for (a likeness, a style, an object or concept) -> rank, learning rate, steps from
the dataset's size, caption strategy, resolution and crop, each with the reason it was chosen.

`plan_goal(spec, manifest)` runs once the dataset is staged (steps follow its size); `apply_goal(spec, goal)` is
the job with the goal's values under its own: anything the job sets itself wins. The preflight report carries the
plan (`goal`), so the dry run shows what was chosen and why.

Where each number comes from (written beside it in GOALS, and in docs/first-lora.md):
- rank 16 and learning rate 1e-4 for a subject: ai-toolkit's FLUX LoRA example (config/examples/
  train_lora_flux_24gb.yaml: `linear: 16`, `lr: 1e-4`, 2,000 steps, "500 - 4000 is a good range") and SimpleTuner's
  own `--lora_rank` default (16). The learning rate starts from SimpleTuner's example recipe for the model family
  (core/data/recipes.json) where it has one: its authors tuned it per family.
- about 100 steps per image for a likeness (15 images -> 1,500 steps): the kohya DreamBooth practice of
  repeats x epochs ~ 100 per image (a `10_name` folder trained 10 epochs); bounded by ai-toolkit's 500-4000 range.
- a style: rank 32 and half the learning rate over fewer passes per image (more, more varied images): a style is
  spread over every part of a picture, and the common kohya/ai-toolkit practice for style LoRAs is a larger rank
  and a gentler rate; the exact factors (x2 rank, x0.5 rate, 40 steps per image) are this project's choice.
- an object: a likeness's rank and rate, 80 steps per image (an object has fewer faces to learn than a person);
  square centre crops, since product-style photos hold the object in the middle. This project's choice.
- resolution: the family's own from SimpleTuner's recipe (its native training size); crops for a likeness and a
  style are off (aspect buckets keep whole heads and whole compositions).
- caption dropout 0.05: ai-toolkit's `caption_dropout_rate: 0.05` (the LoRA also answers the bare trigger).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from core.dataset import Manifest
from core.errors import SpecError
from core.simpletuner import recipe_for
from core.spec import DataloaderOptions, JobSpec

DEFAULT_LEARNING_RATE = 1e-4
"""A family with no SimpleTuner recipe: ai-toolkit's and SimpleTuner's FLUX LoRA rate."""
CLASS_WORDS = ("woman", "man", "girl", "boy", "person", "child", "lady", "guy", "character", "dog", "cat")
"""The class words a likeness's captions are searched for when the job gives none."""
CLASS_SHARE = 0.3
"""A class word is taken from the captions when at least this share of them say it."""


@dataclass(frozen=True)
class Goal:
    """One goal's preset; each `*_source` says what the number is based on."""

    rank: int
    rank_source: str
    learning_rate_scale: float
    learning_rate_source: str
    steps_per_image: int
    min_steps: int
    max_steps: int
    steps_source: str
    captions: str
    """"trigger+class": "<trigger> <class word>, ..."; "descriptions": full descriptions of everything but the
    style."""
    captions_source: str
    crop: dict[str, Any]
    crop_source: str
    caption_dropout: float
    min_images: int
    max_images: int
    images_source: str


GOALS: dict[str, Goal] = {
    "likeness": Goal(
        rank=16, rank_source="ai-toolkit's FLUX LoRA example (linear 16) and SimpleTuner's lora_rank default",
        learning_rate_scale=1.0, learning_rate_source="SimpleTuner's recipe for the family (its authors' rate)",
        steps_per_image=100, min_steps=800, max_steps=3000,
        steps_source="kohya DreamBooth practice: repeats x epochs ~ 100 per image; within ai-toolkit's 500-4000",
        captions="trigger+class",
        captions_source="DreamBooth's 'a [trigger] [class]' prompts: the class word anchors what the trigger is",
        crop={"crop": False},
        crop_source="aspect buckets, no crop: a crop can cut off a head or a face",
        caption_dropout=0.05, min_images=10, max_images=100,
        images_source="10-30 varied photos make a likeness (kohya/ai-toolkit guides); past 100 it learns poses"),
    "style": Goal(
        rank=32, rank_source="a style covers every part of a picture: twice a likeness's rank (this project's choice)",
        learning_rate_scale=0.5,
        learning_rate_source="half the family's recipe rate: a gentler rate over many images (this project's choice)",
        steps_per_image=40, min_steps=1000, max_steps=4000,
        steps_source="fewer passes per image over more images (this project's choice), within ai-toolkit's 500-4000",
        captions="descriptions",
        captions_source="describe everything but the style, so the trigger carries only the style",
        crop={"crop": False},
        crop_source="aspect buckets, no crop: the whole composition is part of a style",
        caption_dropout=0.05, min_images=20, max_images=1000,
        images_source="a style needs variety: 20 or more images of different subjects"),
    "object": Goal(
        rank=16, rank_source="as a likeness: ai-toolkit's linear 16, SimpleTuner's default",
        learning_rate_scale=1.0, learning_rate_source="SimpleTuner's recipe for the family (its authors' rate)",
        steps_per_image=80, min_steps=600, max_steps=2500,
        steps_source="a little less than a likeness's 100 per image (this project's choice)",
        captions="trigger+class",
        captions_source="DreamBooth's 'a [trigger] [class]' prompts: the class word anchors what the trigger is",
        crop={"crop": True, "crop_style": "center", "crop_aspect": "square"},
        crop_source="square centre crops: an object sits in the middle of most of its photos, one bucket batches",
        caption_dropout=0.05, min_images=8, max_images=100,
        images_source="8-30 photos from several angles (kohya/ai-toolkit guides)"),
}


@dataclass
class GoalPlan:
    """The goal's values for this job and dataset, and why each was chosen."""

    goal: str
    images: int
    config: dict[str, Any] = field(default_factory=dict)
    """SimpleTuner flags the goal sets (those the job did not set itself)."""
    backend: dict[str, Any] = field(default_factory=dict)
    """Image backend options the goal sets (the shorthand dataloader's; those the job did not set itself)."""
    kept: dict[str, Any] = field(default_factory=dict)
    """What the job set itself where the goal would have set something else: the job's value is used."""
    class_word: str | None = None
    class_word_source: str = ""
    reasons: list[str] = field(default_factory=list)
    """One line per choice: '<goal>: rank 16 because ...'."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def goal_of(name: str) -> Goal:
    return GOALS[name]


def plan_goal(spec: JobSpec, manifest: Manifest) -> GoalPlan | None:
    """The goal's plan for the staged dataset; None when the job names no goal."""
    if spec.goal is None:
        return None
    goal, name = GOALS[spec.goal], spec.goal
    images = len(manifest.images) + len(manifest.clips)
    plan = GoalPlan(goal=name, images=images)
    rate, rate_from = _recipe_rate(spec)
    steps = min(max(images * goal.steps_per_image, goal.min_steps), goal.max_steps)
    bound = "" if steps == images * goal.steps_per_image else \
        f", bounded to {goal.min_steps:,}-{goal.max_steps:,}"
    _choose(plan, spec, "lora_rank", goal.rank, f"rank {goal.rank} because {goal.rank_source}")
    _choose(plan, spec, "learning_rate", rate * goal.learning_rate_scale,
            f"learning rate {rate * goal.learning_rate_scale:g} because {goal.learning_rate_source} "
            f"({rate_from})")
    if "max_train_steps" in spec.config or "num_train_epochs" in spec.config:
        given = {key: spec.config[key] for key in ("max_train_steps", "num_train_epochs") if key in spec.config}
        plan.kept.update(given)
        plan.reasons.append(f"{name}: steps {_said(given)} as the job sets (the goal would train {steps:,} steps)")
    else:
        plan.config["max_train_steps"] = steps
        plan.reasons.append(f"{name}: {steps:,} steps = {images} images x {goal.steps_per_image}{bound} "
                            f"({goal.steps_source})")
    _resolution(plan, spec)
    _crop(plan, spec, goal)
    _captions(plan, spec, manifest, goal)
    return plan


def _choose(plan: GoalPlan, spec: JobSpec, key: str, value: Any, why: str) -> None:
    if key in spec.config:
        plan.kept[key] = spec.config[key]
        plan.reasons.append(f"{plan.goal}: {key} {spec.config[key]} as the job sets (the goal's: {value:g})")
        return
    plan.config[key] = value
    plan.reasons.append(f"{plan.goal}: {why}")


def _said(values: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in values.items())


def _recipe(spec: JobSpec) -> dict[str, Any]:
    try:
        return recipe_for(spec.model_family, spec.config.get("model_flavour"), gpu_memory_gb=None).settings
    except SpecError:
        return {}


def _recipe_rate(spec: JobSpec) -> tuple[float, str]:
    rate = _recipe(spec).get("learning_rate")
    if isinstance(rate, (int, float)) and rate > 0:
        return float(rate), f"{spec.model_family}'s recipe: {rate:g}"
    return DEFAULT_LEARNING_RATE, f"no recipe for {spec.model_family}: {DEFAULT_LEARNING_RATE:g}"


def _resolution(plan: GoalPlan, spec: JobSpec) -> None:
    recipe = _recipe(spec)
    if "resolution" not in recipe:
        plan.reasons.append(f"{plan.goal}: resolution left to the defaults (no SimpleTuner recipe for "
                            f"{spec.model_family})")
        return
    backend = spec.dataloader.backend_overrides if isinstance(spec.dataloader, DataloaderOptions) else {}
    if "resolution" in spec.config or "resolution" in backend:
        plan.kept["resolution"] = backend.get("resolution", spec.config.get("resolution"))
        plan.reasons.append(f"{plan.goal}: resolution {plan.kept['resolution']} as the job sets")
        return
    plan.config["resolution"] = recipe["resolution"]
    if "resolution_type" in recipe and "resolution_type" not in spec.config:
        plan.config["resolution_type"] = recipe["resolution_type"]
    plan.reasons.append(f"{plan.goal}: resolution {recipe['resolution']} ({recipe.get('resolution_type', 'pixel')}) "
                        f"because it is {spec.model_family}'s native training size in SimpleTuner's recipe")


def _crop(plan: GoalPlan, spec: JobSpec, goal: Goal) -> None:
    if not isinstance(spec.dataloader, DataloaderOptions):
        plan.reasons.append(f"{plan.goal}: crop and caption dropout left to the job's own dataloader list")
        return
    own = spec.dataloader.backend_overrides
    wanted = {**goal.crop, "caption_dropout_probability": goal.caption_dropout}
    kept = {key: own[key] for key in wanted if key in own}
    plan.kept.update(kept)
    plan.backend.update({key: value for key, value in wanted.items() if key not in own})
    crop = "square centre crops" if goal.crop.get("crop") else "no crop"
    plan.reasons.append(f"{plan.goal}: {crop} because {goal.crop_source}"
                        + (f" (the job's own: {_said(kept)})" if kept else ""))


def _captions(plan: GoalPlan, spec: JobSpec, manifest: Manifest, goal: Goal) -> None:
    own = sum(entry.caption_source in ("file", "inline", "column", "generated") for entry in manifest.images)
    if goal.captions == "descriptions":
        missing = len(manifest.images) - own
        note = "" if not missing else (f"; {missing} images have none: turn on captioning "
                                       "(captioning: {\"style\": \"detailed\"})")
        plan.reasons.append(f"{plan.goal}: captions are full descriptions because {goal.captions_source}"
                            f" ({own} of {len(manifest.images)} images have their own{note})")
        return
    plan.class_word, plan.class_word_source = _class_word(spec, manifest)
    trigger = spec.trigger_word or "(no trigger_word: set one)"
    lead = f"'{trigger} {plan.class_word}'" if plan.class_word else f"'{trigger}'"
    plan.reasons.append(f"{plan.goal}: captions lead with {lead} because {goal.captions_source}"
                        f" (class word {plan.class_word_source})")


def _class_word(spec: JobSpec, manifest: Manifest) -> tuple[str | None, str]:
    """The job's class_word, else the class word most captions say (a likeness's), else None."""
    if spec.class_word:
        return spec.class_word, "from the job's class_word"
    words = Counter(word for entry in manifest.images
                    for word in set(re.findall(r"[a-z]+", entry.caption.lower())) if word in CLASS_WORDS)
    if words and spec.goal == "likeness":
        word, count = words.most_common(1)[0]
        if count >= CLASS_SHARE * max(len(manifest.images), 1):
            return word, f"'{word}' taken from {count} of {len(manifest.images)} captions"
    return None, "not given and not found in the captions: set class_word (e.g. 'woman', 'dog', 'backpack')"


def apply_goal(spec: JobSpec, plan: GoalPlan | None) -> JobSpec:
    """The job with the goal's values where it set none itself (its own always win)."""
    if plan is None:
        return spec
    config = {**plan.config, **spec.config}
    update: dict[str, Any] = {"config": config}
    if isinstance(spec.dataloader, DataloaderOptions) and plan.backend:
        update["dataloader"] = DataloaderOptions.model_validate(
            {**plan.backend, **spec.dataloader.model_dump()})
    return spec.model_copy(update=update)
