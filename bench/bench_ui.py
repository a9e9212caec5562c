"""Benchmark the UI: time to the first gallery page of a 1,000-image dataset, and UI start time.

    .venv/bin/python bench/bench_ui.py                      # 1,000 JPEGs of 1024x1024
    .venv/bin/python bench/bench_ui.py --images 200 --side 512 --format png

Gallery: the images are loaded once through the Dataset tab's store (the core's staging: decode, captions), then
page 1 is timed (a) in the store, thumbnails not yet made ("cold": the page makes its 24), (b) in the store with
thumbnails cached ("warm"), and (c, d) through the running app's /gallery_page endpoint with gradio_client, which
adds Gradio's request and file handling (goal for d: under 1 s). Start: `python -m app` in a child process until its
page answers (imports, UI build, server up). JSON results go to bench/results/.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.update({"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1", "TRAINER_DEVICE": "cpu"})

from app.dataset_store import DatasetStore  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.spec import DatasetSpec  # noqa: E402


def write_dataset(folder: Path, *, count: int, side: int, kind: str = "jpeg") -> None:
    """`count` photo-like images (gradients and shapes, not noise) with a caption each."""
    folder.mkdir(parents=True)
    rng = random.Random(0)
    base = Image.linear_gradient("L").resize((side, side)).convert("RGB")
    for index in range(count):
        image = base.copy()
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x, y, r = rng.randrange(side), rng.randrange(side), rng.randrange(side // 16, side // 4)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.randrange(256) for _ in range(3)))
        buffer = io.BytesIO()
        image.save(buffer, format=kind.upper(), **({"quality": 88} if kind == "jpeg" else {}))
        (folder / f"img_{index:04d}.{'jpg' if kind == 'jpeg' else kind}").write_bytes(buffer.getvalue())
        (folder / f"img_{index:04d}.txt").write_text(f"a photo of shapes, number {index}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def timed(call) -> tuple[float, object]:
    start = time.perf_counter()
    value = call()
    return time.perf_counter() - start, value


def bench_gallery(work: Path, *, count: int, side: int, kind: str) -> dict:
    source = work / "source"
    seconds_write, _ = timed(lambda: write_dataset(source, count=count, side=side, kind=kind))
    settings = Settings.from_env({**os.environ, "DATA_DIR": str(work / "data")})
    store = DatasetStore(settings=settings)
    seconds_load, manifest = timed(lambda: store.load(DatasetSpec(path=str(source))))
    time.sleep(0.2)
    shutil.rmtree(store.thumbs_dir, ignore_errors=True)  # the background warmer may have started: start cold
    seconds_cold, page = timed(lambda: store.page(1))
    seconds_warm, _ = timed(lambda: store.page(1))
    assert len(page.items) == 24 and page.total == count

    from gradio_client import Client

    from app.__main__ import serve

    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(free_port())}
    ui, url = serve(settings=settings, env=env, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(url, verbose=False, download_files=False)
        shutil.rmtree(store.thumbs_dir, ignore_errors=True)
        seconds_api_cold, _ = timed(lambda: client.predict(1, api_name="/gallery_page"))
        runs = [timed(lambda: client.predict(1, api_name="/gallery_page"))[0] for _ in range(5)]
        seconds_api_page40, _ = timed(lambda: client.predict(40, api_name="/gallery_page"))
    finally:
        ui.blocks.close()
    return {
        "images": count, "side": side, "format": kind, "write_s": round(seconds_write, 2),
        "load_s": round(seconds_load, 2), "images_staged": len(manifest.images),
        "page1_store_cold_s": round(seconds_cold, 3), "page1_store_warm_s": round(seconds_warm, 4),
        "page1_api_cold_s": round(seconds_api_cold, 3), "page1_api_warm_median_s": round(sorted(runs)[2], 3),
        "page40_api_after_warming_s": round(seconds_api_page40, 3),
    }


def bench_start(work: Path) -> dict:
    port = free_port()
    env = {**os.environ, "DATA_DIR": str(work / "start-data"), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_SERVER_PORT": str(port), "PYTHONPATH": str(ROOT)}
    env.pop("UI_PASSWORD", None)
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-P", "-m", "app"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                ready = requests.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200
            except requests.ConnectionError:
                ready = False  # not listening yet
            if ready:
                break
            if child.poll() is not None:
                raise RuntimeError(f"python -m app exited with {child.returncode}")
            if time.perf_counter() - start > 120:
                raise RuntimeError("the UI did not answer within 120 s")
            time.sleep(0.05)
        seconds = time.perf_counter() - start
    finally:
        child.terminate()
        child.wait(30)
    return {"start_to_first_page_s": round(seconds, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--format", choices=["jpeg", "png"], default="jpeg")
    args = parser.parse_args()
    # The background thumbnail warmer may outlive a run's folder; its "no thumbnail" notes are not results.
    logging.getLogger("app.dataset_store").setLevel(logging.ERROR)
    work = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    try:
        results = {**bench_start(work), **bench_gallery(work, count=args.images, side=args.side, kind=args.format),
                   "cpus": os.cpu_count()}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for key, value in results.items():
        print(f"{key:>28}: {value}")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"bench_ui-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
