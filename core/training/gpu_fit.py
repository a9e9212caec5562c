"""Fit a job to the GPU: the fastest plan the card holds (bf16 where it fits, quantization or RamTorch offload only
where needed), its estimated GPU memory, system RAM and time, and a refusal (naming what would fit) before a GPU
minute is spent.

For a model whose size is known (its safetensors headers, or core/data/model_sizes.json) the memory comes from the
model itself (core/training/memory_plan.py, calibrated on SimpleTuner's published figures; docs/gpu-plans.md). For
any other family: SimpleTuner's recipe for the GPU size (core/simpletuner/recipes.py) and the published figures of
core/data/gpu_estimates.json, each with its source (docs/families.md). Everything here is pure (the device facts
come from core/adapters/gpus.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import core.training.memory_plan as mp
from core.adapters import GpuFacts
from core.errors import SpecError
from core.simpletuner import Recipe, families_with_recipes, hub_ids, recipe_for
from core.training.memory_plan import estimate_table, precision_class

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
MEMORY_SETTINGS = ("offload_during_startup", "vae_enable_tiling", "vae_enable_slicing", "validation_num_video_frames")
"""What an example relies on to fit its GPU besides precision: carried whenever the plan uses its recipe."""
RAMTORCH = "ramtorch"
LADDER = (("no_change", False), ("int8-quanto", False), ("no_change", True), ("int4-quanto", False),
          ("nf4-bnb", False))
"""The plans tried, fastest first: unquantized, int8, RamTorch offload (bf16 blocks streamed from RAM; only for a
flavour with a RamTorch example), int4, nf4. The first that fits the GPU and the RAM is the plan."""
GPU_SIZES_FOR_ADVICE = (16, 24, 48, 80, 141)


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
    """None: no figure to check against, or no GPU size known."""
    problem: str = ""
    """Why it does not fit, and what would (empty when it fits or is not checked)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Recipe defaults for the trainer config (native flag names); the job's own values win over them."""
    headroom_gb: float | None = None
    """Kept free on the card: the plan fits when estimated_vram_gb + headroom_gb <= gpu_memory_gb."""
    ramtorch: bool = False
    quantize_via: str | None = None
    memory: dict[str, Any] = field(default_factory=dict)
    """The estimate's parts (weights, LoRA, activations, runtime) and phases (caching, training), in GB."""
    system_memory_gb: float | None = None
    estimated_ram_gb: float | None = None
    """System RAM the plan's CPU quantization or RamTorch offload needs (None: neither is used)."""
    alternatives: list[str] = field(default_factory=list)
    """Plans that would fit: a heavier precision on this card, or the card size this plan needs."""
    problem_field: str = "config.base_model_precision"
    frames: int = 1
    """Frames per sample (1 for images), for the time estimate."""
    references: int = 0
    """An edit pair's input images per sample, counted in the activations (their tokens join the target's)."""
    download_gb: float | None = None
    """The model's weights in bf16, every component (what the Hub download of its diffusers folder about weighs);
    None when the model's size is unknown."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("settings")
        data.pop("problem_field")
        return data


# -- estimates -----------------------------------------------------------------------------------------------------


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


def plan_gpu(*, family: str, flavour: str | None, config: Mapping[str, Any], gpu: GpuFacts,
             params: mp.ModelParams | None = None, frames: int = 1,
             system_memory_gb: float | None = None, references: int = 0) -> GpuPlan:
    """The plan for this job on this GPU. With the model's size (`params`) and a calibration for its family: the
    fastest plan of LADDER whose memory fits the card with headroom and whose CPU quantization or offload fits the
    system RAM; the job's own base_model_precision is the only one tried when it sets one. Without: the recipe's
    tier and the published figures (`_recipe_plan`). `frames`: frames per video sample (1 for images);
    `references`: an edit pair's input images per sample, whose latents lengthen the sequence (FLUX.1 Kontext packs
    the input's tokens beside the target's: one input doubles it)."""
    calibrated = mp.calibration(family, flavour) if params is not None else None
    if params is None or calibrated is None:
        return _recipe_plan(family=family, flavour=flavour, config=config, gpu=gpu)
    recipe = _recipe(family, flavour, None)
    base = _recipe_settings(recipe, config)
    if recipe is not None:
        base.update({key: recipe.settings[key] for key in MEMORY_SETTINGS if key in recipe.settings})
    ramtorch_recipe = _ramtorch_recipe(family, flavour, params)
    offloading = {key: value for key, value in (ramtorch_recipe.settings if ramtorch_recipe else {}).items()
                  if key.startswith(RAMTORCH) or key in MEMORY_SETTINGS}
    shape = _shape({**base, **config}, frames=frames, references=references)
    # e.g. ramtorch_text_encoder
    offload_shape = _shape({**base, **offloading, **config}, frames=frames, references=references)
    own = config.get("base_model_precision")
    ladder = [(str(own), bool(config.get(RAMTORCH)))] if own else \
        [(precision, offload) for precision, offload in LADDER if not offload or ramtorch_recipe is not None]
    tried = [_try(params, calibrated, offload_shape if offload and not own else shape, precision=precision,
                  ramtorch=offload, gpu=gpu, ram=system_memory_gb) for precision, offload in ladder]
    known = [t for t in tried if t is not None]
    if not known:  # the job's precision has no class: no model figure for it
        return _recipe_plan(family=family, flavour=flavour, config=config, gpu=gpu)
    fitting = [t for t in known if t.fits]
    if gpu.memory_gb is None:  # nothing to fit: SimpleTuner's own choice, for the presets and unknown cards
        wanted = (recipe.settings.get("base_model_precision") if recipe else None) or UNQUANTIZED
        chosen = next((t for t in known if t.precision == (own or wanted) and not t.ramtorch), known[0])
    else:
        chosen = fitting[0] if fitting else known[-1]  # none fits: the lightest, to name what it needs
    settings = {**base, "base_model_precision": chosen.precision}
    if chosen.ramtorch and ramtorch_recipe is not None:
        settings.update(offloading)
    if chosen.quantize_via:
        settings["quantize_via"] = chosen.quantize_via
    source = (f"model plan: {params.source}; activations calibrated on {calibrated.basis}")
    plan = GpuPlan(family=family, flavour=flavour, gpu_memory_gb=gpu.memory_gb, gpu_count=gpu.count,
                   recipe=(ramtorch_recipe if chosen.ramtorch and ramtorch_recipe else recipe).example
                   if recipe else None,
                   tier_gb=_smallest_card(chosen.estimate.peak_gb), base_model_precision=chosen.precision,
                   estimated_vram_gb=math.ceil(chosen.estimate.peak_gb * 10) / 10, vram_source=source,
                   fits=None if gpu.memory_gb is None else chosen.fits, settings=settings,
                   headroom_gb=mp.headroom_gb(gpu.memory_gb) if gpu.memory_gb else None, ramtorch=chosen.ramtorch,
                   quantize_via=chosen.quantize_via, memory=chosen.estimate.to_dict(),
                   download_gb=round(mp.bf16_gb(sum(params.components.values())), 1),
                   system_memory_gb=system_memory_gb, estimated_ram_gb=chosen.estimate.ram_gb,
                   alternatives=[t.label() for t in fitting if t is not chosen], frames=shape.frames,
                   references=shape.references)
    if plan.fits is False:
        plan = _model_problem(plan, chosen=chosen, tried=known, own=bool(own), ram=system_memory_gb)
    return plan


@dataclass(frozen=True)
class _Tried:
    precision: str
    ramtorch: bool
    quantize_via: str | None
    estimate: mp.MemoryEstimate
    fits_gpu: bool
    fits_ram: bool

    @property
    def fits(self) -> bool:
        return self.fits_gpu and self.fits_ram

    def label(self) -> str:
        how = " with RamTorch offload" if self.ramtorch else ""
        via = f", quantize_via {self.quantize_via}" if self.quantize_via else ""
        return f"{self.precision}{how} (about {self.estimate.peak_gb:.1f} GB{via})"


def _try(params: mp.ModelParams, calibrated: mp.Calibration, shape: mp.JobShape, *, precision: str,
         ramtorch: bool, gpu: GpuFacts, ram: float | None) -> _Tried | None:
    """One plan's estimate and fit; quantize_via accelerator when the RAM is short for cpu and the GPU holds the
    bf16 weights once."""
    name = precision_class(precision)
    if name is None:
        return None
    quantized = name != "bf16"
    estimate = mp.estimate(params, shape, precision_class_name=name, calibrated=calibrated, ramtorch=ramtorch,
                           quantize_on_cpu=quantized)
    via = "cpu" if quantized else None
    memory = gpu.memory_gb
    fits_gpu = memory is None or estimate.peak_gb + mp.headroom_gb(memory) <= memory
    fits_ram = ram is None or estimate.ram_gb is None or estimate.ram_gb <= ram
    if quantized and not fits_ram and memory is not None and \
            mp.accelerator_quantize_gb(params) + mp.headroom_gb(memory) <= memory:
        via, fits_ram = "accelerator", True
        estimate = replace(estimate, ram_gb=None, ram_basis="quantize_via accelerator quantizes on the GPU")
    return _Tried(precision=precision, ramtorch=ramtorch, quantize_via=via, estimate=estimate, fits_gpu=fits_gpu,
                  fits_ram=fits_ram)


def _smallest_card(peak_gb: float) -> int:
    """The smallest common card size whose memory holds the peak with headroom."""
    sizes = estimate_table()["gpu_sizes_gb"]
    return next((size for size in sizes if peak_gb + mp.headroom_gb(size) <= size), sizes[-1])


def _shape(settings: Mapping[str, Any], *, frames: int, references: int = 0) -> mp.JobShape:
    """The activations' shape from the job's settings over the recipe's (the trainer config's defaults)."""
    resolution = settings.get("resolution") or 1024
    try:
        pixels = mp.megapixels(float(resolution), settings.get("resolution_type"))
    except (TypeError, ValueError):
        pixels = mp.megapixels(1024, "pixel")
    return mp.JobShape(megapixels=pixels, frames=max(int(frames), 1), references=max(int(references), 0),
                       batch=int(settings.get("train_batch_size") or 1),
                       lora_rank=int(settings.get("lora_rank") or 16),
                       gradient_checkpointing=settings.get("gradient_checkpointing", True) is not False,
                       optimizer=str(settings.get("optimizer") or "adamw_bf16"),
                       # A video job's VAE encodes one tiled clip at a time (core/training/samples.py sets it so).
                       vae_batch=int(settings.get("vae_batch_size") or (1 if frames > 1 else 4)),
                       vae_tiling=bool(settings.get("vae_enable_tiling")) or frames > 1,
                       offload_during_startup=bool(settings.get("offload_during_startup")),
                       text_encoder_offload=bool(settings.get(RAMTORCH) and settings.get("ramtorch_text_encoder")))


def _ramtorch_recipe(family: str, flavour: str | None, params: mp.ModelParams) -> Recipe | None:
    """The flavour's own RamTorch example, else the family's RamTorch example of the flavour closest in size (Wan
    2.2 A14B has only TREAD examples; Wan 2.1 I2V 14B none): RamTorch streams any flavour's blocks alike, and an
    example's offload settings suit a model of its size."""
    own = _variant(family, flavour, RAMTORCH)
    if flavour is None or (own is not None and own.flavour == flavour):
        return own
    siblings = []
    for other, hub_id in hub_ids(family).items():
        recipe = _variant(family, other, RAMTORCH)
        sized = mp.table_params(hub_id) if recipe is not None and recipe.flavour == other else None
        if recipe is not None and sized is not None:
            siblings.append((abs(math.log(sized.trained / max(params.trained, 1))), recipe.example, recipe))
    return min(siblings, key=lambda item: item[:2])[2] if siblings else own


