"""Staging a dataset with video clips: clips beside images, from a folder and from an archive, each staged into the
clips folder with its caption; files that cannot train skipped with a reason each."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from PIL import Image

from core.dataset import CLIPS_DIR, CaptionOptions, stage_dataset
from core.errors import EmptyDataset
from core.settings import Settings
from core.spec import DatasetSpec
from tests.support.clips import write_clip, write_hostile_clips


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
