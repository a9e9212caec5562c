"""Where a preview's pipeline goes, decided before a byte of it is loaded: all on the GPU, diffusers' model CPU
offload (one component on the GPU at a time), its sequential CPU offload (one layer at a time), or a refusal that
names the numbers.

A pure function of the model's parameters per component (core/models/sizes.py reads them from the safetensors
headers), the LoRA's, the GPU's memory (core/adapters/gpus.py) and the render's size. The weights are counted at
bf16 (2 bytes a parameter: the renderer loads bf16 on CUDA), and the working memory of a render as
core/training/samples.py's `render_working_gb` (the same figure decides whether SimpleTuner's own validation fits).
Offloading plans also tile and slice the VAE, so its decode never needs a whole image's (or video's) activations at
once. On the CPU nothing is planned: the pipeline runs there as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from core.errors import ErrorCode, JobError
from core.models import ComponentSize
from core.training import render_working_gb

GB = 1024**3
"""Bytes per GB as this project states GPU memory (nvidia-smi's MiB / 1024)."""
BF16_BYTES = 2
CUDA_CONTEXT_GB = 0.5
"""What the CUDA context and PyTorch's allocator hold before any weight."""
LAYER_GB = 1.0
"""Sequential offload keeps about one block's weights on the GPU at a time (a 12B transformer's largest block is
under 1 GB at bf16)."""
DENOISERS = ("transformer", "transformer_2", "unet", "prior", "decoder")
"""The components a LoRA patches (and the largest ones): what model offload must hold with the LoRA on it."""

CPU, GPU, MODEL_OFFLOAD, SEQUENTIAL_OFFLOAD = "cpu", "gpu", "model_offload", "sequential_offload"
PLACEMENTS = (CPU, GPU, MODEL_OFFLOAD, SEQUENTIAL_OFFLOAD)
"""What tools/generate_images.py takes as a request's `placement`."""
WHAT = {CPU: "on the CPU", GPU: "all on the GPU",
        MODEL_OFFLOAD: "model CPU offload (one component on the GPU at a time)",
        SEQUENTIAL_OFFLOAD: "sequential CPU offload (one layer on the GPU at a time: slow)"}


class PreviewTooLarge(JobError):
    """The GPU cannot hold even one layer at a time of this preview: refused before loading."""

    code = ErrorCode.GENERATE_FAILED
    stage = "generate"


@dataclass(frozen=True)
class PreviewPlan:
    placement: str
    """One of PLACEMENTS."""
    vae_tiling: bool
    """Tile and slice the VAE (where it can)."""
    gpu_memory_gb: float | None
    weights_gb: float
    """The model's weights at bf16, the LoRA's included (0 when the sizes are unknown)."""
    needed_gb: float
    """What the chosen placement needs on the GPU (0 on the CPU)."""
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line for a status or an event."""
        return f"{WHAT[self.placement]}{', VAE tiled' if self.vae_tiling else ''}: {self.reason}"


def _gb(params: int) -> float:
    return params * BF16_BYTES / GB


def plan_preview(*, device: str, sizes: Mapping[str, ComponentSize], gpu_memory_gb: float | None,
                 lora_params: int = 0, width: int = 1024, height: int = 1024, frames: int = 1) -> PreviewPlan:
    """The cheapest placement that fits, in order: all on the GPU, model offload, sequential offload. A GPU of
    unknown size, or a model of unknown size (no safetensors headers), goes all on the GPU as before. Raises
    PreviewTooLarge (naming the GB) when not even sequential offload fits."""
    if device != "cuda":
        return PreviewPlan(CPU, False, None, 0.0, 0.0, "no GPU")
    lora_gb = _gb(lora_params)
    components = {name: _gb(size.params) + (lora_gb if name in DENOISERS else 0.0) for name, size in sizes.items()}
    weights = sum(components.values()) or 0.0
    working = render_working_gb(width=width, height=height, frames=frames)
    video = frames > 1
    if not components or gpu_memory_gb is None:
        unknown = "the model's size" if not components else "the GPU's memory"
        return PreviewPlan(GPU, video, gpu_memory_gb, round(weights, 2), 0.0, f"{unknown} is unknown")
    largest = max(components.values())
    needs = {GPU: CUDA_CONTEXT_GB + weights + working, MODEL_OFFLOAD: CUDA_CONTEXT_GB + largest + working,
             SEQUENTIAL_OFFLOAD: CUDA_CONTEXT_GB + min(largest, LAYER_GB) + working}
    sizes_said = (f"the weights are {weights:.1f} GB at bf16 (largest component {largest:.1f} GB), a "
                  f"{width}x{height}{f'x{frames}' if video else ''} render needs about {working:.1f} GB more")
    for placement, needed in needs.items():
        if needed <= gpu_memory_gb:
            return PreviewPlan(placement, video or placement != GPU, gpu_memory_gb, round(weights, 2),
                               round(needed, 2), f"{sizes_said}; {needed:.1f} of the GPU's {gpu_memory_gb:g} GB")
    raise PreviewTooLarge(f"this preview cannot run on this GPU: {sizes_said}; even sequential CPU offload needs "
                          f"{needs[SEQUENTIAL_OFFLOAD]:.1f} GB and the GPU has {gpu_memory_gb:g} GB. Render smaller "
                          "(width, height, frames) or on a larger GPU", field="model")
