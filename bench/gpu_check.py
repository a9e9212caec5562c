"""The GPU check: real trainings on CUDA of every tiny family and of what the recipes switch on, one table.

    python bench/gpu_check.py --dry-run                  # the plan: every run, its settings, its timeout (no GPU)
    python bench/gpu_check.py --out /tmp/gpu-check       # everything; each run's log and the JSON land in --out
    python bench/gpu_check.py --families sdxl,flux --run-timeout 240 --no-reuse

The runs, each through `python -m core run` (the CLI, as a user runs a job), each with its own timeout:
- every tiny family, 1 GPU, the CUDA recipe: bf16 mixed precision, `adamw_bf16`, gradient checkpointing;
- the tiny SDXL model with each base_model_precision the recipes use: int8-quanto, int8-torchao, and nf4-bnb where
  bitsandbytes imports in the trainer's Python;
- previews and captioning: the tiny captioner captions the dataset on CUDA (tools/caption_images.py), and samples
  are rendered by SimpleTuner at step 2 and by the generate tool (tools/generate_images.py) at the last step;
- with two GPUs or more: SDXL on all of them, on a mixed-aspect dataset where one aspect bucket holds one image;
- the cache's reuse pair (skipped by --no-reuse): SDXL twice with one CACHE_DIR, the second with another learning
  rate, and what SimpleTuner's VAE-latent and text-embedding stages took each time.

Nothing is downloaded: the tiny models are built offline (core/generation/demo.py), the datasets are generated.
Step time is the median gap between the run's step lines; peak VRAM the most `nvidia-smi` saw in use on the run's
GPUs (polled twice a second). Every run keeps its job folder and its log under --out (`<run>/job/`, `<run>.log`),
and --out's gpu-check.json is rewritten as each run ends, so a check cut short still says what it found.

Where it runs (README, "GPU check"):
- a checkout with `make setup`, or the image (`docker run --gpus all --network none --entrypoint /opt/venv/bin/python
  IMAGE bench/gpu_check.py`): the app env's Python runs this and the CLI, the trainer env (TRAINER_VENV, else
  .venv-trainer) trains;
- a CUDA machine whose Python has torch and no trainer env: one Python for everything, with the wheels of
  `make gpu-wheels` installed into a folder on PYTHONPATH (tools/gpu_wheels.py). The check then writes a stand-in
  trainer env under --out whose `bin/python` is this Python with this PYTHONPATH and whose site-packages is the
  folder SimpleTuner was installed into.

Exit status: 0 when every run passed, 1 when one failed, 2 when there is no CUDA device.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.generation import TINY_FAMILIES, build_tiny_captioner, build_tiny_model, write_demo_dataset  # noqa: E402
from core.settings import Settings  # noqa: E402

# The flavour each tiny model stands for (its layout), as in tests/test_demo_families.py.
FLAVOURS = {"sdxl": None, "flux": "dev", "sd3": "medium", "chroma": "base", "qwen_image": "v1.0",
            "wan": "t2v-480p-1.3b-2.1"}
QUANTIZATIONS = ("int8-quanto", "int8-torchao", "nf4-bnb")
"""The base_model_precision values the recipes use (core/data/recipes.json); nf4-bnb needs bitsandbytes."""
STEP_LINE = re.compile(r"\[training\] step (\d+)/(\d+)")
POLL_S = 0.5
RUN_TIMEOUT_S = 300
RESULT_FILE = "gpu-check.json"


@dataclass
class Run:
    name: str
    family: str
    gpus: int
    """1, or 0 for every GPU of the machine."""
    config: dict
    job: dict = field(default_factory=dict)
    """The job's other parts (captioning, samples) besides dataset and config."""
    dataset: str = "square"
    """"square": the demo dataset; "mixed": the mixed-aspect one with a one-image bucket."""
    timeout_s: float = RUN_TIMEOUT_S
    passed: bool | None = None
    step_s: float | None = None
    peak_vram_gib: float | None = None
    elapsed_s: float | None = None
    error: str | None = None
    log: str | None = None
    checks: dict = field(default_factory=dict)
    """What the run's result showed beyond success: captions made on CUDA, sample steps rendered."""
    cache: dict | None = None
    """The result's `cache`: what the run took from the cache and what SimpleTuner's caching stages took."""
    steps_seen: list[float] = field(default_factory=list, repr=False)