def _variant(family: str, flavour: str | None, variant: str) -> Recipe | None:
    try:
        return recipe_for(family, flavour, gpu_memory_gb=None, variant=variant) \
            if family in families_with_recipes() else None
    except SpecError:
        return None


def _model_problem(plan: GpuPlan, *, chosen: _Tried, tried: list[_Tried], own: bool, ram: float | None) -> GpuPlan:
    """The refusal: what the plan needs, and what would fit (another precision here, a larger card, more RAM)."""
    name = f"{plan.family}{' ' + plan.flavour if plan.flavour else ''}"
    said = "the job's" if own else "the lightest plan tried"
    memory = plan.gpu_memory_gb or 0
    if not chosen.fits_gpu:
        phase = "caching text embeddings and latents" if chosen.estimate.caching_gb > chosen.estimate.training_gb \
            else "training"
        why = (f"{name} with base_model_precision {chosen.precision}{' and RamTorch' if chosen.ramtorch else ''} "
               f"({said}) needs about {chosen.estimate.peak_gb:.1f} GB of GPU memory ({phase}; {plan.vram_source}) "
               f"plus {plan.headroom_gb:g} GB headroom; this GPU has {memory:g} GB")
        field_name = "config.base_model_precision"
    else:
        why = (f"{name} with base_model_precision {chosen.precision} ({said}) needs about "
               f"{chosen.estimate.ram_gb:g} GB of system RAM ({chosen.estimate.ram_basis}); this machine has "
               f"{ram:g} GB, and the GPU cannot hold the bf16 weights to quantize there (quantize_via accelerator)")
        field_name = "config.quantize_via"
    here = [t.label() for t in tried if t.fits and t is not chosen]
    advice = [f"on this GPU: {', '.join(here)}" if here else "no plan tried fits this GPU"]
    cards = [f"{t.precision}{' with RamTorch' if t.ramtorch else ''} on a {_smallest_card(t.estimate.peak_gb)} GB "
             "card" for t in tried if t.fits_ram]
    if cards:
        advice.append("the smallest card for each: " + ", ".join(cards))
    if not chosen.fits_ram and chosen.estimate.ram_gb:
        advice.append(f"a machine with {chosen.estimate.ram_gb:g} GB of RAM, or a GPU that holds the bf16 "
                      "weights (quantize_via accelerator)")
    if own:
        advice.append("or leave base_model_precision out to get the plan that fits")
    problem = f"{why}. What would fit: {'; '.join(advice)}"
    return replace(plan, problem=problem, problem_field=field_name, tier_gb=_smallest_card(chosen.estimate.peak_gb))


