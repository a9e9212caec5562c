"""Benchmark: stage a generated image zip over loopback vs a plain download + `unzip` of the same file.

    .venv/bin/python bench/bench_dataset.py                         # 1,000 images, about 500 MB
    .venv/bin/python bench/bench_dataset.py --images 200 --image-kb 250 --scales 0.25,1

Each scale serves the zip from the tests' loopback file server and times, in child processes (so each has its own
peak RSS): (a) curl to disk + `unzip -q`, (b) `stage_dataset` with the zip's URL (download, safe extraction,
every image decoded with Pillow, captions paired and written), `--runs` times each (default 3, the two taking
turns to go first). It prints throughput, the median of the ratios a/b (goal >= 1.0: staging finishes no later
than the plain download and unzip) and the peak RSS of each (goal: flat in the archive size). JSON results go to
bench/results/.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.http_server import serve_files  # noqa: E402

GOAL = 1.0
"""Staging (download, safe extraction, every image decoded) takes no longer than curl + unzip: ratio >= 1."""

STAGE_CHILD = """
import json, resource, sys, time
from pathlib import Path
from core.dataset.stage import caption_options, stage_dataset
from core.settings import Settings
from core.spec.job import parse_job
job = {"dataset_url": sys.argv[1], "trigger_word": "sks",
       "config": {"model_family": "sdxl", "model_name": "bench/model"}}
start = time.perf_counter()
spec = parse_job(job)
manifest = stage_dataset(spec.dataset, Path(sys.argv[2]), captions=caption_options(spec),
                         settings=Settings.from_env({"ALLOW_PRIVATE_URLS": "1"}))
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "images": len(manifest.images), "skipped": len(manifest.skipped),
                  "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def noise_jpegs(count: int, target_kb: int, *, seed: int = 0) -> list[bytes]:
    """A few distinct noise JPEGs of about target_kb each (noise does not compress: sizes are honest)."""
    rng = random.Random(seed)
    side = 256
    sample = io.BytesIO()
    Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3)).save(sample, format="JPEG", quality=90)
    side = max(64, int(side * (target_kb * 1024 / len(sample.getvalue())) ** 0.5))
    out = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3)).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def build_zip(path: Path, *, images: int, image_kb: int) -> int:
    bases = noise_jpegs(16, image_kb)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as bundle:
        for index in range(images):
            bundle.writestr(f"dataset/img_{index:05d}.jpg", bases[index % len(bases)])
            bundle.writestr(f"dataset/img_{index:05d}.txt", f"a photo number {index}, noise, test")
    return path.stat().st_size


