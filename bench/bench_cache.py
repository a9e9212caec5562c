"""Benchmark: the same tiny-model job twice on the same remote dataset, the second time with another learning rate.

    .venv/bin/python bench/bench_cache.py                 # 200 images (128 px noise JPEGs + captions), 3 steps
    .venv/bin/python bench/bench_cache.py --images 1000 --pairs 3

The dataset is a zip served by the tests' loopback file server; both runs of a pair share one cache folder
(CACHE_DIR in a temporary folder; each pair starts with an empty one). Prints, for both runs (the median over the
pairs), the duration of each pipeline stage, SimpleTuner's text-embedding stage (its
`init_cache_text_embeds_status_update` lifecycle events, first to last; a run that finds every embedding emits none:
0 s; VAE latents are computed on the fly on CPU, so that stage is measured on a CUDA machine only), the time from
start to the first training step, what the second run took from the cache, and the goals: each reused stage at most
0.1x of its first time, and the first step earlier by at least what those stages took the first time. JSON results
go to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_dataset import noise_jpegs  # noqa: E402
from core.events import StageEvent  # noqa: E402
from core.generation import build_tiny_model  # noqa: E402
from core.pipeline import run_job  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.spec import parse_job  # noqa: E402
from tests.support.http_server import serve_files  # noqa: E402

WORDS = "red green blue circle square triangle small large bright dark photo drawing".split()


def write_zip(path: Path, *, images: int) -> None:
    pool = noise_jpegs(16, 12)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for index in range(images):
            archive.writestr(f"set/img_{index:04d}.jpg", pool[index % len(pool)] + index.to_bytes(4, "big"))
            caption = " ".join(WORDS[(index * k) % len(WORDS)] for k in (1, 3, 5)) + f" number {index}"
            archive.writestr(f"set/img_{index:04d}.txt", caption)


def run_once(url: str, *, model: Path, workdir: Path, settings: Settings, learning_rate: float) -> dict:
    job = {"dataset_url": url, "trigger_word": "sks", "dataloader": {"minimum_image_size": 64},
           "config": {"model_family": "sdxl", "model_name": str(model), "resolution": 128, "max_train_steps": 3,
                      "checkpointing_steps": 3, "lora_rank": 4, "learning_rate": learning_rate}}
    starts: dict[str, float] = {}
    stages: dict[str, float] = {}

    def sink(event) -> None:
        if isinstance(event, StageEvent):
            if event.status == "started":
                starts[event.stage] = time.monotonic()
            elif event.status == "completed" and event.stage in starts:
                stages[event.stage] = round(time.monotonic() - starts[event.stage], 2)

    started = time.monotonic()
    result = run_job(parse_job(job), workdir, sink, settings=settings)
    cache = result.cache or {}
    return {"total_s": round(time.monotonic() - started, 2), "stages_s": stages,
            "text_embed_stage_s": (cache.get("stages_s") or {}).get("text_embeds", 0.0),
            "first_step_s": cache.get("first_step_s"), "cache": cache}


def run_pair(base: Path, served: Path, *, model: Path) -> tuple[dict, dict]:
    settings = Settings.from_env({"DATA_DIR": str(base / "data"), "CACHE_DIR": str(base / "cache"),
                                  "ALLOW_PRIVATE_URLS": "1", "TRAINER_DEVICE": "cpu"})
    with serve_files(served) as server:
        url = server.url("data.zip")
        first = run_once(url, model=model, workdir=base / "run1", settings=settings, learning_rate=1e-4)
        second = run_once(url, model=model, workdir=base / "run2", settings=settings, learning_rate=3e-4)
    return first, second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--pairs", type=int, default=1, help="first/second pairs to run; medians are printed")
    args = parser.parse_args()
    pairs = []
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
        base = Path(tmp)
        served = base / "served"
        served.mkdir()
        write_zip(served / "data.zip", images=args.images)
        model = build_tiny_model(ROOT / ".cache" / "tiny-sdxl", settings=Settings.from_env({}))
        for index in range(args.pairs):
            pairs.append(run_pair(base / f"pair{index}", served, model=model))
    first = _median_run([one for one, _ in pairs])
    second = _median_run([two for _, two in pairs])
    print(f"{args.images} images, tiny SDXL model, 3 steps at 128 px on cpu; median of {args.pairs} pair(s)")
    print(f"{'':28}{'first run':>12}{'second run':>12}{'ratio':>8}")
    rows = [(f"stage {name}", first["stages_s"].get(name), second["stages_s"].get(name))
            for name in first["stages_s"]]
    rows += [("SimpleTuner text embeds", first["text_embed_stage_s"], second["text_embed_stage_s"]),
             ("start to first step", first["first_step_s"], second["first_step_s"]),
             ("whole job", first["total_s"], second["total_s"])]
    for label, one, two in rows:
        ratio = f"{two / one:.2f}" if one and two is not None else "-"
        print(f"{label:28}{_s(one):>12}{_s(two):>12}{ratio:>8}")
    reused = first["stages_s"]["dataset"] + first["text_embed_stage_s"]
    gained = first["first_step_s"] - second["first_step_s"]
    for label, one, two in (("dataset", first["stages_s"]["dataset"], second["stages_s"]["dataset"]),
                            ("text embeds", first["text_embed_stage_s"], second["text_embed_stage_s"])):
        print(f"goal: {label} reused at <= 0.1x: {two / one:.3f}x {'met' if two <= 0.1 * one else 'NOT met'}")
    print(f"goal: first step earlier by >= {reused:.2f}s (dataset + text embeds of the first run): "
          f"{gained:.2f}s earlier, {'met' if gained >= reused else 'NOT met'}")
    print(f"second run from the cache: {json.dumps(second['cache'])}")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_cache.json").write_text(json.dumps({"images": args.images, "pairs": pairs, "first": first,
                                                     "second": second}, indent=2))


def _median_run(runs: list[dict]) -> dict:
    """Each figure's median over the runs (the first run's record for everything else)."""
    out = json.loads(json.dumps(runs[0]))
    for key in ("total_s", "text_embed_stage_s", "first_step_s"):
        out[key] = statistics.median(run[key] or 0.0 for run in runs)
    out["stages_s"] = {name: statistics.median(run["stages_s"].get(name, 0.0) for run in runs)
                       for name in runs[0]["stages_s"]}
    return out


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


if __name__ == "__main__":
    main()
