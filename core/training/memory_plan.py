"""A LoRA job's GPU memory and system RAM, from the model's own size: what SimpleTuner holds on the GPU in each phase.

SimpleTuner runs in two phases (trainer.py `run`): first the text encoders and the VAE cache every caption's
embedding and every image's latents (the trained model is not on the GPU yet), then it unloads them
(`init_unload_text_encoder`, `init_unload_vae`), loads and quantizes the trained model, adds the LoRA and trains.
The peak is the larger phase. Training holds: the trained model's weights at the plan's precision (all of them, or
a small resident part with RamTorch offload), the LoRA with its gradients and optimizer state, the activations of
the resolution, frames and batch (calibrated per family on SimpleTuner's published figures,
core/data/gpu_estimates.json "memory_calibration"), the VAE for validation renders, and the CUDA runtime.
Parameter counts come from the weights' safetensors headers (core/models/sizes.py) or the committed table
core/data/model_sizes.json. Pure: no I/O beyond reading the committed tables and safetensors headers.
docs/gpu-plans.md explains every number.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from core.models import model_sizes
from core.settings import TABLES_DIR

SIZES_FILE = TABLES_DIR / "model_sizes.json"
ESTIMATES_FILE = TABLES_DIR / "gpu_estimates.json"
GIB = 1024 ** 3
"""This project's GB is the GiB nvidia-smi's MiB / 1024 gives (core/adapters/gpus.py)."""

BYTES_PER_PARAM = {"bf16": 2.0, "8bit": 1.02, "4bit": 0.53, "nf4": 0.53, "2bit": 0.28}
"""Stored bytes per weight: 8-bit adds a per-channel scale; 4-bit and nf4 a bf16 scale per block of 64-128
weights; 2-bit packs four weights a byte plus scales."""
RUNTIME_GB = 1.0
"""The CUDA context, cuBLAS/cuDNN workspaces and the allocator's reserve, on any plan."""
LORA_PARAMS_PER_RANK = 5e-4
"""LoRA parameters per rank, as a share of the trained model's: every attention and MLP projection adapted (FLUX's
rank-16 LoRA is about 90M parameters, SDXL's about 23M)."""
LORA_BYTES = {"bf16": 8, "fp32": 16}
"""Per LoRA parameter: the weight, its gradient and AdamW's two moments, in bf16 (adamw_bf16, optimi-*) or fp32."""
BF16_OPTIMIZERS = ("adamw_bf16", "optimi-")
NO_CHECKPOINTING_FACTOR = 4.0
"""Activations without gradient checkpointing: every block keeps its intermediates (about 4x the checkpointed)."""
RAMTORCH_RESIDENT = 0.05
"""With RamTorch offload (ramtorch_target_modules "blocks.*") the transformer blocks live in pinned system RAM and
stream through the GPU; what stays is the rest of the model (embeddings, norms, output head)."""
VAE_ENCODE_GB_PER_MP = 1.0
"""VAE encoding while latents are cached, per megapixel of each image (a frame of video) at once; tiling and
slicing (vae_enable_tiling / vae_enable_slicing) divide it by VAE_TILING_DIVISOR."""
VAE_TILING_DIVISOR = 4.0
VIDEO_TIME_COMPRESSION = 4
"""Video VAEs (Wan's) keep 1 + (frames - 1) / 4 latent frames."""

RAM_BASE_GB = 6.0
"""System RAM the trainer process needs anyway (Python, torch, the data loader)."""
RAM_CPU_QUANTIZE_FACTOR = 2.0
"""quantize_via cpu: the bf16 weights and their quantized copy in RAM at once; with RAM_BASE_GB this gives FLUX's
published 'about 50 GB of system memory' (SimpleTuner's FLUX quickstart) from its 22.2 GB bf16 transformer."""
RAM_RAMTORCH_FACTOR = 1.5
"""RamTorch: the pinned bf16 blocks plus the loading copy while they are pinned."""