def cuda_gpus() -> list[str]:
    """The GPU indices nvidia-smi lists (none without a driver or a GPU)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(listing.stdout.splitlines()) if line.startswith("GPU ")]


def family_config(family: str, *, steps: int, resolution: int) -> dict:
    """One family's job config with the CUDA recipe at the tiny model's size (no validation: the previews run has)."""
    config: dict = {"model_family": family, "resolution": resolution, "max_train_steps": steps,
                    "checkpointing_steps": steps, "lora_rank": 4, "seed": 42, "mixed_precision": "bf16",
                    "optimizer": "adamw_bf16", "gradient_checkpointing": True}
    if FLAVOURS.get(family):
        config["model_flavour"] = FLAVOURS[family]
    if family == "wan":
        config["validation_num_video_frames"] = 1
    return config


def plan(families: list[str], *, steps: int, resolution: int, gpu_count: int | None, bnb: bool,
         reuse: bool, timeout_s: float) -> list[Run]:
    """Every run of the check, in order. gpu_count None: not known here (a dry run without a GPU), so the multi-GPU
    run is listed as what two or more GPUs add."""
    sdxl = family_config("sdxl", steps=steps, resolution=resolution)
    runs = [Run(name=f"{family}-bf16", family=family, gpus=1,
                config=family_config(family, steps=steps, resolution=resolution)) for family in families]
    runs += [Run(name=f"sdxl-{precision}", family="sdxl", gpus=1, config={**sdxl, "base_model_precision": precision})
             for precision in QUANTIZATIONS if bnb or precision != "nf4-bnb"]
    runs.append(Run(name="sdxl-previews-captions", family="sdxl", gpus=1, config={**sdxl, "max_train_steps": 3},
                    job={"captioning": {"model": "TINY_CAPTIONER", "mode": "all", "style": "short",
                                        "max_length": 12, "batch_size": 4},
                         "samples": {"prompts": ["a photo of [trigger]"], "every": 2, "steps": 2, "seed": 42}}))
    if gpu_count is None or gpu_count > 1:
        runs.append(Run(name="sdxl-all-gpus-mixed-aspect", family="sdxl", gpus=0, config=sdxl, dataset="mixed"))
    if reuse:
        runs += [Run(name="sdxl-reuse-first", family="sdxl", gpus=1, config=sdxl),
                 Run(name="sdxl-reuse-second", family="sdxl", gpus=1, config={**sdxl, "learning_rate": 3e-4})]
    for run in runs:
        run.timeout_s = timeout_s
    return runs


def write_mixed_dataset(out: Path) -> Path:
    """Six square images and one twice as wide: its aspect bucket holds one image, fewer than the processes of a
    multi-GPU run (SimpleTuner's "zero usable batches" case)."""
    from PIL import Image

    write_demo_dataset(out, count=6)
    Image.new("RGB", (256, 128), (200, 40, 40)).save(out / "wide_000.png")
    (out / "wide_000.txt").write_text("a wide red banner on a plain background")
    return out


# -- the trainer's Python ------------------------------------------------------------------------------------------


def trainer_venv(out: Path, *, one_python: bool = False) -> tuple[Path | None, str]:
    """The trainer env to train with, and how it was found: TRAINER_VENV, else the checkout's .venv-trainer, else
    (or with `one_python`) a stand-in for this Python (one Python for everything) written under `out`; None and
    why when SimpleTuner is nowhere."""
    given = os.environ.get("TRAINER_VENV")
    if not one_python and given and (Path(given) / "bin" / "python").exists():
        return Path(given), "TRAINER_VENV"
    if not one_python and (ROOT / ".venv-trainer" / "bin" / "python").exists():
        return ROOT / ".venv-trainer", "the checkout's .venv-trainer"
    if importlib.util.find_spec("simpletuner") is None:
        return None, (f"none: no TRAINER_VENV, no .venv-trainer, and SimpleTuner does not import in this Python "
                      f"({sys.executable}); install the wheels of `make gpu-wheels` into a folder on PYTHONPATH "
                      "(README, GPU check)")
    return stand_in_venv(out / "trainer-env"), f"this Python ({sys.executable}) with PYTHONPATH"


def stand_in_venv(folder: Path) -> Path:
    """A trainer env made of this Python: bin/python runs it with this process's PYTHONPATH (the trainer env's
    environment is allow-listed and would drop it), bin/accelerate runs accelerate's CLI with it, and
    lib/python3.X/site-packages is the folder SimpleTuner is installed in (where the trainer looks for train.py)."""
    spec = importlib.util.find_spec("simpletuner")
    assert spec is not None and spec.submodule_search_locations  # trainer_venv checked it imports
    site = Path(next(iter(spec.submodule_search_locations))).parent
    (folder / "bin").mkdir(parents=True, exist_ok=True)
    python = folder / "bin" / "python"
    path = os.environ.get("PYTHONPATH", "")
    python.write_text(f"#!/bin/sh\nexport PYTHONPATH={shlex.quote(path)}\nexec {shlex.quote(sys.executable)} "
                      '"$@"\n')
    accelerate = folder / "bin" / "accelerate"
    accelerate.write_text(f"#!/bin/sh\nexec {shlex.quote(str(python))} -m accelerate.commands.accelerate_cli "
                          '"$@"\n')
    for script in (python, accelerate):
        script.chmod(0o755)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    link = folder / "lib" / version / "site-packages"
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(site, target_is_directory=True)
    return folder


def imports(python: Path, module: str) -> bool:
    """Whether `module` imports in that Python (bitsandbytes: nf4-bnb is checked only where it does)."""
    try:
        done = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


# -- one run -------------------------------------------------------------------------------------------------------


def _peak_vram(gpus: list[str], stop: threading.Event, peaks: dict[str, float]) -> None:
    smi = shutil.which("nvidia-smi") or "nvidia-smi"
    while not stop.is_set():
        try:
            done = subprocess.run([smi, "--query-gpu=index,memory.used", "--format=csv,noheader,nounits"],
                                  capture_output=True, text=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            done = subprocess.CompletedProcess([], 1, "", "")
        for line in done.stdout.splitlines():
            index, _, used = line.partition(",")
            if index.strip() in gpus and used.strip().isdigit():
                peaks[index.strip()] = max(peaks.get(index.strip(), 0.0), int(used) / 1024)
        stop.wait(POLL_S)


def execute(run: Run, *, gpus: list[str], model: Path, dataset: Path, folder: Path, env: dict[str, str]) -> Run:
    """Train one run through the CLI on `gpus`, stopped at its timeout; its log and job folder stay in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    job = {"dataset": {"path": str(dataset)}, "config": {**run.config, "model_name": str(model)},
           "dataloader": {"minimum_image_size": 64}, "trigger_word": "sks", **run.job}
    path = folder / "job.json"
    path.write_text(json.dumps(job, indent=2))
    log = folder.parent / f"{run.name}.log"
    run.log = str(log)
    env = {**env, "CUDA_VISIBLE_DEVICES": ",".join(gpus)}
    stop, peaks = threading.Event(), dict[str, float]()
    watcher = threading.Thread(target=_peak_vram, args=(gpus, stop, peaks), daemon=True)
    watcher.start()
    started = time.monotonic()
    with log.open("w") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "core", "run", str(path), "--workdir", str(folder / "job")],
                                   cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)  # its own group: a timeout stops the trainer with it
        timed_out = threading.Event()
        timer = threading.Timer(run.timeout_s, lambda: (timed_out.set(), _stop(process)))
        timer.start()
        assert process.stderr is not None and process.stdout is not None  # both are pipes
        printed: list[str] = []  # the result, read beside the status lines so neither pipe fills up
        reader = threading.Thread(target=lambda: printed.append(process.stdout.read()), daemon=True)
        reader.start()
        for line in process.stderr:  # the status lines, as they come
            log_file.write(line)
            log_file.flush()
            if STEP_LINE.search(line):
                run.steps_seen.append(time.monotonic())
        process.wait()
        timer.cancel()
        reader.join()
        out = "".join(printed)
        log_file.write(f"\n---- stdout (exit {process.returncode}) ----\n{out}")
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
    run.cache = result.get("cache")
    run.passed = process.returncode == 0 and result.get("status") == "succeeded"
    if timed_out.is_set():
        run.passed, run.error = False, f"stopped at its timeout ({run.timeout_s:g} s)"
    elif not run.passed:
        run.error = str((result.get("error") or {}).get("message") or f"exit {process.returncode}")[:200]
    if run.passed and "captioning" in run.job:
        run.checks = _previews_and_captions(result)
        if not all(run.checks.values()):
            run.passed, run.error = False, f"checks failed: {run.checks}"
    return run


def _stop(process: subprocess.Popen) -> None:
    """The run's whole process group (the CLI, accelerate, the trainer): SIGTERM, then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=15)
            return
        except subprocess.TimeoutExpired:
            continue


def _previews_and_captions(result: dict) -> dict:
    captioning = result.get("captioning") or {}
    steps = {entry.get("step") for entry in result.get("samples") or [] if entry.get("images")}
    last = (result.get("metrics") or {}).get("steps")
    return {"captioned_on_cuda": captioning.get("device") == "cuda" and captioning.get("images_captioned", 0) > 0,
            "samples_by_simpletuner": 2 in steps, "samples_by_generate_tool": last in steps}


# -- the report ----------------------------------------------------------------------------------------------------


def _markdown(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) + " |"
             for row in rows]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


def table(runs: list[Run]) -> str:
    rows = [("run", "GPUs", "quantization", "step time (s)", "peak VRAM (GiB)", "time (s)", "result")]
    for run in runs:
        rows.append((run.name, str(run.gpus or "all"), run.config.get("base_model_precision", "none"),
                     "-" if run.step_s is None else f"{run.step_s:.3f}",
                     "-" if run.peak_vram_gib is None else f"{run.peak_vram_gib:.2f}",
                     "-" if run.elapsed_s is None else f"{run.elapsed_s:.0f}",
                     "planned" if run.passed is None else "pass" if run.passed else f"FAIL: {run.error}"))
    return _markdown(rows)


def reuse_table(pair: list[Run]) -> str:
    rows = [("run", "VAE latents stage (s)", "latents from the cache", "text embeds stage (s)", "first step (s)")]
    for run in pair:
        cache = run.cache or {}
        stages = cache.get("stages_s") or {}
        rows.append((run.name, str(stages.get("vae_latents", "none computed")), str(cache.get("latents", "-")),
                     str(stages.get("text_embeds", "none computed")), str(cache.get("first_step_s", "-"))))
    return _markdown(rows)


def save(runs: list[Run], path: Path) -> None:
    """The runs so far as JSON, replaced whole (written beside, then renamed: never half a file)."""
    partial = path.with_suffix(".json.part")
    partial.write_text(json.dumps([{k: v for k, v in asdict(run).items() if k != "steps_seen"} for run in runs],
                                  indent=2))
    partial.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit; needs no GPU")
    parser.add_argument("--families", default=",".join(TINY_FAMILIES),
                        help=f"comma-separated, from {', '.join(TINY_FAMILIES)} (the bf16 runs)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--run-timeout", type=float, default=RUN_TIMEOUT_S, help="seconds each run may take")
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "gpu-check",
                        help="where each run's job folder and log, and gpu-check.json, are kept")
    parser.add_argument("--only", default="", help="comma-separated run names (see --dry-run): run only these")
    parser.add_argument("--no-reuse", action="store_true", help="skip the cache's reuse pair")
    parser.add_argument("--one-python", action="store_true",
                        help="train with this Python and its PYTHONPATH even where a trainer env exists")
    args = parser.parse_args(argv)
    families = [name.strip() for name in args.families.split(",") if name.strip()]
    unknown = [name for name in families if name not in TINY_FAMILIES]
    if unknown or args.steps < 2 or args.run_timeout <= 0:
        parser.error(f"--families: no tiny model for {', '.join(unknown)}" if unknown
                     else "--steps: at least 2" if args.steps < 2 else "--run-timeout: above 0")
    out = args.out.absolute()
    gpus = cuda_gpus()
    venv, found_by = trainer_venv(out, one_python=args.one_python)
    bnb = venv is not None and imports(venv / "bin" / "python", "bitsandbytes")
    runs = plan(families, steps=args.steps, resolution=args.resolution, gpu_count=len(gpus) or None, bnb=bnb,
                reuse=not args.no_reuse, timeout_s=args.run_timeout)
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    if only - {run.name for run in runs}:
        parser.error(f"--only: no run named {', '.join(sorted(only - {run.name for run in runs}))}")
    runs = [run for run in runs if not only or run.name in only]
    print(f"GPU check: {len(runs)} runs, {args.steps} steps at {args.resolution} px, at most {args.run_timeout:g} s "
          f"each; {'GPUs: ' + str(len(gpus)) if gpus else 'no CUDA device here (the runs need one)'}; trainer: "
          f"{venv} ({found_by}); nf4-bnb {'included' if bnb else 'left out: bitsandbytes does not import there'}; "
          f"output: {out}", flush=True)
    if args.dry_run:
        for run in runs:
            gpus_said = "all GPUs (with 2 or more)" if run.gpus == 0 else "1 GPU"
            print(f"- {run.name}: {gpus_said}, {run.dataset} dataset, timeout {run.timeout_s:g} s: "
                  f"{json.dumps({'config': run.config, **run.job}, sort_keys=True)}")
        return 0
    if not gpus:
        print("no CUDA device: nvidia-smi lists no GPU on this machine; the GPU check trains on CUDA only "
              "(--dry-run shows its plan)", file=sys.stderr)
        return 2
    if venv is None:
        print(f"no trainer: {found_by}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    settings = Settings.from_env()
    datasets = {"square": write_demo_dataset(out / "dataset-square", count=8),
                "mixed": write_mixed_dataset(out / "dataset-mixed")}
    captioner = build_tiny_captioner(ROOT / ".cache" / "tiny-captioner", settings=settings)
    env = {**os.environ, "TRAINER_VENV": str(venv), "TRAINER_DEVICE": "cuda", "TRAINER_ONLINE": "0",
           "HF_HUB_OFFLINE": "1", "DATA_DIR": str(out / "data"), "CACHE_DIR": str(out / "cache")}
    for run in runs:
        if "captioning" in run.job:
            run.job["captioning"]["model"] = str(captioner)
        model = build_tiny_model(ROOT / ".cache" / f"tiny-{run.family}", settings=settings, family=run.family)
        run_env = env if run.name.startswith("sdxl-reuse") else {**env, "CACHE_DIR": str(out / "cache" / run.name)}
        execute(run, gpus=gpus[:1] if run.gpus == 1 else gpus, model=model, dataset=datasets[run.dataset],
                folder=out / run.name, env=run_env)
        save(runs, out / RESULT_FILE)
        print(f"{run.name}: {'pass' if run.passed else 'FAIL ' + str(run.error)} ({run.elapsed_s} s, step "
              f"{run.step_s} s, peak {run.peak_vram_gib} GiB; log {run.log})", flush=True)
    print()
    print(table(runs))
    pair = [run for run in runs if run.name.startswith("sdxl-reuse")]
    if len(pair) == 2:
        print()
        print(reuse_table(pair))
    print(f"\n{out / RESULT_FILE}")
    return 0 if all(run.passed for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
