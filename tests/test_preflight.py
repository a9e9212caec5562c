"""The preflight report, from manifests staged for real (small Pillow images) and from the job's settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from core.dataset.stage import ImageEntry, Manifest, Skipped, caption_options, stage_dataset
from core.settings import Settings
from core.spec.job import parse_job
from core.training.preflight import DEFAULT_MINIMUM_IMAGE_SIZE, DEFAULT_RESOLUTION, preflight

CONFIG = {"model_family": "sdxl", "model_name": "some/sdxl-model"}


def spec(**extra):
    return parse_job({"dataset": {"path": "/unused"}, "config": {**CONFIG, **extra.pop("config", {})}, **extra})


def manifest_of(sizes: list[tuple[int, int]], *, sources: list[str] | None = None, captions: list[str] | None = None,
                skipped: list[Skipped] | None = None) -> Manifest:
    sources = sources or ["file"] * len(sizes)
    captions = captions or ["sks, a photo"] * len(sizes)
    images = [
        ImageEntry(path=Path(f"/x/{i}.png"), caption=captions[i], width=w, height=h, caption_source=sources[i])
        for i, (w, h) in enumerate(sizes)
    ]
    return Manifest(root=Path("/x"), images=images, skipped=skipped or [], source="path /src")


def test_staged_dataset_report(tmp_path: Path):
    source = tmp_path / "src"
    source.mkdir()
    for i, size in enumerate([(96, 64), (128, 128), (200, 100)]):
        Image.new("RGB", size, (i, i, i)).save(source / f"{i}.png")
    (source / "0.txt").write_text("a photo of sks")
    (source / "broken.png").write_bytes(b"junk")
    (source / "notes.md").write_text("x")
    job = parse_job({"dataset": {"path": str(source)}, "config": {**CONFIG, "resolution": 128}, "trigger_word": "sks",
                     "dataloader": {"minimum_image_size": 64}})
    manifest = stage_dataset(job.dataset, tmp_path / "job", captions=caption_options(job),
                             settings=Settings.from_env({}))
    report = preflight(manifest, job)
    data = json.loads(json.dumps(report.to_dict()))  # JSON-ready as it is returned by the faces
    assert data["images_found"] == 4 and data["images_usable"] == 3 and data["images_skipped"] == 2
    assert data["skipped_by_reason"] == {"not a decodable image": 1, "not an image": 1}
    assert data["caption_sources"] == {"trigger_word": 2, "file": 1}
    assert data["caption_coverage"] == pytest.approx(1 / 3, abs=1e-3)
    assert data["trigger_word_coverage"] == 1.0
    assert data["width"] == {"min": 96, "max": 200, "median": 128}
    assert data["height"] == {"min": 64, "max": 128, "median": 100}
    assert data["resolution"] == 128 and data["minimum_image_size"] == 64
    assert data["below_resolution"] == 2 and data["below_minimum"] == 0
    assert data["errors"] == []
    assert any("2 of 3 images have no caption; the trigger word" in w for w in data["warnings"])
    assert any("smaller than the training resolution" in w for w in data["warnings"])
    assert any("only 3 usable images" in w for w in data["warnings"])
    assert any("could not be decoded" in w for w in data["warnings"])


def test_all_images_under_minimum_size_is_the_bucket_manager_error_before_training():
    report = preflight(manifest_of([(300, 200), (250, 250)]), spec(dataloader={"minimum_image_size": 512}))
    assert len(report.errors) == 1
    error = report.errors[0]
    assert "No images were discovered by the bucket manager" in error
    assert "minimum_image_size (512 px on the shorter side" in error
    assert "set dataloader.minimum_image_size to 250 or lower" in error
    assert report.below_minimum == 2 and report.steps_per_epoch == 0


def test_some_images_under_minimum_is_a_warning_and_they_leave_the_step_count():
    job = spec(config={"max_train_steps": 0, "num_train_epochs": 2}, dataloader={"minimum_image_size": 256})
    report = preflight(manifest_of([(300, 200), (600, 600), (700, 900)]), job)
    assert report.errors == []
    assert any("1 of 3 images are smaller than minimum_image_size" in w for w in report.warnings)
    assert report.steps_per_epoch == 2 and report.total_steps == 4


def test_default_minimum_follows_the_resolution():
    assert DEFAULT_RESOLUTION == 1024 and DEFAULT_MINIMUM_IMAGE_SIZE == 256
    small = manifest_of([(200, 200)] * 4)
    assert preflight(small, spec()).minimum_image_size == DEFAULT_MINIMUM_IMAGE_SIZE
    assert preflight(small, spec()).errors  # 200 px < 256 px
    assert preflight(small, spec(config={"resolution": 128})).minimum_image_size == 128
    assert preflight(small, spec(config={"resolution": 128})).errors == []


@pytest.mark.parametrize("config,loader,images,expected_epoch,expected_total", [
    ({"train_batch_size": 2, "max_train_steps": 50}, {"repeats": 2}, 5, 8, 50),  # ceil(5*3/2)
    ({"train_batch_size": 2, "gradient_accumulation_steps": 2, "num_train_epochs": 3}, {}, 10, 3, 9),
    ({"num_train_epochs": 4, "max_train_steps": 0}, {}, 7, 7, 28),
    ({}, {}, 7, 7, 1000),  # neither given: the trainer config's default max_train_steps
])
def test_steps_per_epoch_and_total(config, loader, images, expected_epoch, expected_total):
    report = preflight(manifest_of([(1024, 1024)] * images), spec(config=config, dataloader=loader))
    assert (report.steps_per_epoch, report.total_steps) == (expected_epoch, expected_total)


def test_batch_larger_than_the_dataset_is_an_error_with_the_fix():
    report = preflight(manifest_of([(1024, 1024)] * 3), spec(config={"train_batch_size": 4}))
    assert any("train_batch_size 4 is larger than the 3 usable images" in e for e in report.errors)
    fixed = preflight(manifest_of([(1024, 1024)] * 3), spec(config={"train_batch_size": 4}, dataloader={"repeats": 1}))
    assert fixed.errors == []


def test_aspect_groups_smaller_than_a_batch_warn_without_square_crop():
    sizes = [(1024, 1024)] * 4 + [(1536, 1024)]
    report = preflight(manifest_of(sizes), spec(config={"train_batch_size": 2}))
    assert any("aspect-ratio groups smaller than train_batch_size" in w for w in report.warnings)
    square = preflight(manifest_of(sizes), spec(config={"train_batch_size": 2},
                                                dataloader={"crop": True, "crop_aspect": "square"}))
    assert not any("aspect-ratio" in w for w in square.warnings)


def test_native_dataloader_list_and_area_resolution():
    native = [{"id": "imgs", "type": "local", "resolution": 1.0, "resolution_type": "area",
               "minimum_image_size": 0.5, "repeats": 1},
              {"id": "te", "dataset_type": "text_embeds", "default": True}]
    report = preflight(manifest_of([(512, 512), (1024, 1024)]), spec(dataloader=native))
    assert (report.resolution_type, report.resolution, report.minimum_image_size) == ("area", 1.0, 0.5)
    assert report.below_minimum == 1  # 0.26 megapixels < 0.5
    assert report.below_resolution == 1  # 1024x1024 is 1.05 megapixels
    assert report.repeats == 1 and report.steps_per_epoch == 2
    none_minimum = preflight(manifest_of([(64, 64)]), spec(dataloader=[{"id": "imgs", "type": "local"}]))
    assert none_minimum.minimum_image_size is None and none_minimum.below_minimum == 0


def test_captions_and_trigger_coverage_without_a_trigger_word():
    report = preflight(manifest_of([(1024, 1024)] * 10, sources=["file_name"] * 4 + ["file"] * 6,
                                   captions=["x"] * 10), spec())
    assert report.trigger_word is None and report.trigger_word_coverage is None
    assert report.caption_coverage == 0.6
    assert any("4 of 10 images have no caption; the file name is used" in w for w in report.warnings)
    assert not any("only" in w for w in report.warnings)


def test_nothing_to_train_is_an_error():
    report = preflight(manifest_of([(1024, 1024)] * 3), spec(config={"max_train_steps": 0, "num_train_epochs": 0}))
    assert any("nothing to train" in e for e in report.errors)


def test_buckets_are_estimated_with_simpletuners_rule():
    """The target size's edges aligned to 64 px: at 128 px a 3:2 image still lands in the square bucket."""
    sizes = [(1024, 1024)] * 3 + [(1536, 1024), (384, 128), (192, 128)]
    report = preflight(manifest_of(sizes), spec(config={"resolution": 1024}, dataloader={"minimum_image_size": 64}))
    assert report.aspect_buckets == {"1": 3, "1.5": 2, "3": 1}  # 192x128 is 3:2 too
    small = preflight(manifest_of([(192, 128)]), spec(config={"resolution": 128, "resolution_type": "pixel_area"},
                                                       dataloader={"minimum_image_size": 64}))
    assert small.aspect_buckets == {"1": 1}


