"""Benchmark: auto-captioning through the caption stage vs calling the model directly in one process.

    .venv/bin/python bench/bench_caption.py                              # the tiny Florence-2, 32 images, CPU
    .venv/bin/python bench/bench_caption.py --images 64 --batch-size 8
    .venv/bin/python bench/bench_caption.py --model florence-2-large     # on a CUDA machine, if it is in the cache

(a) direct: one trainer-env process imports torch + transformers, loads the model (timed apart) and captions the
images with the same code the stage runs (tools/caption_images.py's Captioner), timing only the captioning.
(b) stage: core/generation/captioning.py's `generate_captions` from the app env, as a job runs it: a subprocess started,
its model loaded, a JSON line per image read back. Its overhead (process start, imports, model load) is reported
apart from its throughput. Figures are printed and written as JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.adapters import TrainerEnv, detect_device  # noqa: E402
from core.generation import (  # noqa: E402
    build_tiny_captioner,
    generate_captions,
    write_demo_dataset,
)
from core.settings import Settings  # noqa: E402
from core.spec import CaptioningSpec  # noqa: E402

DIRECT_CHILD = """
import json, sys, time
started = time.perf_counter()
import torch, transformers  # noqa
imported = time.perf_counter()
sys.path.insert(0, sys.argv[1])
from caption_images import Captioner
from PIL import Image
request = json.loads(open(sys.argv[2]).read())
captioner = Captioner(request["model"], device=request["device"])
loaded = time.perf_counter()
paths, batch = request["images"], request["batch_size"]
for first in range(0, len(paths), batch):
    images = [Image.open(p).convert("RGB") for p in paths[first:first + batch]]
    captioner.caption(images, style=request["style"], max_length=request["max_length"])
done = time.perf_counter()
print(json.dumps({"import_s": imported - started, "load_s": loaded - imported, "caption_s": done - loaded}))
"""


def direct(request: dict, *, settings: Settings, device: str) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
        json.dump(request, file)
    env = TrainerEnv(settings).env(device=device, offline=True)
    started = time.perf_counter()
    done = subprocess.run([str(settings.trainer_python), "-P", "-c", DIRECT_CHILD, str(ROOT / "tools"), file.name],
                          env=env, capture_output=True, text=True, check=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures["wall_s"] = time.perf_counter() - started
    return figures


def stage(images: list[Path], spec: CaptioningSpec, *, settings: Settings, device: str, log: Path) -> dict:
    started = time.perf_counter()
    run = generate_captions(images, spec, settings=settings, device=device, log=log)
    wall = time.perf_counter() - started
    return {"wall_s": wall, "load_s": run.load_s, "caption_s": wall - run.load_s, "images_per_s": run.images_per_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=20)
    parser.add_argument("--model", default=None, help="a caption model name, Hub id or folder (default: the tiny one)")
    args = parser.parse_args()
    settings = Settings.from_env()
    device = detect_device(settings)[0]
    model = args.model or str(build_tiny_captioner(ROOT / ".cache" / "tiny-captioner", settings=settings))
    spec = CaptioningSpec(model=model, style="short", max_length=args.max_length, batch_size=args.batch_size)
    with tempfile.TemporaryDirectory() as scratch:
        folder = write_demo_dataset(Path(scratch) / "images", count=args.images, size=256)
        images = sorted(folder.glob("*.png"))
        try:
            staged = stage(images, spec, settings=settings, device=device, log=Path(scratch) / "caption.log")
        except Exception as error:  # a Hub model missing from the cache on an offline machine: said, not hidden
            print(f"stage: {spec.model_id} could not run here: {error}")
            return 1
        request = {"model": spec.model_id,
                   "images": [str(p) for p in images], "style": "short", "max_length": args.max_length,
                   "batch_size": args.batch_size, "device": device}
        alone = direct(request, settings=settings, device=device)
    direct_rate = args.images / alone["caption_s"]
    results = {
        "model": spec.model_id, "device": device, "images": args.images, "batch_size": args.batch_size,
        "max_new_tokens": args.max_length,
        "direct": {**{k: round(v, 3) for k, v in alone.items()}, "images_per_s": round(direct_rate, 3)},
        "stage": {k: round(v, 3) for k, v in staged.items()},
        "stage_overhead_s": round(staged["wall_s"] - alone["caption_s"], 3),
        "throughput_ratio": round(staged["images_per_s"] / direct_rate, 3),
    }
    print(f"model {results['model']} on {device}, {args.images} images, batch {args.batch_size}")
    print(f"  direct (one process): import {alone['import_s']:.1f}s, load {alone['load_s']:.1f}s, "
          f"caption {alone['caption_s']:.2f}s = {direct_rate:.2f} images/s")
    print(f"  stage (subprocess):   start+import+load {staged['load_s']:.1f}s, caption {staged['caption_s']:.2f}s "
          f"= {staged['images_per_s']:.2f} images/s (ratio {results['throughput_ratio']:.2f})")
    print(f"  stage overhead over the captioning itself: {results['stage_overhead_s']:.1f}s")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"caption-{int(time.time())}.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
