"""The UI's curated dataset (app/dataset_store.py): pages, cached thumbnails, caption edits on disk, loads that
fail without touching the current dataset, URL credentials never recorded, the upload limit."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from app.dataset_store import THUMB_SIZE, DatasetStore, make_thumbnail
from core.errors import DatasetError
from core.settings import Settings
from core.spec.job import DatasetSpec
from tests.support.http_server import serve_files


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


# -- a failed load keeps the last good dataset ----------------------------------------------------------------------


def snapshot(store: DatasetStore) -> dict[str, bytes]:
    """Every file of the dataset folder but the thumbnails (made in the background), by relative path."""
    return {str(p.relative_to(store.root)): p.read_bytes() for p in sorted(store.root.rglob("*"))
            if p.is_file() and store.thumbs_dir not in p.parents}


def zip_slip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as out:
        out.writestr("ok.png", (write_images(path.parent / "slip-src", 1) / "p00.png").read_bytes())
        out.writestr("../escaped.txt", "outside")
    return path


@pytest.fixture
def private_store(tmp_path: Path) -> DatasetStore:
    """A store that may fetch from the tests' loopback servers, as on a LAN with ALLOW_PRIVATE_URLS=1."""
    return DatasetStore(settings=Settings.from_env({"DATA_DIR": str(tmp_path / "data"), "ALLOW_PRIVATE_URLS": "1"}))


def test_a_failed_load_leaves_the_dataset_and_its_edited_captions_as_they_were(private_store: DatasetStore,
                                                                              tmp_path: Path):
    store = private_store
    store.load(DatasetSpec(path=str(write_images(tmp_path / "src", 3))))
    store.save_caption("p01.png", "edited by hand")
    before = snapshot(store)
    with serve_files(tmp_path) as server:
        (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 not really a zip")
        failures = [
            (DatasetSpec(url="http://169.254.169.254/latest/x.zip"), "dataset.url", "cloud metadata"),
            (DatasetSpec(url=server.url("missing.zip")), "dataset.url", "HTTP 404"),
            (DatasetSpec(url=server.url("broken.zip")), "dataset", "not a readable zip"),
            (DatasetSpec(path=str(zip_slip(tmp_path / "slip.zip"))), "dataset", "outside the archive"),
            (DatasetSpec(path=str(tmp_path / "nowhere")), "dataset.path", "does not exist"),
        ]
        for dataset, field, message in failures:
            with pytest.raises(DatasetError, match=message) as raised:
                store.load(dataset)
            assert raised.value.field == field
            assert snapshot(store) == before, f"{dataset} changed the dataset"
    assert store.caption("p01.png") == "edited by hand" and len(store.images()) == 3
    assert not (tmp_path / "escaped.txt").exists() and not (store.settings.data_root / "escaped.txt").exists()
    assert [p.name for p in store.settings.data_root.iterdir()] == ["dataset"]  # no staging folder left behind


def test_a_good_load_replaces_the_dataset_whole(store: DatasetStore, tmp_path: Path):
    store.load(DatasetSpec(path=str(write_images(tmp_path / "first", 3))))
    store.page(1)  # thumbnails of the first dataset
    manifest = store.load(DatasetSpec(path=str(write_images(tmp_path / "second", 1))))
    assert [p.name for p in store.images()] == ["p00.png"] and not list(store.thumbs_dir.glob("p02.*"))
    assert [entry.path for entry in manifest.images] == [store.images_dir / "p00.png"]
    assert manifest.images[0].path.is_file() and store.source() == {"path": str(store.images_dir)}


def test_a_load_cut_short_by_a_restart_is_cleaned_up(tmp_path: Path):
    data = tmp_path / "data"
    (data / "dataset.staging-0123abcd/images").mkdir(parents=True)
    (data / "dataset.retired-0123abcd").mkdir()
    (data / "dataset.notes").mkdir()
    DatasetStore(settings=Settings.from_env({"DATA_DIR": str(data)}))
    assert sorted(p.name for p in data.iterdir()) == ["dataset.notes"]


# -- a URL's credentials are never recorded nor quoted --------------------------------------------------------------

SIGNATURE = "d3adb33fSignatureValue0123456789"
SESSION_TOKEN = "SessionTokenValue0123456789abcdef"


def test_a_signed_url_is_downloaded_but_never_recorded(private_store: DatasetStore, tmp_path: Path):
    files = write_images(tmp_path / "served" / "src", 2)
    with zipfile.ZipFile(tmp_path / "served" / "data.zip", "w") as out:
        for file in sorted(files.iterdir()):
            out.write(file, file.name)
    with serve_files(tmp_path / "served") as server:
        url = server.url(f"data.zip?X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20240101&X-Amz-Signature={SIGNATURE}"
                         f"&token={SESSION_TOKEN}").replace("://", "://alice:pa55w0rdSecret@")
        manifest = private_store.load(DatasetSpec(url=url))
        assert len(manifest.images) == 2 and server.requests[-1][1] == "data.zip"
        for secret_url in (url.replace("data.zip", "gone.zip"), url.replace(f":{server.server_address[1]}", ":1")):
            with pytest.raises(DatasetError) as raised:
                private_store.load(DatasetSpec(url=secret_url))
            for secret in (SIGNATURE, SESSION_TOKEN, "AKIAIOSFODNN7EXAMPLE", "pa55w0rdSecret"):
                assert secret not in str(raised.value)
    assert private_store.source() == {"path": str(private_store.images_dir)}  # the job trains from the staged copy
    assert "127.0.0.1" not in json.dumps(private_store.source())
    recorded = b"".join(p.read_bytes() for p in private_store.settings.data_root.rglob("*") if p.is_file()
                        and p.suffix in (".json", ".txt"))
    assert SIGNATURE.encode() not in recorded and SESSION_TOKEN.encode() not in recorded


def test_a_plain_url_stays_the_jobs_source(private_store: DatasetStore, tmp_path: Path):
    write_images(tmp_path / "served", 1)
    with serve_files(tmp_path / "served") as server:
        private_store.load(DatasetSpec(url=server.url("p00.png?dl=1")))
        assert private_store.source() == {"url": server.url("p00.png?dl=1")}


# -- the upload limit -------------------------------------------------------------------------------------------------


def test_an_upload_over_the_limit_is_refused_naming_the_field(tmp_path: Path):
    store = DatasetStore(settings=Settings.from_env({"DATA_DIR": str(tmp_path / "data")}), max_upload_bytes=4096)
    files = [p for p in sorted(write_images(tmp_path / "src", 2).iterdir())]
    with pytest.raises(DatasetError, match=r"over the 4\.1 kB limit \(UI_MAX_UPLOAD_MB\)") as raised:
        store.load_uploads(files, run_id="r1")
    assert raised.value.field == "upload" and store.images() == []
    with pytest.raises(DatasetError, match="outside the archive") as raised:
        DatasetStore(settings=store.settings).load_uploads([zip_slip(tmp_path / "slip.zip")], run_id="r2")
    assert raised.value.field == "upload"


def test_the_trigger_word_outlives_a_reload_and_another_dataset(tmp_path: Path):
    settings = Settings(trainer_venv=tmp_path / "venv", data_root=tmp_path / "data")
    assert DatasetStore(settings=settings).trigger_word() == ""
    DatasetStore(settings=settings).set_trigger_word(" ohwx ")
    assert DatasetStore(settings=settings).trigger_word() == "ohwx"  # a reloaded page (or restarted app) gets it
