"""What one job takes from the cache and gives back to it (core/cache/store.py): the pipeline's one handle on reuse.

    reuse = JobReuse.for_job(spec, settings=settings)      # no cache: `cache: false` in the job
    sink = reuse.watching(sink)                             # times SimpleTuner's caching stages, the first step
    manifest = reuse.stage_dataset(...)                     # dataset stage: from the cache, or staged and kept
    reuse.restore(spec, files, manifest, on_event=...)      # before training: SimpleTuner's caches linked in
    result.cache = reuse.finish(on_event=...)               # after training: what missed is kept; the summary

The summary (the result's `cache`, also said in one status line): `{"dataset": "reused", "text_embeds": N,
"latents": N, "buckets": N, "saved_s": S, "stages_s": {...}, "first_step_s": T}` (buckets: images whose aspect
bucket SimpleTuner did not scan again); saved_s is what the reused parts took the job
that made them, less what reusing took.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from core.cache.buckets import TrainerCaches, plan, restore, store
from core.cache.datasets import DatasetReuse, stage_dataset_cached
from core.cache.store import Cache
from core.dataset import CaptionOptions, Manifest
from core.events import Event, EventSink, LogLine, TrainerStage, TrainingProgress, ignore_event
from core.result import human_duration
from core.settings import Settings
from core.spec import DatasetSpec, JobSpec

STAGE_KEYS = {"init_cache_text_embeds_status_update": "text_embeds", "init_vae_cache": "vae_latents",
              "init_cache_vae_processing_complete": "vae_latents"}
"""SimpleTuner's lifecycle events while it computes its caches (its `init_text_embed_cache` stage only loads the
encoders and the empty prompt's embedding: the captions are embedded under `init_cache_text_embeds_status_update`)."""


class JobReuse:
    def __init__(self, cache: Cache | None):
        self.cache = cache
        self.started = time.monotonic()
        self.dataset = DatasetReuse()
        self.trainer = TrainerCaches()
        self.stage_times: dict[str, list[float]] = {}
        self.first_step_s: float | None = None

    @classmethod
    def for_job(cls, spec: JobSpec, *, settings: Settings) -> JobReuse:
        return cls(Cache.from_settings(settings) if spec.cache else None)

    def watching(self, on_event: EventSink) -> EventSink:
        def sink(event: Event) -> None:
            if isinstance(event, TrainerStage) and event.key in STAGE_KEYS:
                self.stage_times.setdefault(STAGE_KEYS[event.key], []).append(time.monotonic())
            elif isinstance(event, TrainingProgress) and self.first_step_s is None and event.step >= 1:
                self.first_step_s = time.monotonic() - self.started
            on_event(event)

        return sink

    def stage_s(self, kind: str) -> float | None:
        """How long SimpleTuner's stage computing `kind` took (first to last event of it), when it said."""
        times = self.stage_times.get(kind)
        return times[-1] - times[0] if times and len(times) > 1 else None

    def stage_dataset(self, dataset: DatasetSpec, dest: Path, *, captions: CaptionOptions, **staging: Any
                      ) -> Manifest:
        manifest, self.dataset = stage_dataset_cached(dataset, dest, cache=self.cache, captions=captions, **staging)
        return manifest

    def restore(self, spec: JobSpec, backends: list[dict[str, Any]], manifest: Manifest, *, settings: Settings,
                on_event: EventSink = ignore_event) -> None:
        """Link SimpleTuner's caches that an earlier job made for the same inputs into this job's folders."""
        if self.cache is None:
            return
        self.trainer = restore(plan(spec, backends, manifest, images=self.dataset.images,
                                    clips=self.dataset.clips, settings=settings),
                               self.cache, on_event=on_event)

    def finish(self, *, trained: bool, on_event: EventSink = ignore_event) -> dict[str, Any] | None:
        """After the job: keep what SimpleTuner computed (only after a training that succeeded), say what came from
        the cache; None when the job used no cache."""
        if self.cache is None:
            return None
        if trained:
            for item in self.trainer.dirs:
                if item.hit is None:
                    store(TrainerCaches(dirs=[item]), self.cache, build_s=self.stage_s(item.kind) or 0.0,
                          on_event=on_event)
        summary = self.summary()
        on_event(LogLine(describe(summary)))
        return summary

    def summary(self) -> dict[str, Any]:
        saved = self.dataset.saved_s
        for item in self.trainer.dirs:
            if item.hit is not None:
                saved += max(item.hit.build_s - (self.stage_s(item.kind) or 0.0), 0.0)
        stages = {kind: round(s, 2) for kind in STAGE_KEYS.values() if (s := self.stage_s(kind)) is not None}
        return {"dataset": self.dataset.status, "text_embeds": self.trainer.reused("text_embeds"),
                "latents": self.trainer.reused("vae_latents"), "buckets": self.trainer.reused("buckets"),
                "saved_s": round(saved, 2),
                **({"stages_s": stages} if stages else {}),
                **({"first_step_s": round(self.first_step_s, 2)} if self.first_step_s is not None else {})}


def describe(summary: dict[str, Any]) -> str:
    """One line: 'from the cache: dataset, 6 text embeddings (saved 12.3s)' or 'nothing from the cache'."""
    parts = ["dataset"] if summary.get("dataset") == "reused" else []
    if summary.get("text_embeds"):
        parts.append(f"{summary['text_embeds']} text embeddings")
    if summary.get("latents"):
        parts.append(f"{summary['latents']} VAE latents")
    if summary.get("buckets"):
        parts.append(f"{summary['buckets']} images' aspect buckets")
    if not parts:
        return "nothing came from the cache (what this job made is kept for the next one)"
    return f"from the cache: {', '.join(parts)} (saved {human_duration(summary.get('saved_s') or 0.0)})"