def test_the_report_counts_the_processes_and_their_share_of_each_step():
    report = preflight(manifest_of([(1024, 1024)] * 8), spec(config={"num_train_epochs": 1, "max_train_steps": 0}),
                       processes=2)
    assert (report.processes, report.effective_batch_size, report.steps_per_epoch, report.total_steps) == (2, 2, 4, 4)
    assert report.errors == []


ONE_WIDE = [(1024, 1024)] * 4 + [(3072, 1024)]


def test_a_bucket_smaller_than_the_processes_is_refused_naming_it_and_the_fixes():
    report = preflight(manifest_of(ONE_WIDE), spec(), processes=2)
    (error,) = report.errors
    assert error.startswith("aspect bucket 3 (1 image) holds fewer samples than 2: 2 processes x train_batch_size 1")
    assert "zero usable batches" in error
    for fix in ("add images of that aspect ratio", "set dataloader.repeats to 1 or more",
                "set config.allow_dataset_oversubscription true", "config.num_processes 1", "crop_aspect 'square'"):
        assert fix in error
    assert preflight(manifest_of(ONE_WIDE), spec(), processes=1).errors == []
    square = spec(dataloader={"crop": True, "crop_aspect": "square"})
    assert preflight(manifest_of(ONE_WIDE), square, processes=2).errors == []


