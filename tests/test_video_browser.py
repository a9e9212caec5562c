"""A video LoRA from the UI, in a real browser (Debian Chromium driven by Playwright): upload three clips with their
captions, pick the Wan 2.1 T2V 1.3B preset and point it at the tiny Wan (a CPU trains it), ask for a video sample,
train two steps, and watch the run finish; the Train tab's sample grid then plays the .mp4 sample (a poster, the
browser's controls, its step and prompt). One training serves both tests."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.clips import write_clip
from tests.test_app_api import launch
from tests.test_app_browser import ARGS, CHROMIUM, open_tab

TRAINING_MS = 600_000  # the tiny Wan: about a minute on 2 free CPUs; generous for a loaded machine
PROMPT = "[trigger] a white bar moving"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                                     "(apt-get install -y chromium)"),
]


@dataclass
class TrainedPage:
    page: Any
    job_dir: Path


def upload_clips(folder: Path) -> list[Path]:
    files = []
    for index, frames in enumerate((9, 13, 17)):
        clip = write_clip(folder / f"move{index}.mp4", frames=frames, caption=f"a white bar moving, take {index}")
        files += [clip, clip.with_suffix(".txt")]
    return files


def choose(page, label: str, option: str) -> None:
    """Pick `option` in a Gradio dropdown."""
    box = page.get_by_label(label)
    box.click()
    box.fill(option)
    page.get_by_role("option", name=option, exact=True).click()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model: Path, tiny_family_model) -> Iterator[TrainedPage]:
    from playwright.sync_api import expect, sync_playwright

    area = tmp_path_factory.mktemp("video-browser")
    data_root = area / "data"
    ui, url = launch(data_root, tiny_model)
    wan = data_root / "models" / "tiny-wan"
    wan.symlink_to(tiny_family_model("wan"), target_is_directory=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            page.goto(url)

            open_tab(page, "Dataset")
            page.locator("#dataset-upload input[type=file]").set_input_files(
                [str(path) for path in upload_clips(area / "upload")])
            expect(page.get_by_text(re.compile(r"Loaded 0 images and 3 clips"))).to_be_visible(timeout=60_000)
            expect(page.get_by_text("Page 1 of 1 · 0 images · 3 clips")).to_be_visible()
            page.get_by_label("Trigger word").fill("sks")

            open_tab(page, "Config")
            page.get_by_label("Wan 2.1 T2V 1.3B (480p)").check()
            base_model = page.get_by_label("Base model")
            expect(base_model).to_have_value("Wan-AI/Wan2.1-T2V-1.3B-Diffusers")
            expect(page.get_by_text(re.compile("81 frames per clip sample")).first).to_be_visible()
            base_model.fill(str(wan))  # the tiny Wan in place of the Hub's 1.3B: a CPU trains it
            choose(page, "Optimizer", "torch-adamw")  # the field's own advice on a CPU
            for label, value in (("LoRA rank", "2"), ("Resolution", "64"), ("Steps or epochs", "2")):
                page.get_by_label(label).fill(value)
            page.get_by_role("button", name="Advanced").click()
            page.get_by_label("Other job fields (JSON)").fill(json.dumps({
                "dataloader": {"minimum_image_size": 32, "video": {"num_frames": 9}},
                "samples": {"prompts": [PROMPT], "every": 2, "steps": 2, "resolution": 64}}))

            open_tab(page, "Train")
            page.get_by_role("button", name="Start training").click()
            expect(page.get_by_text(re.compile(r"Started run"))).to_be_visible()
            bar = page.get_by_role("progressbar")
            expect(bar).to_have_attribute("aria-valuenow", "100", timeout=TRAINING_MS)
            run = ui.registry.training()
            yield TrainedPage(page=page, job_dir=Path(run.job_dir))
            browser.close()
    finally:
        ui.registry.shutdown()
        ui.blocks.close()


@pytest.mark.training
def test_the_ui_trains_a_wan_lora_from_uploaded_clips(trained):
    from playwright.sync_api import expect

    page = trained.page
    expect(page.get_by_text(re.compile(r"Finished · .*step 2/2"))).to_be_visible()
    expect(page.get_by_text(re.compile(r"Finished in .*: 2 steps"))).to_be_visible()
    assert (trained.job_dir / "output" / "pytorch_lora_weights.safetensors").stat().st_size > 0
    log = (trained.job_dir / "training.log").read_text()
    assert "Total number of videos: 3" in log  # SimpleTuner trained on the clips


@pytest.mark.training
def test_the_sample_grid_plays_the_video_sample_with_its_poster_step_and_prompt(trained):
    from playwright.sync_api import expect

    page = trained.page
    grid = page.locator("#sample-videos")
    video = grid.locator("video")
    expect(video).to_have_count(1)
    expect(grid.locator("figcaption")).to_have_text("step 2 · sks a white bar moving")
    expect(grid.locator("img")).to_have_count(0)  # no picture of a video that would show broken
    assert video.get_attribute("controls") is not None
    # It really plays: Chromium reads the .mp4's length; the poster is a JPEG the page may fetch.
    duration = video.evaluate("""v => new Promise(done => {
        if (v.readyState >= 1) return done(v.duration);
        v.addEventListener('loadedmetadata', () => done(v.duration));
        v.addEventListener('error', () => done(-1));
        v.load();
    })""")
    assert duration > 0, "Chromium could not read the sample video"
    poster = page.request.get(page.url.rstrip("/") + "/" + video.get_attribute("poster"))
    assert poster.status == 200 and poster.body()[:3] == b"\xff\xd8\xff"
    assert [path.suffix for path in (trained.job_dir / "output" / "validation_images").iterdir()] == [".mp4"]