HEADROOM_SHARE, HEADROOM_MIN_GB = 0.06, 1.5
"""A plan fits when its peak plus max(6% of the card, 1.5 GB) is within the card's memory: fragmentation, a larger
aspect bucket, a validation render."""


def headroom_gb(card_gb: float) -> float:
    return round(max(HEADROOM_SHARE * card_gb, HEADROOM_MIN_GB), 2)


@lru_cache(maxsize=1)
def size_table() -> dict[str, Any]:
    return json.loads(SIZES_FILE.read_text())


@lru_cache(maxsize=1)
def estimate_table() -> dict[str, Any]:
    return json.loads(ESTIMATES_FILE.read_text())


def precision_class(precision: str) -> str | None:
    """"bf16", "8bit", "4bit", "nf4", "2bit" for a base_model_precision; None for an unknown one."""
    return next((name for name, members in estimate_table()["precision_classes"].items() if precision in members),
                None)


# -- the model's size ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelParams:
    """Parameters per component (diffusers subfolder names) and where they come from."""

    components: dict[str, int]
    source: str

    @property
    def trained(self) -> int:
        """The model the LoRA trains: the transformer, or the UNet, else the largest component."""
        for name in ("transformer", "unet", "model"):
            if name in self.components:
                return self.components[name]
        return max(self.components.values())

    @property
    def text_encoders(self) -> list[int]:
        return [count for name, count in sorted(self.components.items()) if name.startswith("text_encoder")]

    @property
    def vae(self) -> int:
        return self.components.get("vae", 0)


def table_params(hub_id: str) -> ModelParams | None:
    """The committed table's entry for a Hub id (case-insensitive), with the sources of its figures."""
    entry = size_table()["models"].get(hub_id.strip().strip("/").lower())
    if entry is None:
        return None
    components = entry["components"]
    sources = sorted({part["source"] for part in components.values()})
    return ModelParams(components={name: int(part["params"]) for name, part in components.items()},
                       source=f"core/data/model_sizes.json ({'; '.join(sources)})")


def local_params(folder: Path) -> ModelParams | None:
    """A local diffusers folder's parameters from its safetensors headers; None without safetensors weights."""
    sizes = model_sizes(folder) if folder.exists() else {}
    if not sizes:
        return None
    return ModelParams(components={name: size.params for name, size in sizes.items()},
                       source=f"the safetensors headers of {folder}")


