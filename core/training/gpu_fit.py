"""Fit a job to the GPU: SimpleTuner's recipe for that GPU size, the base model's precision, the
estimated VRAM and time, and a refusal (naming what would fit) before a GPU minute is spent.

The recipe comes from core/simpletuner/recipes.py (SimpleTuner's examples); the estimates from
core/data/gpu_estimates.json, published figures each with its source (docs/families.md). Everything here is pure
(the device facts come from core/adapters/gpus.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

from core.adapters import GpuFacts
from core.errors import SpecError
from core.settings import TABLES_DIR
from core.simpletuner import Recipe, families_with_recipes, recipe_for

ESTIMATES_FILE = TABLES_DIR / "gpu_estimates.json"
CLASS_EXAMPLE = {"bf16": "no_change", "8bit": "int8-quanto", "4bit": "int4-quanto", "nf4": "nf4-bnb",
                 "2bit": "int2-quanto"}
"""A base_model_precision of each class of the estimate table, for messages."""
UNQUANTIZED = "no_change"

# The recipe's settings a CUDA job gets as defaults. The adapter ones only when the recipe trains the same kind of
# adapter as the job (a LyCORIS example's learning rate is no LoRA's).
MODEL_SETTINGS = ("flow_schedule_shift", "flow_schedule_auto_shift", "gradient_checkpointing",
                  "gradient_checkpointing_interval", "resolution", "resolution_type")
VALIDATION_SETTINGS = ("validation_guidance", "validation_guidance_real", "validation_num_inference_steps")
ADAPTER_SETTINGS = ("optimizer", "learning_rate", "lora_rank", "lora_alpha")


@dataclass(frozen=True)
class GpuPlan:
    """What a job gets on this GPU, and whether it fits."""

    family: str
    flavour: str | None
    gpu_memory_gb: float | None
    gpu_count: int
    recipe: str | None
    """The SimpleTuner example the defaults come from (None: the family has none)."""
    tier_gb: int | None
    """The GPU size the plan is for: the example's tier, else the smallest GPU size that holds the estimate."""
    base_model_precision: str
    estimated_vram_gb: float | None
    vram_source: str
    fits: bool | None
    """None: no published figure to check against, or no GPU size known."""
    problem: str = ""
    """Why it does not fit, and what would (empty when it fits or is not checked)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Recipe defaults for the trainer config (native flag names); the job's own values win over them."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("settings")
        return data


# -- estimates -----------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def estimate_table() -> dict[str, Any]:
    return json.loads(ESTIMATES_FILE.read_text())


def precision_class(precision: str) -> str | None:
    """"bf16", "8bit", "4bit", "nf4", "2bit" for a base_model_precision; None for one without figures."""
    return next((name for name, members in estimate_table()["precision_classes"].items() if precision in members),
                None)


def _family_figures(family: str, flavour: str | None) -> dict[str, Any]:
    entry = estimate_table()["families"].get(family, {})
    return {**{k: v for k, v in entry.items() if k != "flavours"}, **entry.get("flavours", {}).get(flavour or "", {})}


def vram_estimate(family: str, flavour: str | None, precision: str) -> tuple[float | None, str]:
    """(GB, source) for a LoRA of this family at this precision; (None, why) without a published figure. A
    precision with no figure of its own is bounded by the next heavier one's (quantizing more never costs more)."""
    figures = _family_figures(family, flavour)
    vram, wanted = figures.get("vram_gb", {}), precision_class(precision)
    if wanted is None:
        return None, f"no published figure for {precision}"
    order = list(estimate_table()["precision_classes"])
    for name in reversed(order[: order.index(wanted) + 1]):
        if name in vram:
            bound = "" if name == wanted else f" (the {name} figure, an upper bound for {wanted})"
            return float(vram[name]), figures["vram_source"] + bound
    return None, f"no published figure for {family} at {wanted}"


def gpu_tier(gb: float) -> int:
    """The smallest common GPU size that holds `gb`."""
    return next((size for size in estimate_table()["gpu_sizes_gb"] if size >= gb), int(gb))


def step_estimate(family: str, flavour: str | None, *, resolution: float | None) -> dict[str, Any] | None:
    """The published seconds-per-step figure closest to the job's resolution, with its conditions and source."""
    figures = _family_figures(family, flavour).get("step_s", [])
    if not figures:
        return None
    return dict(min(figures, key=lambda f: abs(f["resolution"] - (resolution or f["resolution"]))))


# -- the plan ------------------------------------------------------------------------------------------------------


def _recipe(family: str, flavour: str | None, memory: float | None) -> Recipe | None:
    return recipe_for(family, flavour, gpu_memory_gb=memory) if family in families_with_recipes() else None


def _recipe_settings(recipe: Recipe | None, config: Mapping[str, Any]) -> dict[str, Any]:
    if recipe is None:
        return {}
    same_adapter = config.get("model_type", "lora") == "lora" and \
        config.get("lora_type", "standard") == recipe.lora_type
    keys = MODEL_SETTINGS + VALIDATION_SETTINGS + (ADAPTER_SETTINGS if same_adapter else ())
    return {key: recipe.settings[key] for key in keys if recipe.settings.get(key) is not None}


