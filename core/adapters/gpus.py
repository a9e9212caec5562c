"""Which device a job trains on: NVIDIA GPUs when `nvidia-smi` lists any, else the CPU (TRAINER_DEVICE forces one)."""

from __future__ import annotations

import shutil
import subprocess

from core.settings import Settings


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