def _recipe_plan(*, family: str, flavour: str | None, config: Mapping[str, Any], gpu: GpuFacts) -> GpuPlan:
    """The plan of a model of unknown size. Precision: the job's own, else the recipe's (the tier's, for a family
    with VRAM tiers), else unquantized. A lower precision than the recipe's is never picked for the user: it costs
    quality, so a job that does not fit is refused with the precisions that would."""
    memory = gpu.memory_gb
    recipe = _recipe(family, flavour, memory)
    settings = _recipe_settings(recipe, config)
    if recipe is not None:
        settings.update({key: recipe.settings[key] for key in MEMORY_SETTINGS if key in recipe.settings})
        if recipe.settings.get(RAMTORCH):
            settings.update({key: value for key, value in recipe.settings.items() if key.startswith(RAMTORCH)})
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
                   estimated_vram_gb=estimate, vram_source=source, fits=fits, settings=settings,
                   ramtorch=bool(settings.get(RAMTORCH)), quantize_via=settings.get("quantize_via"))
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
    return replace(plan, problem=problem)


def check_fit(plan: GpuPlan) -> None:
    """Refuse a job the GPU (or the machine's RAM) cannot hold, before anything is downloaded or trained."""
    if plan.fits is False:
        raise SpecError(plan.problem, field=plan.problem_field)