def test_oversubscription_asked_for_is_planned_and_said_as_a_warning_event():
    events: list = []
    report = preflight(manifest_of(ONE_WIDE), spec(config={"allow_dataset_oversubscription": True}), processes=2,
                       on_event=events.append)
    assert report.errors == []
    (warning,) = [w for w in report.warnings if "allow_dataset_oversubscription" in w]
    assert "aspect bucket 3 (1 image)" in warning and "repeats its images up to 2 times" in warning
    assert [(e.kind, e.field, e.message) for e in events] == [
        ("warning", "config.allow_dataset_oversubscription", warning)]


def test_repeats_the_dataset_sets_are_what_counts_and_oversubscription_does_not_override_them():
    enough = preflight(manifest_of(ONE_WIDE), spec(dataloader={"repeats": 1}), processes=2)
    assert enough.errors == []
    short = preflight(manifest_of(ONE_WIDE), spec(config={"allow_dataset_oversubscription": True},
                                                  dataloader={"repeats": 1}), processes=4)
    (error,) = short.errors
    assert "aspect bucket 3 (1 image) x 2 (repeats + 1) holds fewer samples than 4" in error
    assert "does not override the repeats a dataset sets" in error and "dataloader.repeats to 3" in error


def test_gradient_accumulation_splits_buckets_on_one_gpu_too():
    report = preflight(manifest_of(ONE_WIDE), spec(config={"gradient_accumulation_steps": 2}))
    (error,) = report.errors
    assert "1 processes x train_batch_size 1 x gradient_accumulation_steps 2" in error
    assert "lower config.gradient_accumulation_steps" in error and "num_processes" not in error
