"""The dataset doctor, on a dataset staged for real: each finding names its files and what to do, in the preflight
report (and its warnings); the UI's store removes the flagged images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from app.dataset_store import DatasetStore
from core.dataset import caption_options, examine, stage_dataset
from core.settings import Settings
from core.spec import DatasetSpec, parse_job
from core.training import preflight

CONFIG = {"model_family": "sdxl", "model_name": "some/sdxl-model", "resolution": 128}


def noise(seed: int, size: tuple[int, int] = (160, 160)) -> Image.Image:
    """A sharp image unlike any other seed's."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    return Image.fromarray(pixels).resize(size, Image.Resampling.NEAREST)


def sick_dataset(folder: Path) -> Path:
    """Eight good images, one of them saved again smaller as a JPEG, a tiny one, a blurry one, a panorama; captions
    that name the trigger, three that do not."""
    folder.mkdir()
    for index in range(8):
        noise(index).save(folder / f"good_{index}.png")
        (folder / f"good_{index}.txt").write_text("sks, a photo")
    noise(3).resize((120, 120)).save(folder / "copy_of_3.jpg", quality=90)
    noise(20, (40, 40)).save(folder / "tiny.png")
    noise(21).filter(ImageFilter.GaussianBlur(6)).save(folder / "blurry.png")
    noise(22, (640, 160)).save(folder / "panorama.png")
    for name in ("tiny", "blurry", "panorama"):
        (folder / f"{name}.txt").write_text("a photo of a woman")
    return folder


def test_each_finding_names_its_files(tmp_path: Path):
    source = sick_dataset(tmp_path / "src")
    job = parse_job({"dataset": {"path": str(source)}, "config": CONFIG, "trigger_word": "sks", "goal": "style",
                     "dataloader": {"minimum_image_size": 32}})
    manifest = stage_dataset(job.source, tmp_path / "job", captions=caption_options(job),
                             settings=Settings.from_env({}))
    report = json.loads(json.dumps(preflight(manifest, job).to_dict()))
    found = {finding["kind"]: finding for finding in report["doctor"]}
    assert found["duplicates"]["groups"] == [["copy_of_3.jpg", "good_3.png"]]
    assert found["duplicates"]["removable"] == ["good_3.png"]  # the first of a group is kept
    assert found["tiny"]["files"] == ["tiny.png"] and "40x40" in found["tiny"]["message"]
    assert found["blurry"]["files"] == ["blurry.png"]
    assert found["aspect"]["files"] == ["panorama.png"]
    assert sorted(found["trigger"]["files"]) == ["blurry.png", "panorama.png", "tiny.png"]
    assert "never named 'sks'" in found["trigger"]["message"]
    assert found["trigger"]["removable"] == []  # a caption finding removes nothing
    assert found["too_few"]["count"] == 12 and "12 images for a style: 20 or more" in found["too_few"]["message"]
    assert report["errors"] == []  # findings are warnings
    assert any(w.startswith("1 images are blurry") and "Fix: remove them" in w for w in report["warnings"])


def test_a_healthy_dataset_has_no_finding(tmp_path: Path):
    source = tmp_path / "src"
    source.mkdir()
    for index in range(6):
        noise(index).save(source / f"{index}.png")
        (source / f"{index}.txt").write_text(f"sks, photo {index}")
    job = parse_job({"dataset": {"path": str(source)}, "config": CONFIG, "trigger_word": "sks"})
    manifest = stage_dataset(job.source, tmp_path / "job", captions=caption_options(job),
                             settings=Settings.from_env({}))
    assert examine(manifest, resolution=128, resolution_type="pixel", trigger="sks") == []
    # The same images for a likeness with no trigger word: nothing would call up what it learns.
    [finding] = examine(manifest, resolution=128, resolution_type="pixel", trigger=None, goal="likeness")
    assert finding.kind == "trigger" and "without a trigger_word" in finding.message


def test_identical_captions_and_colour_variants(tmp_path: Path):
    """The same shape in other colours is no duplicate; one caption for every image is a finding."""
    source = tmp_path / "src"
    source.mkdir()
    for index, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        image = Image.new("RGB", (128, 128), (240, 240, 240))
        image.paste(colour, (30, 30, 98, 98))
        image.save(source / f"{index}.png")
        (source / f"{index}.txt").write_text("a square")
    job = parse_job({"dataset": {"path": str(source)}, "config": CONFIG})
    manifest = stage_dataset(job.source, tmp_path / "job", captions=caption_options(job),
                             settings=Settings.from_env({}))
    kinds = {f.kind: f for f in examine(manifest, resolution=128, resolution_type="pixel", trigger=None)}
    assert "duplicates" not in kinds
    assert kinds["same_captions"].files == ["0.png", "1.png", "2.png"]


def test_the_store_removes_the_flagged_images(tmp_path: Path):
    store = DatasetStore(settings=Settings.from_env({"DATA_DIR": str(tmp_path / "data")}))
    store.load(DatasetSpec(path=str(sick_dataset(tmp_path / "src"))))
    job = parse_job({"dataset": {"path": str(store.images_dir)}, "config": CONFIG, "trigger_word": "sks",
                     "dataloader": {"minimum_image_size": 32}})
    manifest = stage_dataset(job.source, tmp_path / "job", captions=caption_options(job),
                             settings=Settings.from_env({}))
    report = preflight(manifest, job)
    flagged = store.flag([name for finding in report.doctor for name in finding["removable"]])
    assert sorted(flagged) == ["blurry.png", "good_3.png", "panorama.png", "tiny.png"]
    assert sorted(store.remove_flagged()) == sorted(flagged)
    left = [path.name for path in store.images()]
    assert "good_3.png" not in left and "copy_of_3.jpg" in left and len(left) == 8
    assert not (store.images_dir / "tiny.txt").exists()
    assert store.source() == {"path": str(store.images_dir)} and store.flagged() == []
