"""The Train tab's sample grid (app/sample_grid.py) without a browser: cells in grid order with their step and own
prompt, a video sample rendered as a player with its first frame as the poster, an image sample left to the gallery.
tests/test_video_browser.py plays a real training's video sample in Chromium."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from PIL import Image

from app.sample_grid import POSTERS_DIR, render_images, render_videos, sample_cells
from core.spec import parse_job
from tests.support.clips import write_clip


def spec(prompts: list[str]):
    return parse_job({"dataset": {"path": "/unused"}, "trigger_word": "sks",
                      "config": {"model_family": "wan", "model_name": "/unused/wan"},
                      "samples": {"prompts": prompts}})


def test_video_samples_become_players_with_a_poster_and_their_own_prompt(tmp_path: Path):
    samples = tmp_path / "output" / "validation_images"
    for step in (2, 4):
        for index in (0, 1):
            write_clip(samples / f"step_{step}_sample_{index}_0_64x64.mp4", frames=5)
    write_clip(samples / "step_6_sample_0_0_64x64.mp4", frames=5)  # step 6 still rendering its second prompt
    cells, columns = sample_cells(spec(["[trigger] a bar", "a <b>bold</b> bar"]), tmp_path)
    assert columns == 2
    assert [cell.caption for cell in cells] == ["step 2 · sks a bar", "step 2 · a <b>bold</b> bar",
                                               "step 4 · sks a bar", "step 4 · a <b>bold</b> bar",
                                               "step 6 · sks a bar"]
    page = render_videos(cells, columns=columns, job_dir=tmp_path)
    assert page.count("<video controls") == 5 and "grid-template-columns:repeat(2," in page
    assert "<figcaption>step 2 · a &lt;b&gt;bold&lt;/b&gt; bar</figcaption>" in page and "<b>bold" not in page
    posters = sorted((tmp_path / POSTERS_DIR).iterdir())
    assert len(posters) == 5 and all(path.suffix == ".jpg" for path in posters)
    assert all(f'poster="gradio_api/file={quote(str(path))}"' in page for path in posters)
    with Image.open(posters[0]) as first:
        assert first.size == (64, 64)


def test_image_samples_stay_in_the_gallery_and_a_video_without_a_poster_still_plays(tmp_path: Path):
    samples = tmp_path / "output" / "validation_images"
    samples.mkdir(parents=True)
    Image.new("RGB", (64, 64), "red").save(samples / "step_2_sample_0_0_64x64.png")
    cells, _ = sample_cells(spec(["a bar"]), tmp_path)
    assert [cell.is_video for cell in cells] == [False] and render_videos(cells, columns=1, job_dir=tmp_path) == ""
    (samples / "step_4_sample_0_0_64x64.mp4").write_bytes(b"not yet a whole video")
    cells, _ = sample_cells(spec(["a bar"]), tmp_path)
    page = render_videos(cells, columns=1, job_dir=tmp_path)
    assert page.count("<video") == 1 and "poster=" not in page and "step_4_sample_0_0_64x64.mp4" in page


def test_image_samples_form_a_compact_table_a_row_per_step_each_image_with_its_own_prompt(tmp_path: Path):
    samples = tmp_path / "output" / "validation_images"
    samples.mkdir(parents=True)
    for step in (5, 10):
        for index in (0, 1):
            Image.new("RGB", (64, 64), "red").save(samples / f"step_{step}_sample_{index}_0_64x64.png")
    cells, _ = sample_cells(spec(["[trigger] a circle", "a <b>square</b>"]), tmp_path)
    page = render_images(cells)
    rows = page.split("<tr ")[1:]
    assert [row.split(">", 1)[0] for row in rows] == ['data-step="5"', 'data-step="10"']
    assert all(">step 5</th>" in rows[0] and row.count("<img ") == 2 for row in rows)
    assert "<figcaption" in rows[1] and ">sks a circle</figcaption>" in rows[1]
    assert ">a &lt;b&gt;square&lt;/b&gt;</figcaption>" in rows[1] and "<b>square" not in page
    full = f'href="gradio_api/file={quote(str(samples / "step_10_sample_1_0_64x64.png"))}"'
    assert full in rows[1]  # a click opens it at full size
