"""Playground latency on the tiny SDXL model: the warm generation process (core/generation/playground.py) against a
one-shot
script that starts, loads the pipeline and renders one image each time (tools/generate_images.py --once).

Prints the cold first image, the next `--warm` images (each with a LoRA switched on at a new strength), the one-shot
runs, and the ratio of warm to one-shot (goal: <= 0.3).

    .venv/bin/python bench/bench_playground.py --warm 5 --oneshot 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.adapters import TrainerEnv  # noqa: E402
from core.generation import (  # noqa: E402
    GENERATE_SCRIPT,
    GenerateRequest,
    Playground,
    build_tiny_model,
)
from core.settings import Settings  # noqa: E402


def tiny_lora(model: Path, out: Path, settings: Settings) -> Path:
    """A random LoRA for the tiny UNet (peft's default init leaves B at zero; this one changes the image)."""
    code = """
import sys, torch
from diffusers import UNet2DConditionModel
from peft import LoraConfig, get_peft_model_state_dict
from diffusers.utils import convert_state_dict_to_diffusers
from safetensors.torch import save_file
torch.manual_seed(0)
unet = UNet2DConditionModel.from_pretrained(sys.argv[1], subfolder="unet")
unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                            init_lora_weights="gaussian"))
state = {f"unet.{k}": v for k, v in convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)).items()}
save_file(state, sys.argv[2])
"""
    out.parent.mkdir(parents=True, exist_ok=True)
    env = TrainerEnv(settings).env(device="cpu", offline=True)
    subprocess.run([str(settings.trainer_python), "-P", "-c", code, str(model), str(out)], env=env, check=True,
                   capture_output=True)
    return out


def one_shot(request: GenerateRequest, *, model: Path, lora: Path, out_dir: Path, settings: Settings) -> float:
    payload = {**request.model_dump(), "model": str(model), "lora": str(lora), "out_dir": str(out_dir),
               "name": "oneshot"}
    env = TrainerEnv(settings).env(device="cpu", offline=True)
    started = time.perf_counter()
    done = subprocess.run([str(settings.trainer_python), "-P", str(GENERATE_SCRIPT), "--once", json.dumps(payload)],
                          env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"the one-shot script failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--warm", type=int, default=5, help="images after the first, through the warm process")
    parser.add_argument("--oneshot", type=int, default=3, help="runs of the one-shot script")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()

    settings = Settings.from_env({"TRAINER_DEVICE": "cpu", "CUDA_VISIBLE_DEVICES": ""})
    work = Path(tempfile.mkdtemp(prefix="bench-playground-"))
    model = build_tiny_model(ROOT / ".cache" / "tiny-sdxl", settings=settings)
    lora = tiny_lora(model, work / "lora" / "pytorch_lora_weights.safetensors", settings)
    request = GenerateRequest(prompt="sks a red circle", steps=args.steps, width=args.size, height=args.size)

    playground = Playground(settings=settings, env={"PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": ""})
    try:
        started = time.perf_counter()
        playground.generate(request, model=str(model), lora=lora, out_dir=work / "warm", name="cold")
        cold = time.perf_counter() - started
        warm = []
        for index in range(args.warm):
            started = time.perf_counter()
            asked = request.model_copy(update={"strength": 0.5 + 0.25 * index, "seed": index})
            playground.generate(asked, model=str(model), lora=lora, out_dir=work / "warm", name=f"warm{index}")
            warm.append(time.perf_counter() - started)
    finally:
        playground.stop()
    shots = [one_shot(request, model=model, lora=lora, out_dir=work / "oneshot", settings=settings)
             for _ in range(args.oneshot)]

    warm_median, shot_median = statistics.median(warm), statistics.median(shots)
    print(f"tiny SDXL, {args.size}x{args.size}, {args.steps} steps, CPU")
    print(f"warm process: first image (cold) {cold:.2f} s; next {args.warm}: "
          + ", ".join(f"{t:.2f}" for t in warm) + f" s (median {warm_median:.2f} s)")
    print("one-shot script: " + ", ".join(f"{t:.2f}" for t in shots) + f" s (median {shot_median:.2f} s)")
    ratio = warm_median / shot_median
    print(f"warm / one-shot = {ratio:.3f} (goal <= 0.3): {'met' if ratio <= 0.3 else 'NOT met'}")


if __name__ == "__main__":
    main()
