"""The machine's GPUs: which device a job trains on, how many GPUs, their memory and name.

NVIDIA GPUs when `nvidia-smi` lists any, else the CPU (TRAINER_DEVICE forces one). GPU_MEMORY_GB stands in for the
memory on a machine planning for another (a dry run on a CPU machine).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

from core.settings import Settings

MIB_PER_GB = 1024
"""nvidia-smi's MiB per GB as this project states GPU memory (GiB, written GB as the card makers do)."""


@dataclass(frozen=True)
class GpuFacts:
    count: int
    memory_gb: float | None
    """Per GPU (the smallest when they differ), exact: nvidia-smi's MiB / 1024 (an L4's 23034 MiB is 22.49 GB);
    None when unknown."""
    source: str
    """"nvidia-smi", "GPU_MEMORY_GB" or "unknown"."""
    name: str | None = None
    """The card's name as nvidia-smi gives it ("NVIDIA H100 80GB HBM3"); None when unknown."""


@dataclass(frozen=True)
class GpuListing:
    """One line of nvidia-smi's `--query-gpu=name,memory.total --format=csv,noheader,nounits`."""

    name: str
    memory_gb: float


def parse_gpu_listing(text: str) -> list[GpuListing]:
    """nvidia-smi's `name, memory.total` lines (MiB) -> one GpuListing per GPU, memory in exact GB (not rounded: a
    card just under a size must be compared as it is). Lines it cannot read are left out."""
    found = []
    for line in text.splitlines():
        name, _, mib = line.rpartition(",")
        try:
            found.append(GpuListing(name=name.strip() or "unknown GPU", memory_gb=round(float(mib) / MIB_PER_GB, 2)))
        except ValueError:
            continue
    return found


def detect_device(settings: Settings) -> tuple[str, int]:
    """("cuda", gpu count) when NVIDIA GPUs are visible, else ("cpu", 0); TRAINER_DEVICE forces one, and an empty
    CUDA_VISIBLE_DEVICES hides them all."""
    if settings.device == "cpu" or settings.cuda_visible_devices == "":
        return "cpu", 0
    smi = shutil.which("nvidia-smi")
    count = 0
    if smi:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20, check=False)
        count = sum(1 for line in listing.stdout.splitlines() if line.startswith("GPU "))
    if settings.device == "cuda" or count:
        return "cuda", max(count, 1)
    return "cpu", 0


def gpu_facts(settings: Settings, *, gpu_count: int) -> GpuFacts:
    """GPU_MEMORY_GB when set, else nvidia-smi's answer, else unknown."""
    if settings.gpu_memory_gb:
        return GpuFacts(count=max(gpu_count, 1), memory_gb=settings.gpu_memory_gb, source="GPU_MEMORY_GB")
    smi = shutil.which("nvidia-smi")
    if smi and gpu_count:
        done = subprocess.run([smi, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=20, check=False)
        listing = parse_gpu_listing(done.stdout) if done.returncode == 0 else []
        if listing:
            smallest = min(listing, key=lambda gpu: gpu.memory_gb)
            return GpuFacts(count=len(listing), memory_gb=smallest.memory_gb, source="nvidia-smi",
                            name=smallest.name)
    return GpuFacts(count=gpu_count, memory_gb=None, source="unknown")


def plan_device(settings: Settings, *, dry_run: bool) -> tuple[str, GpuFacts]:
    """The device a job trains on and its GPU facts. A dry run on a machine without a GPU plans for the GPU that
    GPU_MEMORY_GB describes, so a CPU machine can check a job for the GPU it will run on."""

    device, count = detect_device(settings)
    if device == "cpu" and dry_run and settings.gpu_memory_gb and settings.device != "cpu":
        device, count = "cuda", 1
    return device, gpu_facts(settings, gpu_count=count) if device == "cuda" else GpuFacts(0, None, "unknown")
