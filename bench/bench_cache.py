"""Benchmark: the same tiny-model job twice on the same remote dataset, the second time with another learning rate.

    .venv/bin/python bench/bench_cache.py                 # 200 images (128 px noise JPEGs + captions), 3 steps
    .venv/bin/python bench/bench_cache.py --images 1000

The dataset is a zip served by the tests' loopback file server; both runs share one cache folder (CACHE_DIR in a
temporary folder). Prints, for both runs, the duration of each pipeline stage, SimpleTuner's text-embedding stage
(`init_text_embed_cache`, as its lifecycle events report it; VAE latents are computed on the fly on CPU, so that
stage is measured on a CUDA machine only), the time from start to the first training step, and what the second run
took from the cache. JSON results go to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_dataset import noise_jpegs  # noqa: E402
from core.demo import build_tiny_model  # noqa: E402
from core.events import StageEvent  # noqa: E402
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
            "text_embed_stage_s": (cache.get("stages_s") or {}).get("text_embeds"),
            "first_step_s": cache.get("first_step_s"), "cache": cache}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
        base = Path(tmp)
        served = base / "served"
        served.mkdir()
        write_zip(served / "data.zip", images=args.images)
        settings = Settings.from_env({"DATA_DIR": str(base / "data"), "CACHE_DIR": str(base / "cache"),
                                      "ALLOW_PRIVATE_URLS": "1", "TRAINER_DEVICE": "cpu"})
        model = build_tiny_model(ROOT / ".cache" / "tiny-sdxl", settings=settings)
        with serve_files(served) as server:
            url = server.url("data.zip")
            first = run_once(url, model=model, workdir=base / "run1", settings=settings, learning_rate=1e-4)
            second = run_once(url, model=model, workdir=base / "run2", settings=settings, learning_rate=3e-4)
    print(f"{args.images} images, tiny SDXL model, 3 steps at 128 px on {settings.device}")
    print(f"{'':28}{'first run':>12}{'second run':>12}{'ratio':>8}")
    rows = [(f"stage {name}", first["stages_s"].get(name), second["stages_s"].get(name))
            for name in first["stages_s"]]
    rows += [("SimpleTuner text embeds", first["text_embed_stage_s"], second["text_embed_stage_s"]),
             ("start to first step", first["first_step_s"], second["first_step_s"]),
             ("whole job", first["total_s"], second["total_s"])]
    for label, one, two in rows:
        ratio = f"{two / one:.2f}" if one and two is not None else "-"
        print(f"{label:28}{_s(one):>12}{_s(two):>12}{ratio:>8}")
    print(f"second run from the cache: {json.dumps(second['cache'])}")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_cache.json").write_text(json.dumps({"images": args.images, "first": first, "second": second},
                                                     indent=2))


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


if __name__ == "__main__":
    main()
