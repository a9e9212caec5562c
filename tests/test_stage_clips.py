"""Staging a dataset with video clips: clips beside images, from a folder and from an archive, each staged into the
clips folder with its caption; files that cannot train skipped with a reason each."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from core.dataset import CLIPS_DIR, CaptionOptions, StagingLimits, stage_dataset
from core.errors import EmptyDataset
from core.settings import Settings
from core.spec import ClipLimits, DatasetSpec
from tests.support.clips import write_clip, write_hostile_clips
from tests.support.http_server import serve_files
from tests.support.s3_server import moto_s3, with_s3


def mixed_folder(folder: Path) -> Path:
    write_clip(folder / "walk.mp4", frames=9, caption="a bar walking")
    write_clip(folder / "sub" / "run.webm", frames=17, codec="libvpx-vp9", caption="a bar running")
    Image.new("RGB", (64, 64), (200, 10, 10)).save(folder / "still.png")
    (folder / "still.txt").write_text("a red square")
    return folder


def test_clips_and_images_stage_side_by_side(tmp_path: Path, settings: Settings):
    manifest = stage_dataset(DatasetSpec(path=str(mixed_folder(tmp_path / "src"))), tmp_path / "job",
                             settings=settings, captions=CaptionOptions(trigger_word="sks"))
    assert [entry.path.name for entry in manifest.images] == ["still.png"]
    assert manifest.clips_root == tmp_path / "job" / CLIPS_DIR
    clips = {clip.path.name: clip for clip in manifest.clips}
    assert set(clips) == {"walk.mp4", "sub__run.webm"}
    assert (clips["walk.mp4"].frames, clips["sub__run.webm"].frames) == (9, 17)
    assert clips["sub__run.webm"].codec == "vp9" and clips["walk.mp4"].width == 64
    assert (manifest.clips_root / "walk.txt").read_text() == "sks, a bar walking\n"
    assert clips["walk.mp4"].caption_source == "file"
    assert not list(manifest.root.glob("*.mp4"))  # the image backend's folder holds no clip
    assert (tmp_path / "src" / "walk.mp4").exists()  # the user's files are copied, never moved


def test_clips_come_out_of_an_archive(tmp_path: Path, settings: Settings):
    source = mixed_folder(tmp_path / "src")
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for file in source.rglob("*"):
            if file.is_file():
                bundle.write(file, file.relative_to(source).as_posix())
    manifest = stage_dataset(DatasetSpec(path=str(archive)), tmp_path / "job", settings=settings)
    assert sorted(clip.caption for clip in manifest.clips) == ["a bar running", "a bar walking"]
    assert len(manifest.images) == 1


def test_hostile_clips_are_skipped_with_a_reason_each(tmp_path: Path, settings: Settings):
    source = tmp_path / "src"
    expected = write_hostile_clips(source)
    write_clip(source / "good.mp4", frames=9)
    manifest = stage_dataset(DatasetSpec(path=str(source)), tmp_path / "job", settings=settings)
    assert [clip.path.name for clip in manifest.clips] == ["good.mp4"]
    assert {item.name: item.reason for item in manifest.skipped} == expected
    assert all(item.detail for item in manifest.skipped)


def test_a_dataset_of_only_unusable_clips_is_empty(tmp_path: Path, settings: Settings):
    source = tmp_path / "src"
    write_hostile_clips(source)
    with pytest.raises(EmptyDataset) as empty:
        stage_dataset(DatasetSpec(path=str(source)), tmp_path / "job", settings=settings)
    assert "no usable image (or video clip)" in empty.value.message and "audio only" in empty.value.message


# -- every remote source ------------------------------------------------------------------------------------------


def clip_set(folder: Path) -> Path:
    """Two good clips with captions and every hostile clip beside them (bad/): what each source below serves."""
    write_clip(folder / "walk.mp4", frames=9, caption="a bar walking")
    write_clip(folder / "sub" / "run.webm", frames=17, codec="libvpx-vp9", caption="a bar running")
    hostile = write_hostile_clips(folder / "bad")
    (folder / "bad" / "huge.mkv").unlink()  # sparse 5 GB: the archive bound's own test below
    HOSTILE_IN_SET.update({f"bad/{name}": reason for name, reason in hostile.items() if name != "huge.mkv"})
    return folder


HOSTILE_IN_SET: dict[str, str] = {}


def pack(source: Path, archive: Path) -> Path:
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive, "w") as bundle:
            for file in sorted(source.rglob("*")):
                if file.is_file():
                    bundle.write(file, file.relative_to(source).as_posix())
    else:
        with tarfile.open(archive, "w:gz") as bundle:
            bundle.add(source, arcname=".")
    return archive


def assert_staged(manifest, dest: Path) -> None:
    """The two good clips staged with their captions; every hostile one skipped with its reason."""
    assert {clip.path.name: (clip.caption, clip.frames) for clip in manifest.clips} == {
        "walk.mp4": ("a bar walking", 9), "sub__run.webm": ("a bar running", 17)}
    assert {item.name: item.reason for item in manifest.skipped} == HOSTILE_IN_SET
    assert all(clip.path.parent == dest / CLIPS_DIR and clip.path.is_file() for clip in manifest.clips)
    assert not (dest / "_extract").exists() and not (dest / "_download").exists()


@pytest.fixture
def loopback_settings(tmp_path: Path) -> Settings:
    return Settings.from_env({"DATA_DIR": str(tmp_path / "data"), "ALLOW_PRIVATE_URLS": "1"})


@pytest.mark.parametrize("name", ["clips.zip", "clips.tar.gz"])
def test_clips_stage_from_a_zip_or_tar_url(tmp_path: Path, loopback_settings: Settings, name: str):
    served = tmp_path / "served"
    served.mkdir()
    pack(clip_set(tmp_path / "src"), served / name)
    with serve_files(served) as server:
        dest = tmp_path / "job"
        manifest = stage_dataset(DatasetSpec(url=server.url(name)), dest, settings=loopback_settings)
    assert_staged(manifest, dest)


def test_clips_stage_from_s3(tmp_path: Path, loopback_settings: Settings):
    archive = pack(clip_set(tmp_path / "src"), tmp_path / "clips.zip")
    with moto_s3() as s3:
        client = s3.client()
        client.create_bucket(Bucket="videos")
        client.upload_file(str(archive), "videos", "sets/clips.zip")
        client.upload_file(str(tmp_path / "src" / "walk.mp4"), "videos", "one/walk.mp4")
        settings = with_s3(loopback_settings, s3.env)
        manifest = stage_dataset(DatasetSpec(url="s3://videos/sets/clips.zip"), tmp_path / "job", settings=settings)
        single = stage_dataset(DatasetSpec(url="s3://videos/one/walk.mp4"), tmp_path / "one", settings=settings,
                               captions=CaptionOptions(trigger_word="sks"))
    assert_staged(manifest, tmp_path / "job")
    assert [(clip.path.name, clip.caption, clip.frames) for clip in single.clips] == [("walk.mp4", "sks", 9)]


@pytest.mark.parametrize("how", ["zip path", "tar path", "zip url"])
def test_a_clip_in_an_archive_over_the_clip_bound_is_never_extracted(tmp_path: Path, loopback_settings: Settings,
                                                                      how: str):
    """The archive's header says how big the clip is: over ClipLimits.max_bytes it is skipped before a byte of it is
    written ("the archive lists"; the probe of an extracted file would say "is over"), whether the archive is on disk
    or followed while it downloads."""
    source = tmp_path / "src"
    write_clip(source / "good.mp4", frames=9)
    write_clip(source / "big.mp4", frames=30, size=96)
    served = tmp_path / "served"
    served.mkdir()
    archive = pack(source, served / "bomb.zip") if how.startswith("zip") else _plain_tar(source, served / "bomb.tar")
    big = (source / "big.mp4").stat().st_size
    limits = StagingLimits(clips=ClipLimits(max_bytes=big - 1))
    with serve_files(served) as server:
        dataset = DatasetSpec(url=server.url("bomb.zip")) if how.endswith("url") else DatasetSpec(path=str(archive))
        manifest = stage_dataset(dataset, tmp_path / "job", settings=loopback_settings, limits=limits)
    assert [clip.path.name for clip in manifest.clips] == ["good.mp4"]
    [skipped] = manifest.skipped
    assert (skipped.name, skipped.reason) == ("big.mp4", "video bomb")
    assert f"the archive lists {big} bytes" in skipped.detail


def _plain_tar(source: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w") as bundle:
        for file in sorted(source.rglob("*")):
            bundle.add(file, arcname=file.relative_to(source).as_posix())
    return archive
