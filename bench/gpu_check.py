"""The GPU check (`make gpu-check`): each tiny family trains a few steps with the CUDA recipe on one GPU, then on all
GPUs, through `python -m core run`, and a table says step time, peak VRAM and pass/fail.

    .venv/bin/python bench/gpu_check.py             # every tiny family, 1 GPU then all GPUs
    .venv/bin/python bench/gpu_check.py --dry-run   # the plan only: what would run, with which settings
    .venv/bin/python bench/gpu_check.py --families sdxl,flux --steps 5 --json gpu-check.json

Nothing is downloaded: the tiny models are built offline (core/generation/demo.py), the dataset is generated. Each
run uses
the CUDA recipe: bf16 mixed precision, `adamw_bf16`, gradient checkpointing, the quantization of the family's
SimpleTuner example where it has one (int8), and validation images at the last step. Step time is the median gap
between the run's step lines; peak VRAM is the most `nvidia-smi` saw in use on any of the run's GPUs (polled twice
a second). Then the cache's GPU half: the SDXL job twice on one GPU with one cache folder (CACHE_DIR), the second
time with another learning rate, and a table of what SimpleTuner's VAE-latent and text-embedding stages took each
time, the latents taken from the cache, and the time to the first step (on CPU the latents are computed on the fly,
so only a CUDA machine measures their reuse; `--no-reuse` skips it). Exit status: 0 when every run passed, 1 when
one failed, 2 when there is no CUDA device.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.generation import TINY_FAMILIES, build_tiny_model, write_demo_dataset  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.simpletuner import recipe_for  # noqa: E402

# The flavour each tiny model stands for (its layout), as in tests/test_demo_families.py.
FLAVOURS = {"sdxl": None, "flux": "dev", "sd3": "medium", "chroma": "base", "qwen_image": "v1.0",
            "wan": "t2v-480p-1.3b-2.1"}
INT8 = "int8-quanto"
STEP_LINE = re.compile(r"\[training\] step (\d+)/(\d+)")
POLL_S = 0.5


@dataclass
class Run:
    family: str
    gpus: int
    config: dict
    passed: bool | None = None
    step_s: float | None = None
    peak_vram_gib: float | None = None
    elapsed_s: float | None = None
    error: str | None = None
    cache: dict | None = None
    """The result's `cache`: what the run took from the cache and what SimpleTuner's caching stages took."""
    steps_seen: list[float] = field(default_factory=list, repr=False)


def cuda_gpus() -> list[str]:
    """The GPU indices nvidia-smi lists (none without a driver or a GPU)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30, check=False)
    return [str(i) for i, line in enumerate(listing.stdout.splitlines()) if line.startswith("GPU ")]


def family_config(family: str, *, steps: int, resolution: int) -> dict:
    """The job config of one family's check: the CUDA recipe at the tiny model's size."""
    flavour = FLAVOURS.get(family)
    recipe = recipe_for(family, flavour, gpu_memory_gb=None)
    config: dict = {"model_family": family, "resolution": resolution, "max_train_steps": steps,
                    "checkpointing_steps": steps, "lora_rank": 4, "seed": 42, "mixed_precision": "bf16",
                    "optimizer": "adamw_bf16", "gradient_checkpointing": True,
                    "validation_prompt": "sks a red circle", "validation_steps": steps,
                    "validation_resolution": resolution, "validation_num_inference_steps": 2}
    if flavour:
        config["model_flavour"] = flavour
    if recipe.quantized:  # int8 where SimpleTuner's example quantizes (lower bit widths need real-size layers)
        config["base_model_precision"] = INT8
    if family == "wan":
        config["validation_num_video_frames"] = 1
    return config


def plan(families: list[str], *, steps: int, resolution: int, gpu_count: int | None) -> list[Run]:
    """The runs: each family on 1 GPU, then on all GPUs when there is more than one (count None: not known yet)."""
    counts = [1] if gpu_count == 1 else [1, gpu_count or 0]  # 0: "all", decided on the CUDA machine
    return [Run(family=family, gpus=count, config=family_config(family, steps=steps, resolution=resolution))
            for count in counts for family in families]


def _peak_vram(gpus: list[str], stop: threading.Event, peaks: dict[str, float]) -> None:
    smi = shutil.which("nvidia-smi") or "nvidia-smi"
    while not stop.is_set():
        done = subprocess.run([smi, "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=30, check=False)
        for line in done.stdout.splitlines():
            index, _, used = line.partition(",")
            if index.strip() in gpus and used.strip().isdigit():
                peaks[index.strip()] = max(peaks.get(index.strip(), 0.0), int(used) / 1024)
        stop.wait(POLL_S)


def execute(run: Run, *, gpus: list[str], model: Path, dataset: Path, workdir: Path,
            extra_env: dict[str, str] | None = None) -> Run:
    """Train one run through the CLI on `gpus`; fill in its figures."""
    job = {"dataset": {"path": str(dataset)}, "config": {**run.config, "model_name": str(model)},
           "dataloader": {"minimum_image_size": 64}, "trigger_word": "sks"}
    path = workdir / "job.json"
    path.write_text(json.dumps(job))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(gpus), "TRAINER_DEVICE": "cuda", "HF_HUB_OFFLINE": "1",
           **(extra_env or {})}
    stop, peaks = threading.Event(), dict[str, float]()
    watcher = threading.Thread(target=_peak_vram, args=(gpus, stop, peaks), daemon=True)
    watcher.start()
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "core", "run", str(path), "--workdir", str(workdir / "job")],
                               cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None and process.stdout is not None  # both are pipes
    for line in process.stderr:  # the status lines, as they come
        if STEP_LINE.search(line):
            run.steps_seen.append(time.monotonic())
    out = process.stdout.read()
    process.wait()
    stop.set()
    watcher.join()
    run.elapsed_s = round(time.monotonic() - started, 1)
    gaps = [b - a for a, b in zip(run.steps_seen, run.steps_seen[1:], strict=False)]
    run.step_s = round(statistics.median(gaps), 3) if gaps else None
    run.peak_vram_gib = round(max(peaks.values()), 2) if peaks else None
    try:
        result = json.loads(out)
    except ValueError:
        result = {"error": {"message": out[-300:] or f"exit {process.returncode}"}}
    run.passed = process.returncode == 0 and result.get("status") == "succeeded"
    run.cache = result.get("cache")
    if not run.passed:
        run.error = str((result.get("error") or {}).get("message") or f"exit {process.returncode}")[:200]
    return run


