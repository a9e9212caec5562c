"""Video clips on the Dataset tab, through the page's own API (gradio_client against the app on a loopback port):
an upload of a clip, an image and a broken clip shows the clip by its first frame with its length and frame count,
the broken one with the reason staging skipped it; the clip's caption is edited and saved; "Check dataset" counts the
clips; the Wan presets show the family's frames per sample; Auto-caption and Regenerate caption clips (the tiny
Florence-2, from three frames of each) and keep a caption edited by hand. Also the store's clip poster, without the
app."""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from app.config_tab import PRESET_FIELDS
from app.dataset_store import DatasetStore, make_thumbnail
from core.generation.demo import build_tiny_captioner
from core.settings import Settings
from core.spec import DatasetSpec
from tests.conftest import ROOT
from tests.support.clips import write_clip
from tests.support.ui_port import serve_ui
from tests.test_app_api import wait_for

CONFIG_FIELDS = PRESET_FIELDS  # what a preset sets, in the order /apply_preset returns them


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_model: Path) -> Iterator[str]:
    data_root = tmp_path_factory.mktemp("app-data")
    (data_root / "models").mkdir()
    (data_root / "models" / "tiny-sdxl").symlink_to(tiny_model, target_is_directory=True)
    settings = Settings.from_env({**os.environ, "DATA_DIR": str(data_root)})
    env = {key: value for key, value in os.environ.items() if key not in ("UI_PASSWORD", "UI_AUTH")}
    ui, url = serve_ui(settings=settings, env=env)
    yield url
    ui.registry.shutdown()
    ui.blocks.close()


@pytest.fixture
def client(app: str, tmp_path: Path) -> Client:
    return Client(app, verbose=False, download_files=str(tmp_path / "downloads"))


def upload_files(folder: Path) -> list[Path]:
    """A 64x64 clip of 9 frames at 8 fps with its caption, an image with its caption, and a zip named .mp4."""
    folder.mkdir(parents=True)
    clip = write_clip(folder / "walk.mp4", frames=9, size=64, fps=8, caption="a bar walking")
    Image.new("RGB", (96, 96), (200, 40, 40)).save(folder / "red.png")
    (folder / "red.txt").write_text("a red square")
    with zipfile.ZipFile(folder / "broken.mp4", "w") as bundle:
        bundle.writestr("a.png", b"not really")
    return [clip, clip.with_suffix(".txt"), folder / "red.png", folder / "red.txt", folder / "broken.mp4"]


def test_a_clip_upload_shows_its_frames_and_length_takes_its_caption_and_lists_the_broken_one(client: Client,
                                                                                              tmp_path: Path):
    files = upload_files(tmp_path / "upload")
    gallery, page, info, source, status = client.predict([handle_file(f) for f in files], api_name="/upload_dataset")
    captions = [item["caption"] for item in gallery]
    assert captions == ["a red square", "walk.mp4 · 1.1 s · 9 frames — a bar walking",
                        "broken.mp4 · skipped: not a video (a zip archive under a video file name)"]
    assert page == 1 and "1 images · 1 clips · 1 clips skipped" in info
    assert "Loaded 1 images and 1 clips" in status and "1 not a video" in status
    # The clip's gallery picture is its first frame: a still, the clip's size, black with the white bar at the left.
    with Image.open(gallery[1]["image"]) as poster:
        assert poster.size == (64, 64) and poster.getpixel((3, 32))[0] > 200 and poster.getpixel((40, 32))[0] < 40
    folder = Path(json.loads(source)["path"])
    assert (folder / "walk.mp4").is_file()

    gallery, *_, status = client.predict("walk.mp4", "  a bar walking right, edited ", 1, api_name="/save_caption")
    assert (folder / "walk.txt").read_text() == "a bar walking right, edited\n"
    assert gallery[1]["caption"] == "walk.mp4 · 1.1 s · 9 frames — a bar walking right, edited"
    assert "walk.mp4" in status
    gallery, *_ = client.predict(1, api_name="/gallery_page")  # as a reload shows it
    assert gallery[1]["caption"].endswith("a bar walking right, edited")

    # The Check button (the tiny SDXL preset: an image family, which refuses clips) counts and lists them.
    _, *config = client.predict("Tiny demo (CPU)", api_name="/apply_preset")
    values = {**dict(zip(CONFIG_FIELDS, config, strict=True)), "dataset": source, "trigger_word": "",
              "repo_id": "", "private": True}
    report = client.predict(**values, api_name="/check_dataset")
    assert "Clips: **1** usable of 1, 9 frames, 1.1 s in all" in report
    assert "skipped broken.mp4: not a video (a zip archive under a video file name)" in report
    assert "walk.mp4" in report and "will not train as it is" in report


