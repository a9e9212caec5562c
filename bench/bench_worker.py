"""Benchmark: how fast `python -m worker` asks RunPod for its first job, and what the worker process imports.

    .venv/bin/python bench/bench_worker.py              # 5 cold starts, then one footprint run
    .venv/bin/python bench/bench_worker.py --runs 10

Each start runs `python -m worker` under runpod's production loop, pointed by its RUNPOD_WEBHOOK_* variables at the
tests' local fake of RunPod's job API, and times from just before the process starts to the fake receiving the
first job-take request (goal: under 2 s). The footprint run starts the worker with `-X importtime`, gives it one
dry-run job (the pipeline's modules load with the first job), and lists every module the process imported: none
of torch, gradio or simpletuner (nor diffusers, transformers, accelerate) may appear. It also reports the largest
imports and the process's memory after the job. JSON results go to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.processes import stop_process_group  # noqa: E402
from tests.support.runpod_fake import running_runpod_fake  # noqa: E402

FORBIDDEN = ("torch", "gradio", "simpletuner", "diffusers", "transformers", "accelerate")
GOAL_S = 2.0


def worker_env(fake_env: dict[str, str], data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "BUCKET_", "HF_TOKEN"))}
    env.update(fake_env, DATA_DIR=str(data_dir), TRAINER_DEVICE="cpu", HF_HUB_OFFLINE="1",
               HF_HUB_DISABLE_TELEMETRY="1", PYTHONUNBUFFERED="1")
    return env


def time_to_first_take(data_dir: Path) -> float:
    with running_runpod_fake(take_wait_s=0.5) as fake:
        env = worker_env(fake.env, data_dir)
        started = time.monotonic()
        process = subprocess.Popen([sys.executable, "-m", "worker"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            first = fake.wait_for(lambda: fake.take_requests[0][0] if fake.take_requests else None, timeout_s=60,
                                  what="the first job-take request")
        finally:
            stop_process_group(process)
    return first - started


def import_runpod_s() -> float:
    """The floor: a bare `python -c "import runpod"` (py-cpuinfo samples the CPU clock for 1 s at its import)."""
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "import runpod"], cwd=ROOT, check=True, capture_output=True)
    return time.monotonic() - started


def rss_kb(pid: int) -> int | None:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def footprint(data_dir: Path, log: Path) -> dict:
    """Every module the worker imports up to and through one dry-run job, from its -X importtime lines."""
    job = json.loads((ROOT / "test_input.json").read_text())["input"]
    with running_runpod_fake(take_wait_s=0.5) as fake, log.open("w") as err:
        process = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "worker"], cwd=ROOT,
                                   env=worker_env(fake.env, data_dir), stdout=subprocess.DEVNULL, stderr=err,
                                   start_new_session=True)
        try:
            job_id = fake.queue(job)
            result = fake.wait_for_result(job_id, timeout_s=120)
            memory = rss_kb(process.pid)
        finally:
            stop_process_group(process)
    imports: list[tuple[str, int]] = []  # (module, cumulative microseconds)
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("import time:") and line.count("|") == 2 and "cumulative" not in line:
            _, cumulative, raw_name = line.removeprefix("import time:").split("|")
            imports.append((raw_name.rstrip()[1:], int(cumulative)))  # nested imports keep their extra indent
    modules = sorted({name.strip() for name, _ in imports})
    forbidden = sorted(m for m in modules if m.split(".")[0] in FORBIDDEN)
    top_level = sorted(((name, us) for name, us in imports if not name.startswith(" ")), key=lambda x: -x[1])
    return {"job_status": (result.get("output") or {}).get("status") or result.get("error"),
            "modules_imported": len(modules), "forbidden_imported": forbidden, "rss_kb_after_job": memory,
            "largest_imports_ms": [(name, round(us / 1000)) for name, us in top_level[:8]]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="cold starts to time")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results", help="where the JSON goes")
    args = parser.parse_args(argv)
    args.results.mkdir(parents=True, exist_ok=True)
    work = args.results / "worker-tmp"
    times, floors = [], []
    for index in range(args.runs):  # interleaved, so both see the same machine load
        times.append(time_to_first_take(work / f"data-{index}"))
        floors.append(import_runpod_s())
        print(f"start {index + 1}: first job-take after {times[-1]:.2f} s (bare `import runpod`: {floors[-1]:.2f} s)")
    summary = {"runs": args.runs, "first_take_s": [round(t, 3) for t in times],
               "median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
               "max_s": round(max(times), 3), "goal_s": GOAL_S,
               "import_runpod_s": [round(t, 3) for t in floors],
               "import_runpod_median_s": round(statistics.median(floors), 3)}
    print(f"time to first job-take: median {summary['median_s']:.2f} s, min {summary['min_s']:.2f} s, "
          f"max {summary['max_s']:.2f} s (goal < {GOAL_S:g} s); a bare `import runpod` alone: median "
          f"{summary['import_runpod_median_s']:.2f} s")
    light = summary["median_s"] <= summary["import_runpod_median_s"]
    print(f"goal: the first job-take no later than a bare `import runpod` (medians): {'met' if light else 'NOT met'}")
    work.mkdir(parents=True, exist_ok=True)
    summary["footprint"] = found = footprint(work / "data-footprint", work / "importtime.log")
    print(f"footprint: {found['modules_imported']} modules through one dry-run job ({found['job_status']}), "
          f"RSS {found['rss_kb_after_job']} kB; forbidden: {found['forbidden_imported'] or 'none'}")
    print("largest top-level imports (ms): " + ", ".join(f"{n} {ms}" for n, ms in found["largest_imports_ms"]))
    out = args.results / f"bench_worker-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(summary, indent=2))
    print(f"results: {out}")
    return 1 if found["forbidden_imported"] else 0


if __name__ == "__main__":
    sys.exit(main())
