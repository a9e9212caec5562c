"""The UI's curated dataset (app/dataset_store.py): pages, cached thumbnails, caption edits on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from app.dataset_store import THUMB_SIZE, DatasetStore, make_thumbnail
from core.errors import DatasetError
from core.settings import Settings
from core.spec import DatasetSpec


@pytest.fixture
def store(tmp_path: Path) -> DatasetStore:
    return DatasetStore(settings=Settings.from_env({"DATA_DIR": str(tmp_path / "data")}))


def write_images(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True)
    for index in range(count):
        Image.new("RGBA" if index % 2 else "RGB", (640, 480), (index, 90, 160)).save(folder / f"p{index:02d}.png")
        (folder / f"p{index:02d}.txt").write_text(f"caption {index}")
    return folder


def test_pages_hold_thumbnails_and_captions_in_name_order(store: DatasetStore, tmp_path: Path):
    store.load(DatasetSpec(path=str(write_images(tmp_path / "src", 30))))
    first, second = store.page(1), store.page(2)
    assert (first.pages, first.total, len(first.items), len(second.items)) == (2, 30, 24, 6)
    assert [caption for _, caption, _ in second.items] == [f"caption {n}" for n in range(24, 30)]
    thumb = Path(first.items[1][0])
    assert thumb.parent == store.thumbs_dir
    with Image.open(thumb) as image:
        assert max(image.size) == THUMB_SIZE and image.mode == "RGB"  # transparency flattened for JPEG
    assert store.page(99).number == 2 and store.page(0).number == 1


def test_a_thumbnail_is_made_once_and_remade_when_its_image_changes(store: DatasetStore, tmp_path: Path):
    image = write_images(tmp_path / "one", 1) / "p00.png"
    folder = tmp_path / "thumbs"
    thumb = make_thumbnail(image, folder=folder)
    made = thumb.stat().st_mtime_ns
    assert make_thumbnail(image, folder=folder) == thumb and thumb.stat().st_mtime_ns == made
    Image.new("RGB", (300, 900), "red").save(image)
    changed = make_thumbnail(image, folder=folder)
    assert changed != thumb
    with Image.open(changed) as small:
        assert small.size == (85, 256)


def test_a_caption_edit_is_written_and_a_url_source_becomes_the_folder(store: DatasetStore, tmp_path: Path):
    store.load(DatasetSpec(path=str(write_images(tmp_path / "src", 2))))
    (store.root / "source.json").write_text(json.dumps({"url": "https://example.com/d.zip"}))  # as a URL load sets
    store.save_caption("p01.png", "a new caption\n")
    assert (store.images_dir / "p01.txt").read_text() == "a new caption\n"
    assert store.source() == {"path": str(store.images_dir)}


@pytest.mark.parametrize("name", ["../source.json", "p01.txt", "missing.png", "/etc/passwd", ""])
def test_only_images_of_the_dataset_can_be_named(store: DatasetStore, tmp_path: Path, name: str):
    store.load(DatasetSpec(path=str(write_images(tmp_path / "src", 2))))
    with pytest.raises(DatasetError, match="not an image of the current dataset"):
        store.save_caption(name, "x")