def hub_snapshot(hub_cache: Path | None, hub_id: str) -> Path | None:
    """The newest snapshot of a Hub id in a Hugging Face cache folder, if it is there."""
    if hub_cache is None or "/" not in hub_id:
        return None
    repo = hub_cache / ("models--" + hub_id.strip("/").replace("/", "--"))
    snapshots = sorted((repo / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime) if repo.is_dir() else []
    return snapshots[-1] if snapshots else None


def find_params(*, base_model: str, flavour_id: str | None, hub_cache: Path | None) -> ModelParams | None:
    """The job's model size: a local folder's headers, else the HF cache snapshot's, else the table's entry for the
    id (or for the flavour's id: a fine-tune has its base's architecture); None when none knows it."""
    local = Path(base_model)
    if local.is_absolute():
        return local_params(local)
    for hub_id in dict.fromkeys(i for i in (base_model, flavour_id) if i):
        snapshot = hub_snapshot(hub_cache, hub_id)
        found = local_params(snapshot) if snapshot else None
        found = found or table_params(hub_id)
        if found:
            return found
    return None


# -- the job's shape -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobShape:
    """What sizes the activations: per-sample pixels, frames, batch; and the LoRA and optimizer."""

    megapixels: float
    frames: int = 1
    batch: int = 1
    lora_rank: int = 16
    gradient_checkpointing: bool = True
    optimizer: str = "adamw_bf16"
    vae_batch: int = 1
    vae_tiling: bool = False
    offload_during_startup: bool = False
    text_encoder_offload: bool = False
    """ramtorch_text_encoder: the text encoders' layers stream from system RAM while captions are embedded."""
    references: int = 0
    """Input images of an edit pair per sample: their latent tokens join the target's in the transformer's sequence
    (FLUX.1 Kontext, Qwen-Image-Edit, LongCat-Image-Edit), each as long as the target's."""

    @property
    def latent_frames(self) -> int:
        return 1 + (max(self.frames, 1) - 1) // VIDEO_TIME_COMPRESSION

    @property
    def activation_units(self) -> float:
        """Megapixel-latent-frames per step, an edit pair's inputs counted: what activations scale with."""
        return self.megapixels * self.latent_frames * max(self.batch, 1) * (1 + max(self.references, 0))


def megapixels(resolution: float, resolution_type: str | None) -> float:
    """A SimpleTuner resolution as megapixels per sample: "area" is megapixels; "pixel" and "pixel_area" an edge
    (pixel: the shorter one; a square is assumed, the common bucket)."""
    if resolution_type == "area" or resolution <= 16:  # SimpleTuner reads a number this small as megapixels
        return float(resolution)
    return float(resolution) ** 2 / 1e6


# -- the estimate --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryEstimate:
    """GB (GiB) per part; `peak_gb` is what the GPU must hold, `ram_gb` what system RAM must (None: not checked)."""

    weights_gb: float
    lora_gb: float
    activations_gb: float
    runtime_gb: float
    vae_gb: float
    caching_gb: float
    """The first phase: text encoders and VAE caching embeddings and latents."""
    training_gb: float
    ram_gb: float | None
    ram_basis: str

    @property
    def peak_gb(self) -> float:
        return max(self.caching_gb, self.training_gb)

    def to_dict(self) -> dict[str, Any]:
        return {"weights_gb": self.weights_gb, "lora_gb": self.lora_gb, "activations_gb": self.activations_gb,
                "runtime_gb": self.runtime_gb, "caching_phase_gb": self.caching_gb,
                "training_phase_gb": self.training_gb}


def _gb(params: float, bytes_per_param: float) -> float:
    return params * bytes_per_param / GIB


def bf16_gb(params: int) -> float:
    """GB (GiB) of `params` parameters stored in bf16."""
    return _gb(params, 2)


def weights_gb(params: ModelParams, precision_class_name: str, *, ramtorch: bool = False) -> float:
    share = RAMTORCH_RESIDENT if ramtorch else 1.0
    return _gb(params.trained * share, BYTES_PER_PARAM[precision_class_name])


def lora_gb(params: ModelParams, shape: JobShape) -> float:
    kind = "bf16" if shape.optimizer.startswith(BF16_OPTIMIZERS) else "fp32"
    return _gb(params.trained * LORA_PARAMS_PER_RANK * shape.lora_rank, LORA_BYTES[kind])


def fixed_training_gb(params: ModelParams, shape: JobShape, precision_class_name: str, *, ramtorch: bool) -> float:
    """Training-phase memory without the activations."""
    return (weights_gb(params, precision_class_name, ramtorch=ramtorch) + lora_gb(params, shape) + RUNTIME_GB
            + _gb(params.vae, 2))


def caching_gb(params: ModelParams, shape: JobShape) -> float:
    """Text encoders (bf16; all at once, or one at a time with offload_during_startup) and the VAE encoding."""
    encoders = params.text_encoders or [0]
    held = float(max(encoders) if shape.offload_during_startup else sum(encoders))
    if shape.text_encoder_offload:
        held *= RAMTORCH_RESIDENT
    encode = VAE_ENCODE_GB_PER_MP * shape.megapixels * max(shape.vae_batch, 1) * shape.latent_frames
    if shape.vae_tiling:
        encode /= VAE_TILING_DIVISOR
    return _gb(held + params.vae, 2) + encode + RUNTIME_GB


def ram_needed(params: ModelParams, *, quantize_on_cpu: bool, ramtorch: bool,
               text_encoder_offload: bool = False) -> tuple[float | None, str]:
    """(GB of system RAM, why) for CPU quantization or RamTorch offload; (None, why) when neither is used."""
    bf16 = _gb(params.trained, 2)
    if ramtorch:
        encoders = _gb(sum(params.text_encoders), 2) if text_encoder_offload else 0.0
        why = "RamTorch keeps the transformer blocks" + (" and the text encoders" if encoders else "") + " in RAM"
        return round(RAM_BASE_GB + RAM_RAMTORCH_FACTOR * (bf16 + encoders), 1), why
    if quantize_on_cpu:
        return round(RAM_BASE_GB + RAM_CPU_QUANTIZE_FACTOR * bf16, 1), "quantize_via cpu quantizes in RAM"
    return None, "no CPU quantization or offload"


@dataclass(frozen=True)
class Calibration:
    coefficient: float
    """Activation GB per billion trained parameters per megapixel-latent-frame (checkpointed, batch 1)."""
    basis: str
    """The published figure it rests on, with its source."""


def _calibration_entry(family: str, flavour: str | None) -> dict[str, Any] | None:
    entry = estimate_table()["memory_calibration"].get(family)
    if entry is None:
        return None
    return entry.get("flavours", {}).get(flavour or "", entry)


def calibration(family: str, flavour: str | None) -> Calibration | None:
    """The family's (or flavour's) activation coefficient: the published figure minus everything but activations,
    per unit of model size and shape. A family borrowing another's (`like`) says so."""
    entry = _calibration_entry(family, flavour)
    if entry is None:
        return None
    if "like" in entry:
        borrowed = calibration(entry["like"], entry.get("like_flavour"))
        return None if borrowed is None else Calibration(
            borrowed.coefficient, f"{entry['note']}; borrowed: {borrowed.basis}")
    figure: dict[str, Any] = entry.get("figure") or {}
    params = table_params(figure["model"]) if figure else None
    if params is None:
        return None
    shape = figure_shape(figure)
    fixed = fixed_training_gb(params, shape, precision_class(figure["precision"]) or "bf16",
                              ramtorch=figure.get("ramtorch", False))
    coefficient = (figure["gb"] - fixed) / (params.trained / 1e9 * shape.activation_units)
    basis = (f"{figure['gb']:g} GB at {figure['precision']}, {figure['shape']}: {figure['source']}")
    return Calibration(coefficient=max(coefficient, 0.0), basis=basis)


def figure_shape(figure: Mapping[str, Any]) -> JobShape:
    return JobShape(megapixels=figure["megapixels"], frames=figure.get("frames", 1), batch=figure.get("batch", 1),
                    lora_rank=figure.get("lora_rank", 16))


def estimate(params: ModelParams, shape: JobShape, *, precision_class_name: str, calibrated: Calibration,
             ramtorch: bool = False, quantize_on_cpu: bool = False) -> MemoryEstimate:
    """The memory of one plan: both phases, and the RAM its quantization or offload needs."""
    activations = calibrated.coefficient * params.trained / 1e9 * shape.activation_units
    if not shape.gradient_checkpointing:
        activations *= NO_CHECKPOINTING_FACTOR
    weights = weights_gb(params, precision_class_name, ramtorch=ramtorch)
    lora = lora_gb(params, shape)
    vae = _gb(params.vae, 2)
    training = weights + lora + activations + RUNTIME_GB + vae
    ram, why = ram_needed(params, quantize_on_cpu=quantize_on_cpu and precision_class_name != "bf16",
                          ramtorch=ramtorch, text_encoder_offload=shape.text_encoder_offload)
    return MemoryEstimate(weights_gb=round(weights, 2), lora_gb=round(lora, 2), activations_gb=round(activations, 2),
                          runtime_gb=RUNTIME_GB, vae_gb=round(vae, 2), caching_gb=round(caching_gb(params, shape), 2),
                          training_gb=round(training, 2), ram_gb=ram, ram_basis=why)


def accelerator_quantize_gb(params: ModelParams) -> float:
    """quantize_via accelerator: the bf16 weights are moved to the GPU and quantized there, so they must fit once."""
    return round(_gb(params.trained, 2) + RUNTIME_GB, 2)
