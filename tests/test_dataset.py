"""Dataset staging from every source: local folders and archives, http(s), s3, presigned URLs, inline lists.

Images are real files made with Pillow; remote sources are real local servers (tests/support). The HF dataset
source is in tests/test_hf_dataset.py (it needs a process with the Hub client online).
"""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from core.dataset.stage import (
    IMAGES_DIR,
    Manifest,
    StagingLimits,
    apply_trigger,
    caption_options,
    clean_caption,
    stage_dataset,
)
from core.errors import AddressRefused, DatasetError, EmptyDataset, UnsafeArchive
from core.events import DownloadProgress, LogLine
from core.settings import Settings
from core.spec.job import parse_job
from tests.support.http_server import serve_files
from tests.support.s3_server import moto_s3, with_s3


def image_bytes(size=(48, 32), color=(10, 120, 200), kind="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=kind)
    return buffer.getvalue()


def write(folder: Path, files: dict[str, bytes | str]) -> Path:
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
    return folder


CONFIG = {"model_family": "sdxl", "model_name": "some/sdxl-model"}


def job(dataset: dict, **extra) -> dict:
    return {"dataset": dataset, "config": dict(CONFIG), **extra}


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def captions(manifest: Manifest) -> dict[str, str]:
    return {entry.path.name: entry.caption for entry in manifest.images}


@pytest.fixture
def local_settings(tmp_path: Path) -> Settings:
    return Settings.from_env({"DATA_DIR": str(tmp_path / "data"), "ALLOW_PRIVATE_URLS": "1"})


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "job" / "dataset"


def stage(spec_json: dict, dest: Path, settings: Settings, **kwargs) -> Manifest:
    """Stage a job's dataset as the pipeline does: its source, and captions as its dataloader and trigger word say."""
    spec = parse_job(spec_json)
    return stage_dataset(spec.dataset, dest, captions=caption_options(spec), settings=settings, **kwargs)


# -- local folders -------------------------------------------------------------------------------------------------


def test_folder_pairs_captions_applies_trigger_and_falls_back(tmp_path, dest, local_settings):
    source = write(tmp_path / "src", {
        "cat.png": image_bytes(), "cat.txt": "  a cat,  sitting ,a cat\n",
        "dog.jpg": image_bytes(kind="JPEG"), "dog.txt": "sks dog on grass",
        "bird.webp": image_bytes(kind="WEBP"),
    })
    events: list = []
    manifest = stage(job({"path": str(source)}, trigger_word="sks"), dest, local_settings, on_event=events.append)
    assert manifest.root == dest / IMAGES_DIR
    assert captions(manifest) == {
        "bird.webp": "sks", "cat.png": "sks, a cat, sitting", "dog.jpg": "sks dog on grass",
    }
    assert {e.path.name: e.caption_source for e in manifest.images} == {
        "bird.webp": "trigger_word", "cat.png": "file", "dog.jpg": "file",
    }
    assert {(e.width, e.height) for e in manifest.images} == {(48, 32)}
    for entry in manifest.images:
        assert entry.path.with_suffix(".txt").read_text() == entry.caption + "\n"
    assert tree(manifest.root) == {"bird.webp", "bird.txt", "cat.png", "cat.txt", "dog.jpg", "dog.txt"}
    lines = [e.message for e in events if isinstance(e, LogLine)]
    assert lines[0].startswith("staging the dataset from path ") and "3 images staged" in lines[-1]
    # The user's folder is read, never changed.
    assert tree(source) == {"cat.png", "cat.txt", "dog.jpg", "dog.txt", "bird.webp"}


def test_trigger_suffix_no_clean_and_file_name_fallback(tmp_path, dest, local_settings):
    source = write(tmp_path / "src", {
        "red_barn-photo.png": image_bytes(), "a.png": image_bytes(), "a.txt": "tags,  tags , more",
    })
    spec = job({"path": str(source)}, trigger_word="zxq",
               dataloader={"trigger_placement": "suffix", "clean_captions": False})
    manifest = stage(spec, dest, local_settings)
    assert captions(manifest) == {"a.png": "tags,  tags , more, zxq", "red_barn-photo.png": "zxq"}
    plain = stage(job({"path": str(source)}), tmp_path / "other", local_settings)
    assert captions(plain) == {"a.png": "tags, more", "red_barn-photo.png": "red barn photo"}
    assert {e.caption_source for e in plain.images} == {"file", "file_name"}


def test_caption_extension_and_native_dataloader_list(tmp_path, dest, local_settings):
    source = write(tmp_path / "src", {
        "a.png": image_bytes(), "a.caption": "from caption file", "a.txt": "from txt file",
    })
    manifest = stage(job({"path": str(source)}, dataloader={"caption_extension": "caption"}), dest, local_settings)
    assert captions(manifest) == {"a.png": "from caption file"}
    assert ("a.txt", "not an image") in {(s.name, s.reason) for s in manifest.skipped}
    native = [{"id": "mine", "type": "local"}]
    manifest = stage(job({"path": str(source)}, dataloader=native), tmp_path / "n", local_settings)
    assert captions(manifest) == {"a.png": "from txt file"}


def test_broken_mislabelled_and_odd_files_are_skipped_or_converted(tmp_path, dest, local_settings):
    good = image_bytes((40, 40))
    noise = io.BytesIO()  # a JPEG is checked at 1/8 scale: a cut one still fails
    Image.frombytes("RGB", (256, 256), bytes(range(256)) * 768).save(noise, format="JPEG")
    photo = noise.getvalue()
    source = write(tmp_path / "src", {
        "ok.png": good,
        "truncated.png": good[: len(good) // 2],
        "truncated_photo.jpg": photo[: len(photo) * 2 // 3],
        "text.jpg": "this is not an image",
        "jpeg_named.png": image_bytes(kind="JPEG"),
        "bitmap.bmp": image_bytes(kind="BMP"),
        "readme.md": "hello",
        ".DS_Store": "x",
        "orphan.txt": "no image for me",
        "__MACOSX/._ok.png": "x",
    })
    manifest = stage(job({"path": str(source)}), dest, local_settings)
    assert sorted(p.name for p in manifest.root.iterdir() if p.suffix != ".txt") == [
        "bitmap.png", "jpeg_named.jpg", "ok.png",
    ]
    with Image.open(manifest.root / "bitmap.png") as converted:
        assert converted.format == "PNG" and converted.size == (48, 32)
    reasons = {s.name: s.reason for s in manifest.skipped}
    assert reasons == {
        "truncated.png": "corrupt image", "truncated_photo.jpg": "corrupt image", "text.jpg": "not a decodable image",
        "readme.md": "not an image", ".DS_Store": "hidden file", "orphan.txt": "caption without an image",
        "__MACOSX/": "macOS metadata",
    }
    assert manifest.skipped_by_reason()["corrupt image"] == 2


def test_nested_folders_get_unique_flat_names(tmp_path, dest, local_settings):
    source = write(tmp_path / "src", {
        "set/a/x.png": image_bytes(), "set/a/x.txt": "first", "set/b/x.png": image_bytes(), "set/b/x.txt": "second",
        "set/a__x.png": image_bytes(),
    })
    manifest = stage(job({"path": str(source)}), dest, local_settings)
    # Files at the top come first: the top-level a__x.png keeps its name, the nested a/x.png gets a suffix.
    assert captions(manifest) == {"a__x.png": "a x", "a__x_2.png": "first", "b__x.png": "second"}
    # Every image has exactly the caption file SimpleTuner's textfile strategy reads.
    stems = [p.stem for p in manifest.root.iterdir()]
    assert all(stems.count(stem) == 2 for stem in stems)


def test_no_usable_image_is_an_error_that_says_why(tmp_path, dest, local_settings):
    source = write(tmp_path / "src", {"a.txt": "x", "b.pdf": "x", "c.png": "not png", "d.jpg": "nope"})
    with pytest.raises(EmptyDataset) as caught:
        stage(job({"path": str(source)}), dest, local_settings)
    message = str(caught.value)
    assert "no usable image" in message
    assert "2 not a decodable image" in message and "1 not an image" in message
    assert caught.value.field == "dataset" and caught.value.code == "no_usable_images"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EmptyDataset, match="no images found"):
        stage(job({"path": str(empty)}), tmp_path / "e", local_settings)


def test_a_rerun_starts_clean(tmp_path, dest, local_settings):
    source = write(tmp_path / "src", {"a.png": image_bytes(), "b.png": image_bytes()})
    stage(job({"path": str(source)}), dest, local_settings)
    (source / "b.png").unlink()
    manifest = stage(job({"path": str(source)}), dest, local_settings)
    assert tree(manifest.root) == {"a.png", "a.txt"}


# -- local archives -------------------------------------------------------------------------------------------------


def test_zip_with_one_top_folder_is_flattened_and_leaves_only_images(tmp_path, dest, local_settings):
    archive = tmp_path / "pets.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("pets/cat.png", image_bytes())
        bundle.writestr("pets/cat.txt", "a cat")
        bundle.writestr("pets/dog.png", image_bytes())
        bundle.writestr("pets/dog.jpg", image_bytes(kind="JPEG"))  # both dogs take dog.txt
        bundle.writestr("pets/dog.txt", "a dog")
        bundle.writestr("pets/.hidden.png", image_bytes())
        bundle.writestr("__MACOSX/pets/._cat.png", "x")
    manifest = stage(job({"path": str(archive)}), dest, local_settings)
    assert captions(manifest) == {"cat.png": "a cat", "dog.jpg": "a dog", "dog_2.png": "a dog"}
    assert manifest.source == f"path {archive}"
    assert {s.reason for s in manifest.skipped} == {"hidden file", "macOS metadata"}
    assert tree(dest) == {"images", "images/cat.png", "images/cat.txt", "images/dog.jpg", "images/dog.txt",
                          "images/dog_2.png", "images/dog_2.txt"}  # staging folders are cleaned up
    assert archive.exists()


def test_a_tar_gz_archive_and_a_single_image_file(tmp_path, dest, local_settings):
    archive = tmp_path / "set.tar.gz"
    with tarfile.open(archive, "w:gz") as bundle:
        for name, data in (("a.png", image_bytes()), ("a.txt", b"caption a")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
    assert captions(stage(job({"path": str(archive)}), dest, local_settings)) == {"a.png": "caption a"}
    single = write(tmp_path / "one", {"solo.jpg": image_bytes(kind="JPEG")}) / "solo.jpg"
    manifest = stage(job({"path": str(single)}, trigger_word="sks"), tmp_path / "s", local_settings)
    assert captions(manifest) == {"solo.jpg": "sks"}


def test_hostile_archives_fail_and_write_nothing_outside_dest(tmp_path, dest, local_settings):
    before = tree(tmp_path)
    slip = tmp_path / "slip.zip"
    with zipfile.ZipFile(slip, "w") as bundle:
        bundle.writestr("ok.png", image_bytes())
        bundle.writestr("../../../escaped.png", image_bytes())
    with pytest.raises(UnsafeArchive):
        stage(job({"path": str(slip)}), dest, local_settings)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("zeros.png", bytes(30 * 1024 * 1024))
    with pytest.raises(UnsafeArchive, match="ratio"):
        stage(job({"path": str(bomb)}), dest, local_settings)
    only_text = tmp_path / "text.zip"
    with zipfile.ZipFile(only_text, "w") as bundle:
        bundle.writestr("a.txt", "x")
        bundle.writestr("b.csv", "x")
    with pytest.raises(EmptyDataset, match="1 not an image"):
        stage(job({"path": str(only_text)}), dest, local_settings)
    empty = tmp_path / "empty.zip"
    zipfile.ZipFile(empty, "w").close()
    with pytest.raises(EmptyDataset, match="no images found"):
        stage(job({"path": str(empty)}), dest, local_settings)
    created = tree(tmp_path) - before
    assert all(p.startswith("job") or p in {"slip.zip", "bomb.zip", "text.zip", "empty.zip"} for p in created)
    assert not list(tmp_path.rglob("escaped.png"))
    assert not (dest / "_extract").exists()


# -- the worker's confinement of local paths -----------------------------------------------------------------------


def test_worker_paths_only_under_dataset_root(tmp_path, dest):
    root = write(tmp_path / "root", {"ds/a.png": image_bytes()})
    outside = write(tmp_path / "outside", {"b.png": image_bytes()})
    (root / "ds" / "escape.png").symlink_to(outside / "b.png")
    settings = Settings.from_env({"DATASET_ROOT": str(root)})
    manifest = stage(job({"path": "ds"}), dest, settings, allow_local_paths=False)
    assert captions(manifest) == {"a.png": "a"}
    assert ("escape.png", "symlink") in {(s.name, s.reason) for s in manifest.skipped}
    for path in (str(outside), "../outside", str(root / ".." / "outside")):
        with pytest.raises(DatasetError, match="outside the allowed dataset root") as caught:
            stage(job({"path": path}), dest, settings, allow_local_paths=False)
        assert caught.value.field == "dataset.path"
    with pytest.raises(DatasetError, match="DATASET_ROOT") as caught:
        stage(job({"path": str(root / "ds")}), dest, Settings.from_env({}), allow_local_paths=False)
    assert caught.value.field == "dataset.path"
    with pytest.raises(DatasetError, match="does not exist"):
        stage(job({"path": "missing"}), dest, settings, allow_local_paths=False)


# -- remote sources ------------------------------------------------------------------------------------------------


def test_http_zip_url_with_progress_and_resume(tmp_path, dest, local_settings):
    served = tmp_path / "served"
    served.mkdir()
    # Noise does not compress: a 3.6 MB body, so the dropped first response has delivered whole chunks.
    noise = Image.frombytes("RGB", (1200, 1000), os.urandom(1200 * 1000 * 3))
    with zipfile.ZipFile(served / "data.zip", "w") as bundle:
        for i in range(3):
            buffer = io.BytesIO()
            noise.crop((0, 0, 1200 - i, 1000)).save(buffer, format="PNG")
            bundle.writestr(f"data/{i}.png", buffer.getvalue())
            bundle.writestr(f"data/{i}.txt", f"picture {i}")
    events: list = []
    with serve_files(served) as server:
        server.drop_halfway["data.zip"] = 1
        url = server.url("data.zip") + "?X-Amz-Signature=secret"
        manifest = stage({"dataset_url": url, "config": CONFIG}, dest, local_settings, on_event=events.append)
        ranges = [r for _, name, r in server.requests if name == "data.zip"]
    assert captions(manifest) == {"0.png": "picture 0", "1.png": "picture 1", "2.png": "picture 2"}
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")
    progress = [e for e in events if isinstance(e, DownloadProgress)]
    assert progress[-1].bytes_done == progress[-1].bytes_total == (served / "data.zip").stat().st_size
    assert all("secret" not in str(e.to_dict()) for e in events)
    assert "secret" not in manifest.source
    assert tree(dest) == {"images"} | {f"images/{p.name}" for p in manifest.root.iterdir()}


def test_http_single_image_and_inline_file_list(tmp_path, dest, local_settings):
    served = write(tmp_path / "served", {
        "one.jpg": image_bytes(kind="JPEG"), "two.png": image_bytes(), "three.webp": image_bytes(kind="WEBP"),
    })
    with serve_files(served) as server:
        manifest = stage(job({"url": server.url("one.jpg")}, trigger_word="sks"), dest, local_settings)
        assert captions(manifest) == {"one.jpg": "sks"}
        files = [
            {"url": server.url("two.png"), "caption": "a blue  square"},
            {"url": server.url("three.webp"), "caption": ""},
            {"url": server.url("missing.png"), "caption": "gone"},
        ]
        inline = stage(job({"files": files}, trigger_word="sks"), tmp_path / "inline", local_settings)
    assert captions(inline) == {"00000_two.png": "sks, a blue square", "00001_three.webp": "sks"}
    assert {e.caption_source for e in inline.images} == {"inline", "trigger_word"}
    assert [(s.reason, "404" in s.detail) for s in inline.skipped] == [("download failed", True)]


def test_url_policy_refuses_loopback_metadata_and_file_urls(tmp_path, dest):
    strict = Settings.from_env({"DATA_DIR": str(tmp_path / "data")})
    served = write(tmp_path / "served", {"a.png": image_bytes()})
    with serve_files(served) as server:
        with pytest.raises(AddressRefused, match="loopback") as caught:
            stage(job({"url": server.url("a.png")}), dest, strict)
        assert caught.value.field == "dataset.url"
        assert server.requests == []  # refused before any connection
        with pytest.raises(AddressRefused, match="loopback") as caught:
            stage(job({"files": [{"url": server.url("a.png"), "caption": "x"}]}), dest, strict)
        assert caught.value.field == "dataset.files.0.url"
    for url, why in (("file:///etc/passwd", "'file://' URLs are not allowed"),
                     ("http://169.254.169.254/latest/meta-data/", "metadata"),
                     ("gopher://example.com/x", "not allowed")):
        with pytest.raises(AddressRefused, match=why):
            stage(job({"url": url}), dest, strict)


def test_a_404_url_is_a_clear_download_error(tmp_path, dest, local_settings):
    with serve_files(write(tmp_path / "served", {})) as server:
        with pytest.raises(DatasetError, match=r"missing\.zip: HTTP 404 not found") as caught:
            stage(job({"url": server.url("missing.zip")}), dest, local_settings)
    assert caught.value.code == "download_failed" and caught.value.field == "dataset.url"


def test_download_size_limit(tmp_path, dest, local_settings):
    served = write(tmp_path / "served", {"big.png": os.urandom(200_000)})
    with serve_files(served) as server:
        with pytest.raises(DatasetError, match="download limit"):
            stage(job({"url": server.url("big.png")}), dest, local_settings,
                  limits=StagingLimits(max_download_bytes=100_000))
    assert not list(dest.rglob("big.png*"))


def test_s3_and_presigned_https_sources(tmp_path, dest, local_settings):
    archive = tmp_path / "set.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("a.png", image_bytes())
        bundle.writestr("a.txt", "from s3")
    with moto_s3() as s3:
        local_settings = with_s3(local_settings, s3.env)  # the endpoint's S3 variables, read into its Settings
        client = s3.client()
        client.create_bucket(Bucket="datasets")
        client.upload_file(str(archive), "datasets", "sets/set.zip")
        events: list = []
        manifest = stage(job({"url": "s3://datasets/sets/set.zip"}), dest, local_settings, on_event=events.append)
        assert captions(manifest) == {"a.png": "from s3"}
        assert manifest.source == "url s3://datasets/sets/set.zip"
        done = [e for e in events if isinstance(e, DownloadProgress)][-1]
        assert done.bytes_done == done.bytes_total == archive.stat().st_size
        presigned = client.generate_presigned_url(
            "get_object", Params={"Bucket": "datasets", "Key": "sets/set.zip"}, ExpiresIn=300
        )
        assert "Signature" in presigned
        events = []
        manifest = stage({"dataset_url": presigned, "config": CONFIG}, tmp_path / "p", local_settings,
                         on_event=events.append)
        assert captions(manifest) == {"a.png": "from s3"}
        assert "Signature" not in manifest.source and all("Signature" not in str(e.to_dict()) for e in events)
        with pytest.raises(DatasetError, match=r"s3://datasets/nope\.zip: not found"):
            stage(job({"url": "s3://datasets/nope.zip"}), tmp_path / "x", local_settings)


def test_clean_caption_and_apply_trigger():
    assert clean_caption("  a   b,\tc , a   b,,  ") == "a b, c"
    assert clean_caption("one\nline  only") == "one line only"
    assert apply_trigger("photo of sks dog", trigger="sks") == "photo of sks dog"
    assert apply_trigger("photo of SKS dog", trigger="sks") == "photo of SKS dog"
    assert apply_trigger("asks nothing", trigger="sks") == "sks, asks nothing"
    assert apply_trigger("a dog", trigger="sks", placement="suffix") == "a dog, sks"
    assert apply_trigger("", trigger="sks") == "sks"
    assert apply_trigger("a dog", trigger=None) == "a dog"
