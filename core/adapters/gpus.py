"""Which device a job trains on: NVIDIA GPUs when `nvidia-smi` lists any, else the CPU (TRAINER_DEVICE forces one)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping

from core.settings import Settings


def detect_device(settings: Settings, env: Mapping[str, str] | None = None) -> tuple[str, int]:
    """("cuda", gpu count) when NVIDIA GPUs are visible, else ("cpu", 0); TRAINER_DEVICE forces one."""
    env = os.environ if env is None else env
    if settings.device == "cpu" or env.get("CUDA_VISIBLE_DEVICES") == "":
        return "cpu", 0
    smi = shutil.which("nvidia-smi")
    count = 0
    if smi:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20, check=False)
        count = sum(1 for line in listing.stdout.splitlines() if line.startswith("GPU "))
    if settings.device == "cuda" or count:
        return "cuda", max(count, 1)
    return "cpu", 0