def timed_child(command: list[str], *, env: dict[str, str] | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    return time.perf_counter() - start, done.stdout


def peak_rss_of(command: list[str]) -> tuple[float, int]:
    """Wall time and peak RSS (KiB) of one child: a fresh wrapper process so RUSAGE_CHILDREN covers only it."""
    wrapper = (
        "import resource, subprocess, sys, time\n"
        "start = time.perf_counter()\n"
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
        "print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    out = subprocess.run([sys.executable, "-c", wrapper, *command], capture_output=True, text=True, check=True)
    seconds, rss = out.stdout.split()
    return float(seconds), int(rss)


def run_scale(work: Path, *, images: int, image_kb: int, runs: int) -> dict:
    served = work / "served"
    served.mkdir(parents=True, exist_ok=True)
    archive = served / "dataset.zip"
    size = build_zip(archive, images=images, image_kb=image_kb)
    megabytes = size / 1e6
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    plain_runs: list[dict] = []
    staged_runs: list[dict] = []
    with serve_files(served) as server:
        url = server.url("dataset.zip")
        # Warm the page cache for the served file so neither side pays for the first read of it.
        subprocess.run(["curl", "-s", "-o", os.devnull, url], check=True)

        def plain() -> None:
            folder = _fresh(work / "plain")
            curl_s, curl_rss = peak_rss_of(["curl", "-s", "-f", "-o", str(folder / "dataset.zip"), url])
            unzip_s, unzip_rss = peak_rss_of(["unzip", "-q", str(folder / "dataset.zip"), "-d", str(folder / "x")])
            plain_runs.append({"s": curl_s + unzip_s, "curl_s": curl_s, "unzip_s": unzip_s,
                               "rss_kb": max(curl_rss, unzip_rss)})

        def staged() -> None:
            folder = _fresh(work / "staged")
            _, stdout = timed_child([sys.executable, "-c", STAGE_CHILD, url, str(folder)], env=env)
            result = json.loads(stdout.strip().splitlines()[-1])
            staged_runs.append({"s": result["seconds"], "images": result["images"], "rss_kb": result["peak_rss_kb"]})

        for index in range(runs):  # the two sides take turns going first: neither always follows a deletion
            for side in ((plain, staged) if index % 2 == 0 else (staged, plain)):
                side()
    shutil.rmtree(work, ignore_errors=True)
    plain_s = statistics.median(run["s"] for run in plain_runs)
    staged_s = statistics.median(run["s"] for run in staged_runs)
    ratios = [p["s"] / s["s"] for p, s in zip(plain_runs, staged_runs, strict=True)]
    ratio = statistics.median(ratios)
    return {
        "images": images, "archive_mb": round(megabytes, 1), "runs": runs,
        "plain_s": round(plain_s, 2), "plain_curl_s": round(statistics.median(r["curl_s"] for r in plain_runs), 2),
        "plain_unzip_s": round(statistics.median(r["unzip_s"] for r in plain_runs), 2),
        "plain_mb_per_s": round(megabytes / plain_s, 1),
        "plain_peak_rss_mb": round(max(r["rss_kb"] for r in plain_runs) / 1024, 1),
        "staged_s": round(staged_s, 2), "staged_mb_per_s": round(megabytes / staged_s, 1),
        "staged_peak_rss_mb": round(max(r["rss_kb"] for r in staged_runs) / 1024, 1),
        "staged_images": staged_runs[-1]["images"],
        "ratios": [round(r, 3) for r in ratios], "throughput_ratio": round(ratio, 3), "goal_met": ratio >= GOAL,
    }


def _fresh(folder: Path) -> Path:
    """An empty folder, the last run's files deleted and written back to disk first (a side that runs right after
    a big deletion or with the other's writes still in flight would pay for them)."""
    shutil.rmtree(folder, ignore_errors=True)
    os.sync()
    folder.mkdir(parents=True)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000, help="images in the full-size archive (default 1000)")
    parser.add_argument("--image-kb", type=int, default=500, help="approximate size of one image (default 500)")
    parser.add_argument("--scales", default="1", help="comma-separated fractions of --images to run, e.g. 0.25,1")
    parser.add_argument("--runs", type=int, default=3, help="runs of each side; the median is printed (default 3)")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results", help="where the JSON goes")
    args = parser.parse_args(argv)
    for tool in ("curl", "unzip"):
        if shutil.which(tool) is None:
            parser.error(f"the baseline needs '{tool}' on PATH")
    rows = []
    for scale in (float(s) for s in args.scales.split(",")):
        count = max(1, int(args.images * scale))
        with tempfile.TemporaryDirectory(prefix="bench-dataset-") as tmp:
            row = run_scale(Path(tmp), images=count, image_kb=args.image_kb, runs=args.runs)
        rows.append(row)
        print(
            f"{row['images']:>6} images {row['archive_mb']:>8.1f} MB | plain curl+unzip {row['plain_s']:>6.2f} s"
            f" ({row['plain_mb_per_s']:>6.1f} MB/s, peak {row['plain_peak_rss_mb']:.0f} MB)"
            f" | stage_dataset {row['staged_s']:>6.2f} s ({row['staged_mb_per_s']:>6.1f} MB/s,"
            f" peak {row['staged_peak_rss_mb']:.0f} MB) | ratio {row['throughput_ratio']:.2f}"
            f" (runs {', '.join(f'{r:.2f}' for r in row['ratios'])})"
            f" {'goal met' if row['goal_met'] else f'BELOW {GOAL}'}",
            flush=True,
        )
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"bench_dataset-{time.strftime('%Y%m%d-%H%M%S')}.json"
    machine = {"cpus": os.cpu_count(), "self_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    out.write_text(json.dumps({"rows": rows, "machine": machine}, indent=2))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