def table(runs: list[Run]) -> str:
    rows = [("family", "GPUs", "quantization", "step time (s)", "peak VRAM (GiB)", "result")]
    for run in runs:
        rows.append((run.family, str(run.gpus or "all"), run.config.get("base_model_precision", "none"),
                     "-" if run.step_s is None else f"{run.step_s:.3f}",
                     "-" if run.peak_vram_gib is None else f"{run.peak_vram_gib:.2f}",
                     "planned" if run.passed is None else "pass" if run.passed else f"FAIL: {run.error}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) + " |"
             for row in rows]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


def reuse_pair(*, steps: int, resolution: int) -> list[Run]:
    """The SDXL job, then the same with another learning rate: the second takes the first's caches."""
    first = family_config("sdxl", steps=steps, resolution=resolution)
    return [Run(family="sdxl", gpus=1, config=first),
            Run(family="sdxl", gpus=1, config={**first, "learning_rate": 3e-4})]


def reuse_table(pair: list[Run]) -> str:
    rows = [("run", "VAE latents stage (s)", "latents from the cache", "text embeds stage (s)", "first step (s)")]
    for label, run in zip(("first", "second (other lr)"), pair, strict=True):
        cache = run.cache or {}
        stages = cache.get("stages_s") or {}
        rows.append((label, str(stages.get("vae_latents", "none computed")), str(cache.get("latents", "-")),
                     str(stages.get("text_embeds", "none computed")), str(cache.get("first_step_s", "-"))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) + " |"
             for row in rows]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit; needs no GPU")
    parser.add_argument("--families", default=",".join(TINY_FAMILIES),
                        help=f"comma-separated, from {', '.join(TINY_FAMILIES)}")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--json", type=Path, help="also write the runs as JSON here")
    parser.add_argument("--no-reuse", action="store_true", help="skip the cache's VAE-latent reuse pair")
    args = parser.parse_args(argv)
    families = [name.strip() for name in args.families.split(",") if name.strip()]
    unknown = [name for name in families if name not in TINY_FAMILIES]
    if unknown or args.steps < 2:
        parser.error(f"--families: no tiny model for {', '.join(unknown)}" if unknown else "--steps: at least 2")
    gpus = cuda_gpus()
    runs = plan(families, steps=args.steps, resolution=args.resolution, gpu_count=len(gpus) or None)
    if args.dry_run:
        print(f"GPU check plan: {len(runs)} runs, {args.steps} steps at {args.resolution} px each, "
              f"{'GPUs found: ' + str(len(gpus)) if gpus else 'no CUDA device here (the runs need one)'}")
        for run in runs:
            print(f"- {run.family} on {run.gpus or 'all'} GPU(s): {json.dumps(run.config, sort_keys=True)}")
        if not args.no_reuse:
            print("- cache reuse: sdxl twice on 1 GPU with one CACHE_DIR (learning rate 1e-4, then 3e-4): VAE latents "
                  "and text embeddings computed, then taken from the cache")
        return 0
    if not gpus:
        print("no CUDA device: nvidia-smi lists no GPU on this machine; the GPU check trains on CUDA only "
              "(use --dry-run to see its plan)", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    dataset = write_demo_dataset(Path(tempfile.mkdtemp(prefix="gpu-check-data-")), count=8)
    for run in runs:
        model = build_tiny_model(ROOT / ".cache" / f"tiny-{run.family}", settings=settings, family=run.family)
        with tempfile.TemporaryDirectory(prefix=f"gpu-check-{run.family}-") as workdir:
            execute(run, gpus=gpus[:1] if run.gpus == 1 else gpus, model=model, dataset=dataset,
                    workdir=Path(workdir))
        print(f"{run.family} on {run.gpus} GPU(s): {'pass' if run.passed else 'FAIL'} ({run.elapsed_s} s)",
              file=sys.stderr)
    print(table(runs))
    pair = [] if args.no_reuse else reuse_pair(steps=args.steps, resolution=args.resolution)
    if pair:
        model = build_tiny_model(ROOT / ".cache" / "tiny-sdxl", settings=settings, family="sdxl")
        with tempfile.TemporaryDirectory(prefix="gpu-check-cache-") as cache:
            for index, run in enumerate(pair):
                with tempfile.TemporaryDirectory(prefix="gpu-check-reuse-") as workdir:
                    execute(run, gpus=gpus[:1], model=model, dataset=dataset, workdir=Path(workdir),
                            extra_env={"CACHE_DIR": cache})
                print(f"cache reuse run {index + 1}: {'pass' if run.passed else 'FAIL'} ({run.elapsed_s} s)",
                      file=sys.stderr)
        print()
        print(reuse_table(pair))
    if args.json:
        args.json.write_text(json.dumps([{k: v for k, v in asdict(run).items() if k != "steps_seen"}
                                         for run in [*runs, *pair]], indent=2))
    return 0 if all(run.passed for run in [*runs, *pair]) else 1


if __name__ == "__main__":
    sys.exit(main())
