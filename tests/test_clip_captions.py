"""Video clips in the caption stage (core/generation/captioning.py, tools/caption_images.py): a clip without a caption
gets one from its sampled frames, captioned by the tiny random Florence-2 in the trainer env; a clip's own caption is
kept; a second run takes the captions from the cache."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from core.cache import Cache
from core.dataset import CaptionOptions, stage_dataset
from core.events import CaptionProgress
from core.generation.captioning import caption_manifest
from core.generation.demo import build_tiny_captioner, write_demo_dataset
from core.spec import CaptioningSpec, DatasetSpec
from tests.conftest import ROOT
from tests.support.clips import write_clip

TINY_CAPTIONER_DIR = ROOT / ".cache" / "tiny-captioner"


@pytest.fixture(scope="session")
def tiny_captioner(settings) -> Path:
    return build_tiny_captioner(TINY_CAPTIONER_DIR, settings=settings)


@pytest.mark.trainer_env
def test_a_clip_without_a_caption_gets_one_from_its_frames_and_a_second_run_takes_it_from_the_cache(
        tmp_path, tiny_captioner, settings):
    source = write_demo_dataset(tmp_path / "source", count=1)
    for caption in source.glob("*.txt"):
        caption.unlink()  # the image needs a caption too
    write_clip(source / "walk.mp4", frames=9)
    write_clip(source / "own.webm", frames=9, codec="libvpx-vp9", caption="a white bar crossing a dark room")
    settings = replace(settings, cache_dir=tmp_path / "cache")
    cache = Cache.from_settings(settings)
    captioning = CaptioningSpec(model=str(tiny_captioner), mode="missing", style="short", max_length=12)
    options = CaptionOptions(trigger_word="sks")

    first = stage_dataset_into(source, tmp_path / "job1", settings=settings, options=options)
    events: list = []
    report = caption_manifest(first, captioning, captions=options, settings=settings, cache=cache,
                              on_event=events.append)

    clips = {entry.path.name: entry for entry in first.clips}
    written = {name: entry.path.with_suffix(".txt").read_text().strip() for name, entry in clips.items()}
    assert clips["own.webm"].caption_source == "file"
    assert written["own.webm"] == "sks, a white bar crossing a dark room"  # the user's caption is kept
    assert clips["walk.mp4"].caption_source == "generated"
    assert written["walk.mp4"].startswith("sks, ") and len(written["walk.mp4"]) > len("sks, ")
    assert first.images[0].caption_source == "generated"
    assert (report.images_captioned, report.clips_total, report.clips_captioned, report.clips_kept) == (1, 2, 1, 1)
    assert report.sources == {first.images[0].path.name: "generated", "walk.mp4": "generated", "own.webm": "file"}
    progress = [event for event in events if isinstance(event, CaptionProgress)]
    assert [(event.done, event.total) for event in progress] == [(1, 2), (2, 2)]
    assert progress[-1].image == "walk.mp4"
    assert not report.from_cache

    second = stage_dataset_into(source, tmp_path / "job2", settings=settings, options=options)
    again = caption_manifest(second, captioning, captions=options, settings=settings, cache=cache)
    assert again.from_cache and again.clips_captioned == 1
    clip = next(entry for entry in second.clips if entry.path.name == "walk.mp4")
    assert clip.path.with_suffix(".txt").read_text().strip() == written["walk.mp4"]


def stage_dataset_into(source: Path, job: Path, *, settings, options: CaptionOptions):
    return stage_dataset(DatasetSpec(path=str(source)), job / "dataset", settings=settings, captions=options)