def test_the_wan_presets_show_the_familys_frames(client: Client):
    for preset, hub_id in (("Wan 2.1 T2V 1.3B (480p)", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"),
                           ("Wan 2.1 T2V 14B (480p)", "Wan-AI/Wan2.1-T2V-14B-Diffusers")):
        note, *config = client.predict(preset, api_name="/apply_preset")
        values: dict[str, Any] = dict(zip(CONFIG_FIELDS, config, strict=True))
        assert values["base_model"] == hub_id and values["resolution"] == 480
        assert "81 frames per clip sample" in note and "num_frames" in note


def test_a_reloaded_store_keeps_the_clips_facts_and_the_skipped_ones(tmp_path: Path):
    source = tmp_path / "source"
    upload_files(source)
    settings = Settings.from_env({**os.environ, "DATA_DIR": str(tmp_path / "data")})
    manifest = DatasetStore(settings=settings).load(DatasetSpec(path=str(source)))
    assert [clip.path.name for clip in manifest.clips] == ["walk.mp4"] and manifest.clips[0].frames == 9
    again = DatasetStore(settings=settings)  # the app restarted
    assert [path.name for path in again.media()] == ["red.png", "walk.mp4"]
    assert again.clip_facts()["walk.mp4"]["frames"] == 9
    assert [item["reason"] for item in again.skipped_clips()] == ["not a video"]
    poster = make_thumbnail(again.images_dir / "walk.mp4", folder=again.thumbs_dir)
    assert poster.suffix == ".jpg" and poster.parent == again.thumbs_dir


@pytest.fixture(scope="module")
def tiny_captioner(settings: Settings) -> Path:
    return build_tiny_captioner(ROOT / ".cache" / "tiny-captioner", settings=settings)


def test_auto_caption_captions_clips_keeps_an_edited_one_and_regenerate_replaces_it(client: Client, tmp_path: Path,
                                                                                    tiny_captioner: Path):
    folder = tmp_path / "upload"
    walk = write_clip(folder / "walk.mp4", frames=9)  # no caption: it holds its file name
    jump = write_clip(folder / "jump.mp4", frames=9, caption="a bar jumping")
    Image.new("RGB", (96, 96), (200, 40, 40)).save(folder / "red.png")
    client.predict([handle_file(f) for f in (walk, jump, jump.with_suffix(".txt"), folder / "red.png")],
                   api_name="/upload_dataset")
    gallery, *_ = client.predict("jump.mp4", "my own words", 1, api_name="/save_caption")
    assert [item["caption"].split(" — ")[-1] for item in gallery] == ["my own words", "red", "walk"]

    def finished() -> list | None:
        status, gallery, *_ = client.predict(1, "jump.mp4", api_name="/caption_status")
        return [status, gallery] if status.startswith(("Captioned", "Auto-caption failed")) else None

    status, _ = client.predict(str(tiny_captioner), "all", "short", "a clip of", api_name="/auto_caption")
    assert status.startswith("Auto-caption: 1 image and 1 clip with")
    status, gallery = wait_for(finished, timeout_s=180, what="auto-caption to finish")
    assert status == f"Captioned 1 image and 1 clip with {tiny_captioner}."
    captions = {item["caption"].split(" · ")[0].split(" — ")[0]: item["caption"] for item in gallery}
    assert captions["jump.mp4"].endswith(" — my own words")  # edited by hand: kept, even in mode "all"
    assert captions["walk.mp4"].startswith("walk.mp4 · 1.1 s · 9 frames — a clip of ")
    walk_caption = captions["walk.mp4"].split(" — ", 1)[1]
    assert len(walk_caption) > len("a clip of ") and walk_caption != "a clip of walk"
    with pytest.raises(AppError, match="no image or clip to caption"):
        client.predict(str(tiny_captioner), "missing", "short", "", api_name="/auto_caption")

    # Regenerate the edited clip: the user asked for this one.
    status, _ = client.predict("jump.mp4", str(tiny_captioner), "short", "", api_name="/regenerate_caption")
    assert status == "Regenerating the caption of jump.mp4…"
    status, gallery = wait_for(finished, timeout_s=180, what="the regenerated caption")
    assert status == f"Captioned 1 clip with {tiny_captioner}."
    jump_caption = next(item["caption"] for item in gallery if item["caption"].startswith("jump.mp4"))
    assert jump_caption.split(" — ", 1)[1] not in ("my own words", "")