def _fitting(family: str, flavour: str | None, memory: float) -> list[str]:
    """'int4 (about 13 GB)'-style notes of the precision classes published figures say fit in `memory`."""
    figures = _family_figures(family, flavour).get("vram_gb", {})
    return [f"{CLASS_EXAMPLE[name]} (about {gb:g} GB)" for name, gb in figures.items() if gb <= memory]


def plan_gpu(*, family: str, flavour: str | None, config: Mapping[str, Any], gpu: GpuFacts) -> GpuPlan:
    """The plan for this job on this GPU. Precision: the job's own, else the recipe's (the tier's, for a family
    with VRAM tiers), else unquantized. A lower precision than the recipe's is never picked for the user: it costs
    quality, so a job that does not fit is refused with the precisions that would."""
    memory = gpu.memory_gb
    recipe = _recipe(family, flavour, memory)
    settings = _recipe_settings(recipe, config)
    recipe_precision = (recipe.settings.get("base_model_precision") if recipe else None) or UNQUANTIZED
    precision = str(config.get("base_model_precision") or recipe_precision)
    same_flavour = recipe is not None and recipe.flavour == (flavour or recipe.flavour)
    if recipe is not None and recipe.quantized and precision != UNQUANTIZED and recipe.settings.get("quantize_via"):
        settings["quantize_via"] = recipe.settings["quantize_via"]
    settings["base_model_precision"] = precision

    estimate: float | None
    tier: int | None
    if recipe and recipe.tier_gb and same_flavour and precision == recipe_precision:
        estimate, source, tier = float(recipe.tier_gb), f"SimpleTuner's example {recipe.example} " \
            f"(written for a {recipe.tier_gb} GB GPU)", recipe.tier_gb
    else:
        estimate, source = vram_estimate(family, flavour, precision)
        tier = gpu_tier(estimate) if estimate is not None else (recipe.tier_gb if recipe else None)
    fits = None if memory is None or estimate is None else estimate <= memory
    plan = GpuPlan(family=family, flavour=flavour, gpu_memory_gb=memory, gpu_count=gpu.count,
                   recipe=recipe.example if recipe else None, tier_gb=tier, base_model_precision=precision,
                   estimated_vram_gb=estimate, vram_source=source, fits=fits, settings=settings)
    if fits is False:
        plan = _with_problem(plan, own_precision="base_model_precision" in config)
    return plan


def _with_problem(plan: GpuPlan, *, own_precision: bool) -> GpuPlan:
    memory = plan.gpu_memory_gb or 0
    said = "the job's" if own_precision else "the recipe's"
    fitting = _fitting(plan.family, plan.flavour, memory)
    here = (f"on this GPU, a lower base_model_precision would fit: {', '.join(fitting)}" if fitting
            else "no published precision fits this GPU")
    problem = (f"{plan.family}{' ' + plan.flavour if plan.flavour else ''} with base_model_precision "
               f"{plan.base_model_precision} ({said}) needs about {plan.estimated_vram_gb:g} GB of GPU memory "
               f"({plan.vram_source}); this GPU has {memory:g} GB. That is the {plan.tier_gb} GB tier: use a GPU "
               f"with {plan.tier_gb} GB or more, or set config.base_model_precision; {here}")
    return GpuPlan(**{**asdict(plan), "problem": problem})


def check_fit(plan: GpuPlan) -> None:
    """Refuse a job the GPU cannot hold, before anything is downloaded or trained."""
    if plan.fits is False:
        raise SpecError(plan.problem, field="config.base_model_precision")


def time_estimate(plan: GpuPlan, *, total_steps: int, resolution: float | None,
                  price_per_hour: float | None) -> dict[str, Any]:
    """The estimated time per step and in total (from a published figure, with its conditions), and the cost at
    the endpoint's GPU price when given. None values where there is no figure."""
    figure = step_estimate(plan.family, plan.flavour, resolution=resolution)
    out: dict[str, Any] = {"estimated_step_s": None, "estimated_total_s": None, "step_basis": None,
                           "gpu_price_per_hour": price_per_hour, "estimated_cost": None}
    if figure is None:
        out["step_basis"] = f"no published step time for {plan.family}"
        return out
    out["estimated_step_s"] = figure["seconds"]
    out["estimated_total_s"] = round(figure["seconds"] * total_steps)
    out["step_basis"] = (f"{figure['seconds']:g} s/step on an {figure['gpu']} at {figure['resolution']} px, "
                         f"{figure['precision']}, batch {figure['batch']}: {figure['source']}; another GPU, "
                         "precision or resolution runs at another speed")
    if price_per_hour:
        gpus = max(plan.gpu_count, 1)
        out["estimated_cost"] = round(out["estimated_total_s"] / 3600 * price_per_hour * gpus, 2)
    return out


def gpu_report(plan: GpuPlan | None, gpu: GpuFacts, *, total_steps: int, resolution: float | None,
               price_per_hour: float | None) -> dict[str, Any] | None:
    """The preflight report's `gpu` part: the plan, where the GPU facts come from, and the time and cost."""
    if plan is None:
        return None
    return {**plan.to_dict(), "gpu_memory_source": gpu.source,
            **time_estimate(plan, total_steps=total_steps, resolution=resolution, price_per_hour=price_per_hour)}
