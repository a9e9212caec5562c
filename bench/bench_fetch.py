"""Benchmark: a job with a remote dataset and a remote base model waits for the longer download, not for their sum.

    .venv/bin/python bench/bench_fetch.py                      # each download about 3 s; 3 runs, medians printed
    .venv/bin/python bench/bench_fetch.py --seconds 6 --runs 5 --rate-mb 12

The tiny SDXL model (built once into .cache/tiny-sdxl) is served as the Hub repo tester/tiny-sdxl by the tests' fake
Hub, and a zip of noise JPEGs with captions by the tests' loopback file server; each server sits behind its own
bandwidth-limited proxy (tests/support/throttle.py), one link each. The model's link gets the rate that makes the
model's download take --seconds; the dataset's link gets --rate-mb (default: the same rate) and the zip is sized to
take --seconds over it. Each run times, over the same links: (a) the dataset download alone
(core.adapters.fetch.download),
(b) the base model download alone (core.models.base_model.fetch_base_model into a fresh Hugging Face cache), (c) the
whole
job (run_job, fresh data, cache and Hugging Face folders) from its start until its model stage completes, when it is
cancelled (nothing trains). Prints (c) / max(a, b) against the goal 1.1, (c) / (a + b), and where (c)'s time goes:
the job's stage timings, and when each link carried its first and last byte, so that an overhead is visible.
Timings on a small shared machine are noisy: compare medians. JSON results go to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# huggingface_hub reads these once, at import: the fake Hub speaks neither xet nor telemetry.
os.environ.update({"HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1"})

from bench.bench_dataset import noise_jpegs  # noqa: E402
from core.adapters import download  # noqa: E402
from core.errors import JobError  # noqa: E402
from core.events import LogLine, StageEvent  # noqa: E402
from core.generation import build_tiny_model  # noqa: E402
from core.models import fetch_base_model  # noqa: E402
from core.pipeline import run_job  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.spec import parse_job  # noqa: E402
from tests.support.http_server import serve_files  # noqa: E402
from tests.support.hub_server import running_hub_server  # noqa: E402
from tests.support.throttle import Link, throttled  # noqa: E402

MB = 1024 * 1024
REPO = "tester/tiny-sdxl"
GOAL = 1.1
STAGES = ("validate", "dataset", "preflight", "configure", "model")


class Traffic:
    """When a link carried its first and its last byte (the proxy's clock), for one measurement at a time."""

    def __init__(self, link: Link):
        self.first: float | None = None
        self.last: float | None = None
        take = link.take

        def counted(count: int) -> None:
            take(count)
            now = time.monotonic()
            self.first = now if self.first is None else self.first
            self.last = now

        link.take = counted  # type: ignore[method-assign]  # the test proxy, instrumented; nothing under test

    def reset(self) -> None:
        self.first = self.last = None


def write_zip(path: Path, *, size: int, image_kb: int) -> int:
    """Noise JPEGs (they do not compress) with a caption each, stored, to about `size` bytes; the image count."""
    pool = noise_jpegs(16, image_kb)
    count = written = 0
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        while count == 0 or written < size:
            # Each image distinct (a 4-byte tail), so that none is a copy of another.
            image = pool[count % len(pool)] + count.to_bytes(4, "big")
            archive.writestr(f"set/img_{count:04d}.jpg", image)
            archive.writestr(f"set/img_{count:04d}.txt", f"a photo of noise number {count}")
            count, written = count + 1, written + len(image) + 100
    return count


def job_spec(url: str, *, cache: bool) -> dict[str, Any]:
    return {"dataset_url": url, "trigger_word": "sks", "dataloader": {"minimum_image_size": 64}, "cache": cache,
            "config": {"model_family": "sdxl", "model_name": REPO, "resolution": 128, "max_train_steps": 3,
                       "checkpointing_steps": 3, "lora_rank": 4}}


def settings_in(folder: Path) -> Settings:
    return Settings.from_env({"DATA_DIR": str(folder / "data"), "CACHE_DIR": str(folder / "cache"),
                              "HF_HOME": str(folder / "hf"), "ALLOW_PRIVATE_URLS": "1", "TRAINER_DEVICE": "cpu",
                              "TRAINER_ONLINE": "1"})


def time_dataset(url: str, folder: Path) -> float:
    started = time.monotonic()
    download(url, folder / "download", settings=settings_in(folder), max_bytes=1 << 40)
    return time.monotonic() - started


def time_model(url: str, folder: Path, *, cache: bool) -> float:
    spec = parse_job(job_spec(url, cache=cache))
    started = time.monotonic()
    fetch_base_model(spec, settings=settings_in(folder), token=None)
    return time.monotonic() - started


def time_job(url: str, folder: Path, *, cache: bool, data: Traffic, hub: Traffic) -> dict[str, Any]:
    """The job until its model stage completes: total, each stage, and each link's first and last byte (seconds
    from the job's start)."""
    cancel = threading.Event()
    starts: dict[str, float] = {}
    stages: dict[str, float] = {}
    marks: dict[str, float] = {}
    started = time.monotonic()

    def sink(event: object) -> None:
        now = time.monotonic() - started
        if isinstance(event, StageEvent) and event.status == "started":
            starts[event.stage] = now
        elif isinstance(event, StageEvent) and event.status == "completed" and event.stage in starts:
            stages[event.stage] = now - starts[event.stage]
            marks[f"{event.stage} completed"] = now
            if event.stage == "model":
                cancel.set()  # the downloads are what is measured: the train stage stops as it starts
        elif isinstance(event, LogLine) and event.message.startswith(f"{REPO}: ") and "downloaded" in event.message:
            marks["model in the cache"] = now
        elif isinstance(event, LogLine) and event.message.endswith(" skipped") and " images staged" in event.message:
            marks["dataset extracted and checked"] = now  # then, with the cache on, it is kept there

    try:
        run_job(parse_job(job_spec(url, cache=cache)), folder / "job", sink, settings=settings_in(folder),
                cancel=cancel)
    except JobError as error:
        if "model completed" not in marks:
            raise SystemExit(f"the job failed before its model stage completed: {error.message}") from None
    for name, link in (("dataset", data), ("model", hub)):
        marks[f"{name} link first byte"] = (link.first or started) - started
        marks[f"{name} link last byte"] = (link.last or started) - started
    return {"total_s": marks["model completed"], "stages_s": stages, "marks_s": marks,
            "stage_starts_s": starts}


def run_once(base: Path, *, url: str, cache: bool, data: Traffic, hub: Traffic) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for name, measure, link in (("dataset_s", lambda f: time_dataset(url, f), data),
                                ("model_s", lambda f: time_model(url, f, cache=cache), hub),
                                ("job", lambda f: time_job(url, f, cache=cache, data=data, hub=hub), None)):
        data.reset()
        hub.reset()
        with tempfile.TemporaryDirectory(prefix=name, dir=base) as folder:
            started = time.monotonic()
            figures[name] = measure(Path(folder))
        if link is not None:  # when its bytes came, from the call's start
            figures[name.replace("_s", "_bytes_s")] = [round((t or started) - started, 3)
                                                        for t in (link.first, link.last)]
    longer = max(figures["dataset_s"], figures["model_s"])
    total = figures["job"]["total_s"]
    figures |= {"job_s": total, "ratio_longer": total / longer,
                "ratio_sum": total / (figures["dataset_s"] + figures["model_s"]), "beyond_s": total - longer}
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="target time of each download (default 3)")
    parser.add_argument("--rate-mb", type=float, default=None,
                        help="the dataset link's MB/s (default: the model link's, which the model's size and "
                             "--seconds decide)")
    parser.add_argument("--image-kb", type=int, default=250, help="size of one dataset image (default 250)")
    parser.add_argument("--runs", type=int, default=3, help="runs; medians are printed (default 3)")
    parser.add_argument("--no-cache", action="store_true", help="run the job with cache: false")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results", help="where the JSON goes")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.runs < 1 or (args.rate_mb is not None and args.rate_mb <= 0):
        parser.error("--seconds and --rate-mb must be positive, --runs at least 1")
    model = build_tiny_model(ROOT / ".cache" / "tiny-sdxl", settings=Settings.from_env({}))
    model_files = {p.relative_to(model).as_posix(): p.read_bytes() for p in model.rglob("*") if p.is_file()}
    model_bytes = sum(len(data) for data in model_files.values())
    model_rate = model_bytes / args.seconds
    data_rate = args.rate_mb * MB if args.rate_mb else model_rate
    cache = not args.no_cache
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-fetch-") as tmp:
        base = Path(tmp)
        served = base / "served"
        served.mkdir()
        images = write_zip(served / "data.zip", size=int(data_rate * args.seconds), image_kb=args.image_kb)
        zip_bytes = (served / "data.zip").stat().st_size
        with running_hub_server() as hub_server, serve_files(served) as files:
            hub_server.add_repo(REPO, files=model_files, private=False)
            with throttled(int(hub_server.endpoint.rsplit(":", 1)[1]), bytes_per_s=model_rate) as hub_link, \
                    throttled(int(files.base.rsplit(":", 1)[1]), bytes_per_s=data_rate) as data_link:
                os.environ["HF_ENDPOINT"] = hub_link.base  # restored by running_hub_server
                data, hub = Traffic(data_link), Traffic(hub_link)
                # The process's first Hub download pays 0.5-1.5 s of first use (lazy imports, first connections)
                # before its first byte: paid here, untimed, so that (b) of the first run is like the others'.
                with tempfile.TemporaryDirectory(prefix="warm-up", dir=base) as folder:
                    time_model(f"{data_link.base}/data.zip", Path(folder), cache=cache)
                for index in range(args.runs):
                    runs.append(run_once(base, url=f"{data_link.base}/data.zip", cache=cache, data=data, hub=hub))
                    one = runs[-1]
                    print(f"run {index + 1}: dataset {one['dataset_s']:.2f}s, model {one['model_s']:.2f}s, "
                          f"job {one['job_s']:.2f}s ({one['ratio_longer']:.2f}x the longer)", flush=True)
    report(runs, model_bytes=model_bytes, model_files=len(model_files), model_rate=model_rate, data_rate=data_rate,
           zip_bytes=zip_bytes, images=images, cache=cache)
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"bench_fetch-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"model_bytes": model_bytes, "model_files": len(model_files), "zip_bytes": zip_bytes,
                               "images": images, "model_rate": model_rate, "data_rate": data_rate, "cache": cache,
                               "cpus": os.cpu_count(), "runs": runs}, indent=2))
    print(f"results: {out}")
    return 0


