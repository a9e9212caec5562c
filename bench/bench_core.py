"""Overhead of the core over bare SimpleTuner: the same tiny job, (a) `python -m core run` and (b) `simpletuner train`
on the files the core generated, alternated, several runs each. Prints wall times and the ratio (goal: <= 1.03).

    .venv/bin/python bench/bench_core.py --steps 50 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.adapters import OFFLINE_ENV  # noqa: E402
from core.generation import build_tiny_model, write_demo_dataset  # noqa: E402
from core.settings import Settings  # noqa: E402


def timed(command: list[str], *, cwd: Path, env: dict) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{command[:3]} failed:\n{done.stderr[-3000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    settings = Settings.from_env()
    base = Path(tempfile.mkdtemp(prefix="bench-core-"))
    model = build_tiny_model(ROOT / ".cache" / "tiny-sdxl", settings=settings)
    dataset = write_demo_dataset(base / "dataset", count=6)
    job = {"input": {"dataset": {"path": str(dataset)}, "trigger_word": "sks",
                     "config": {"model_family": "sdxl", "model_name": str(model), "resolution": 128,
                                "max_train_steps": args.steps, "checkpointing_steps": args.steps, "lora_rank": 4},
                     "dataloader": {"minimum_image_size": 64}}}
    job_file = base / "job.json"
    job_file.write_text(json.dumps(job))
    env = {**os.environ, "TRAINER_DEVICE": "cpu", "CUDA_VISIBLE_DEVICES": ""}
    core_times, bare_times = [], []
    for run in range(args.runs):
        workdir = base / f"core-{run}"
        core_times.append(timed([sys.executable, "-m", "core", "run", str(job_file), "--workdir", str(workdir)],
                                cwd=ROOT, env=env))
        # Bare SimpleTuner on the same generated files: its own CLI, in a fresh folder, no webhook receiver.
        bare = base / f"bare-{run}"
        shutil.copytree(workdir / "trainer" / "config", bare / "config")
        config = json.loads((bare / "config" / "config.json").read_text())
        config.pop("--webhook_config")
        config["--output_dir"] = str(bare / "output")
        config["--data_backend_config"] = str(bare / "config" / "multidatabackend.json")
        backends = json.loads((bare / "config" / "multidatabackend.json").read_text())
        for backend in backends:
            for key in ("cache_dir_vae", "cache_dir"):
                if key in backend:
                    backend[key] = str(bare / "cache" / backend["id"])
        (bare / "config" / "multidatabackend.json").write_text(json.dumps(backends))
        (bare / "config" / "config.json").write_text(json.dumps(config))
        bare_env = {**env, **OFFLINE_ENV, "PATH": f"{settings.trainer_bin}:{env['PATH']}", "MIXED_PRECISION": "no",
                    "SIMPLETUNER_DISABLE_TQDM": "1"}
        bare_times.append(timed([str(settings.trainer_bin / "simpletuner"), "train"], cwd=bare, env=bare_env))
        print(f"run {run + 1}: core {core_times[-1]:.2f}s  bare simpletuner {bare_times[-1]:.2f}s", flush=True)
    core_median, bare_median = statistics.median(core_times), statistics.median(bare_times)
    print(f"steps={args.steps} runs={args.runs}")
    print(f"python -m core run : median {core_median:.2f}s  (all: {', '.join(f'{t:.2f}' for t in core_times)})")
    print(f"simpletuner train  : median {bare_median:.2f}s  (all: {', '.join(f'{t:.2f}' for t in bare_times)})")
    print(f"ratio core/bare    : {core_median / bare_median:.3f}  (goal <= 1.03)")
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