def step_figure(plan: GpuPlan, *, gpu_name: str | None, units: float = 1.0) -> dict[str, Any] | None:
    """The published step time of the plan's family (and flavour), precision class and RamTorch choice; one on the
    card's own GPU class first, then the one measured closest to the job's `units` (megapixel-latent-frames). None
    when no source matches."""
    wanted = precision_class(plan.base_model_precision)
    figures = [f for f in estimate_table()["step_times"]
               if f["family"] == plan.family and f.get("flavour", plan.flavour) == plan.flavour
               and f["precision"] == wanted and bool(f.get("ramtorch")) == plan.ramtorch]
    same_gpu = [f for f in figures if gpu_name and f["gpu"].lower().removeprefix("rtx ") in gpu_name.lower()]
    def distance(figure: Mapping[str, Any]) -> float:
        measured = mp.JobShape(megapixels=figure["megapixels"], frames=figure.get("frames", 1)).activation_units
        return abs(math.log(max(units, 1e-6) / measured))

    best: dict[str, Any] | None = min(same_gpu or figures, key=distance) if figures else None
    return dict(best) if best else None


def time_estimate(plan: GpuPlan, *, total_steps: int, resolution: float | None, price_per_hour: float | None,
                  gpu_name: str | None = None, shape: mp.JobShape | None = None) -> dict[str, Any]:
    """The estimated time per step and in total: a published figure of the plan's family, precision and GPU class
    (core/data/gpu_estimates.json "step_times"), scaled by megapixels x latent frames x batch to the job's shape;
    and the cost at the endpoint's GPU price. None values, with the reason, where no source matches."""
    out: dict[str, Any] = {"estimated_step_s": None, "estimated_total_s": None, "step_basis": None,
                           "gpu_price_per_hour": price_per_hour, "estimated_cost": None}
    job = shape or mp.JobShape(megapixels=mp.megapixels(resolution or 1024, "pixel"))
    figure = step_figure(plan, gpu_name=gpu_name, units=job.activation_units)
    if figure is None:
        out["step_basis"] = (f"no published step time for {plan.family} at {plan.base_model_precision}"
                             f"{' with RamTorch' if plan.ramtorch else ''}")
        return out
    measured = mp.JobShape(megapixels=figure["megapixels"], frames=figure.get("frames", 1))
    seconds = round(figure["seconds"] * job.activation_units / measured.activation_units, 2)
    same = bool(gpu_name) and figure["gpu"].lower().removeprefix("rtx ") in (gpu_name or "").lower()
    out["estimated_step_s"] = seconds
    out["estimated_total_s"] = round(seconds * total_steps)
    out["step_basis"] = (f"{figure['seconds']:g} s/step on an {figure['gpu']} at {figure['shape']}, "
                         f"{figure['precision']}: {figure['source']}; scaled to this job's pixels, frames and batch"
                         + ("" if same else f"; this card is not an {figure['gpu']}, and another GPU runs at "
                            "another speed"))
    if price_per_hour:
        gpus = max(plan.gpu_count, 1)
        out["estimated_cost"] = round(out["estimated_total_s"] / 3600 * price_per_hour * gpus, 2)
    return out


def gpu_report(plan: GpuPlan | None, gpu: GpuFacts, *, total_steps: int, resolution: float | None,
               price_per_hour: float | None, experts: int = 1) -> dict[str, Any] | None:
    """The preflight report's `gpu` part: the plan, where the GPU facts come from, and the time and cost.
    `experts`: a job training both experts of a two-expert model runs `total_steps` once per expert, one after the
    other; the plan is one expert's (the two are never loaded together for training)."""
    if plan is None:
        return None
    total_steps *= experts
    shape = _shape({**plan.settings, "resolution": resolution or plan.settings.get("resolution"),
                    "resolution_type": "pixel" if resolution else plan.settings.get("resolution_type")},
                   frames=plan.frames)
    return {**plan.to_dict(), "gpu_memory_source": gpu.source, "gpu_name": gpu.name,
            **({"experts_in_sequence": experts} if experts > 1 else {}),
            **time_estimate(plan, total_steps=total_steps, resolution=resolution, price_per_hour=price_per_hour,
                            gpu_name=gpu.name, shape=shape)}
