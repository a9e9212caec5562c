"""Benchmark: a webhook receiver that never answers costs a job its bounded delivery attempts, not training time.

    .venv/bin/python bench/bench_webhooks.py             # 1 run of each; --runs 3 for medians

Trains the tiny SDXL (built once into .cache/tiny-sdxl) on CPU through run_job three ways, each in a fresh folder:
(a) no webhook, (b) a webhook to a loopback receiver that answers at once, (c) a webhook to a loopback socket that
takes connections and never sends a byte, after one warm-up job; the cache is off (`"cache": false`). For each: the
median seconds between two training steps (what a slow receiver must not change), the train stage's seconds
(SimpleTuner's start and steps), the seconds after it (samples, the end of the job, the deliveries' drain),
the whole job's seconds, and the delivery counts. The goal: (b) and (c) train as fast as (a), and (c)'s job ends no
later than the sender's drain limit (core/adapters/webhooks.py DRAIN_S) after (a)'s. Timings on a small shared machine
are noisy: compare medians. JSON results go to bench/results/.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.adapters.webhooks import DRAIN_S  # noqa: E402
from core.events import Event, StageEvent, TrainingProgress  # noqa: E402
from core.generation import build_tiny_model, write_demo_dataset  # noqa: E402
from core.pipeline import run_job  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.spec import parse_job  # noqa: E402
from tests.support.webhook_receiver import receiving_webhooks, silent_receiver  # noqa: E402

SECRET = "whsec_" + base64.b64encode(b"bench key, thirty-two bytes long").decode()
STEPS = 10


def one_job(*, model: Path, folder: Path, settings: Settings, url: str | None) -> dict:
    dataset = write_demo_dataset(folder / "dataset", count=4)
    job = {"dataset": {"path": str(dataset)}, "trigger_word": "sks", "dataloader": {"minimum_image_size": 64},
           "cache": False,  # each job computes the same: no earlier job's embeddings or latents
           "config": {"model_family": "sdxl", "model_name": str(model), "resolution": 128, "lora_rank": 4,
                      "max_train_steps": STEPS, "checkpointing_steps": 2, "seed": 42}}
    if url:
        job["webhook"] = {"url": url, "secret": SECRET}
    marks: dict[str, float] = {}
    steps: list[float] = []

    def on_event(event: Event) -> None:
        if isinstance(event, StageEvent) and event.stage == "train":
            marks[event.status] = time.monotonic()
        elif isinstance(event, TrainingProgress):
            steps.append(time.monotonic())

    started = time.monotonic()
    result = run_job(parse_job(job), folder / "job", on_event, settings=settings)
    ended = time.monotonic()
    gaps = [later - earlier for earlier, later in pairwise(steps)]
    return {"job_s": round(ended - started, 2), "train_s": round(marks["completed"] - marks["started"], 2),
            "step_s": round(statistics.median(gaps), 3) if gaps else None,
            "after_train_s": round(ended - marks["completed"], 2), "webhook": result.webhook}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args(argv)
    rows: dict[str, list[dict]] = {"none": [], "answering": [], "silent": []}
    with tempfile.TemporaryDirectory() as scratch, receiving_webhooks() as receiver, silent_receiver() as silent:
        settings = replace(Settings.from_env(), device="cpu", allow_private_urls=True,  # the loopback receivers
                           data_root=Path(scratch) / "data", cache_dir=Path(scratch) / "cache")
        model = build_tiny_model(ROOT / ".cache" / "tiny-sdxl", settings=settings)
        one_job(model=model, folder=Path(scratch) / "warm-up", settings=settings, url=None)  # the OS's file cache
        for run in range(args.runs):
            for name, url in (("none", None), ("answering", receiver.url), ("silent", silent)):
                rows[name].append(one_job(model=model, folder=Path(scratch) / f"{name}-{run}", settings=settings,
                                          url=url))
                print(name, rows[name][-1], flush=True)
    summary: dict = {name: {key: statistics.median(r[key] for r in runs) for key in ("step_s", "train_s",
                                                                                  "after_train_s", "job_s")}
                     | {"webhook": runs[-1]["webhook"]} for name, runs in rows.items()}
    for key in ("step_s", "train_s", "after_train_s", "job_s"):
        summary[f"silent_minus_none_{key}"] = round(summary["silent"][key] - summary["none"][key], 2)
    summary["drain_limit_s"] = DRAIN_S
    print(json.dumps(summary, indent=2))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_webhooks.json").write_text(json.dumps({"runs": rows, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
