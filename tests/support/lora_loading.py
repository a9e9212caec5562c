"""Load a trained LoRA into its base model with diffusers, in the trainer env: tests/support/compare_lora_files.py's
report of which weights each file changed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from core.settings import Settings

SCRIPT = Path(__file__).resolve().parent / "compare_lora_files.py"


def compare_lora_files(*, settings: Settings, model: Path, lora: Path, comfyui: Path) -> dict[str, Any]:
    """The script's report (per component: weights changed by the diffusers file and by the ComfyUI file, their
    largest difference); AssertionError with the script's stderr when it fails."""
    done = subprocess.run([str(settings.trainer_python), "-P", str(SCRIPT), str(model), str(lora), str(comfyui)],
                          capture_output=True, text=True, timeout=600, check=False,
                          env={"PATH": f"{settings.trainer_bin}:/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": "",
                               "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