def report(runs: list[dict[str, Any]], *, model_bytes: int, model_files: int, model_rate: float, data_rate: float,
           zip_bytes: int, images: int, cache: bool) -> None:
    def median(pick: Any) -> float:
        return statistics.median(pick(run) for run in runs)

    print(f"\nbase model {model_bytes / MB:.1f} MB in {model_files} files over {model_rate / MB:.1f} MB/s; dataset "
          f"{zip_bytes / MB:.1f} MB ({images} images) over {data_rate / MB:.1f} MB/s; job cache "
          f"{'on' if cache else 'off'}; median of {len(runs)} run(s)")
    a, b, c = median(lambda r: r["dataset_s"]), median(lambda r: r["model_s"]), median(lambda r: r["job_s"])
    for label, value, key in (("(a) dataset download alone", a, "dataset_bytes_s"),
                              ("(b) base model download alone", b, "model_bytes_s")):
        first, last = (median(lambda r, k=key, i=i: r[k][i]) for i in (0, 1))
        print(f"{label:44}{value:>8.2f}s   (its link's first byte at {first:.2f}s, last at {last:.2f}s)")
    print(f"{'(c) job, start to model stage completed':44}{c:>8.2f}s")
    ratio = median(lambda r: r["ratio_longer"])
    print(f"goal: (c) / max(a, b) <= {GOAL}: {ratio:.2f}x {'met' if ratio <= GOAL else 'NOT met'}"
          f"   ((c) / (a + b): {median(lambda r: r['ratio_sum']):.2f}x)")
    print(f"(c) beyond max(a, b): {median(lambda r: r['beyond_s']):.2f}s\n")
    print(f"{'job stage':20}{'starts at':>11}{'takes':>9}")
    for name in STAGES:
        start = median(lambda r, n=name: r["job"]["stage_starts_s"].get(n, 0.0))
        took = median(lambda r, n=name: r["job"]["stages_s"].get(n, 0.0))
        print(f"{name:20}{start:>10.2f}s{took:>8.2f}s")
    print(f"\n{'job timeline (from its start)':40}{'at':>8}")
    marks = sorted(runs[0]["job"]["marks_s"], key=lambda m: runs[0]["job"]["marks_s"][m])
    for mark in marks:
        print(f"{mark:40}{median(lambda r, m=mark: r['job']['marks_s'].get(m, 0.0)):>7.2f}s")
    def between(first: str, then: str) -> float:
        return median(lambda r: r["job"]["marks_s"].get(then, 0.0) - r["job"]["marks_s"].get(first, 0.0))

    print("\nthe dataset stage after the dataset's last byte:")
    checked = "dataset extracted and checked"
    for label, first, then in (("extraction and image checks", "dataset link last byte", checked),
                               ("kept in the cache (hashes, links)", checked, "dataset completed")):
        print(f"  {label:38}{between(first, then):>7.2f}s")


if __name__ == "__main__":
    raise SystemExit(main())
