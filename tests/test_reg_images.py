"""Class images rendered by the base model before training (`dataset.reg_generate`: core/generation/reg_images.py,
core/cache/reg_images.py): the tiny SDXL renders them (noise, at 64 px in 2 steps: real PNGs through the real
diffusers pipeline) into the job's dataset/reg/, the trainer config gets its regularisation backend, the preflight
counts them, and a second job takes them from the cache without rendering."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from core.errors import JobError, SpecError
from core.events import LogLine, StageEvent
from core.generation.reg_images import training_side
from core.settings import Settings
from core.spec.job import parse_job
from tests.conftest import tiny_job

REG = {"prompt": "a photo of a red circle", "count": 2, "size": 64, "steps": 2, "seed": 7}


def _settings(tmp_path: Path) -> Settings:
    return Settings.from_env({"DATA_DIR": str(tmp_path / "data"), "CACHE_DIR": str(tmp_path / "cache"),
                              "TRAINER_DEVICE": "cpu"})


def _job(model: Path, dataset: Path, **reg) -> dict:
    job = tiny_job(model, dataset)
    job["dataset"] = {**job["dataset"], "reg_generate": {**REG, **reg}}
    return job


def _renders(events: list) -> list[str]:
    return [e.message for e in events if isinstance(e, StageEvent) and e.stage == "reg_images"
            and e.status == "progress"]


def test_reg_generate_is_bounded_and_refused_where_it_makes_no_sense(tmp_path: Path):
    base = {"config": {"model_name": "stabilityai/stable-diffusion-xl-base-1.0"}}
    for reg, field in (({"prompt": "a man", "count": 0}, "dataset.reg_generate.count"),
                       ({"prompt": "a man", "count": 501}, "dataset.reg_generate.count"),
                       ({"prompt": "", "count": 3}, "dataset.reg_generate.prompt"),
                       ({"prompt": "a man", "count": 3, "size": 60}, "dataset.reg_generate.size")):
        with pytest.raises(SpecError) as caught:
            parse_job({**base, "dataset": {"path": str(tmp_path), "reg_generate": reg}})
        assert caught.value.field == field
    with pytest.raises(SpecError, match="not both") as caught:
        parse_job({**base, "dataset": {"path": str(tmp_path), "reg_dir": "class",
                                       "reg_generate": {"prompt": "a man", "count": 3}}})
    assert caught.value.field == "dataset.reg_generate"
    for model, why in (("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "video model"),
                       ("black-forest-labs/FLUX.1-Kontext-dev", "edit model")):
        with pytest.raises(SpecError, match=why) as caught:
            parse_job({"config": {"model_name": model},
                       "dataset": {"path": str(tmp_path), "reg_generate": {"prompt": "a man", "count": 3}}})
        assert caught.value.field == "dataset.reg_generate"


def test_the_size_defaults_to_the_training_resolution(tmp_path: Path):
    def side(**config) -> int:
        job = parse_job({"config": {"model_name": "stabilityai/stable-diffusion-xl-base-1.0", **config},
                         "dataset": {"path": str(tmp_path), "reg_generate": {"prompt": "a man", "count": 3}}})
        return training_side(job, plan=None)

    assert (side(), side(resolution=512), side(resolution=1, resolution_type="area")) == (1024, 512, 1024)


@pytest.mark.trainer_env
def test_class_images_are_rendered_once_then_taken_from_the_cache(tmp_path: Path, tiny_model: Path,
                                                                  demo_dataset: Path):
    from core.pipeline import check_job

    settings = _settings(tmp_path)
    first_events: list = []
    first = check_job(parse_job(_job(tiny_model, demo_dataset)), tmp_path / "j1", first_events.append,
                      settings=settings)
    reg = tmp_path / "j1" / "dataset" / "reg"
    images = sorted(reg.glob("*.png"))
    assert [path.name for path in images] == ["class_0000.png", "class_0001.png"]
    for path in images:
        with Image.open(path) as image:
            assert image.size == (64, 64)
        assert path.with_suffix(".txt").read_text() == "a photo of a red circle"  # no trigger word
    assert _renders(first_events)[-1].startswith("rendered 2/2 class images")
    backends = first.trainer_files["multidatabackend.json"]
    (regularisation,) = [b for b in backends if b.get("is_regularisation_data")]
    assert regularisation["instance_data_dir"] == str(reg)
    subsets = first.preflight["subsets"]
    assert (subsets["regularisation_images"], subsets["regularisation_generated"]) == (2, 2)

    second_events: list = []
    second = check_job(parse_job(_job(tiny_model, demo_dataset)), tmp_path / "j2", second_events.append,
                       settings=settings)
    assert _renders(second_events) == []  # nothing rendered
    assert any(isinstance(e, LogLine) and e.message.startswith("2 class images from the cache")
               for e in second_events)
    reused = sorted((tmp_path / "j2" / "dataset" / "reg").glob("*.png"))
    assert [p.read_bytes() for p in reused] == [p.read_bytes() for p in images]
    assert second.preflight["subsets"] == subsets

    third_events: list = []  # another seed is another set
    check_job(parse_job(_job(tiny_model, demo_dataset, seed=8)), tmp_path / "j3", third_events.append,
              settings=settings)
    assert len(_renders(third_events)) == 2


def test_a_dataset_with_its_own_reg_folder_refuses_reg_generate(tmp_path: Path, tiny_model: Path,
                                                                 demo_dataset: Path):
    from core.pipeline import check_job

    (demo_dataset / "reg").mkdir()
    first = sorted(demo_dataset.glob("*.png"))[0]
    (demo_dataset / "reg" / first.name).write_bytes(first.read_bytes())
    with pytest.raises(JobError, match="regularisation images of its own") as caught:
        check_job(parse_job(_job(tiny_model, demo_dataset)), tmp_path / "j", settings=_settings(tmp_path))
    assert (caught.value.field, caught.value.stage) == ("dataset.reg_generate", "reg_images")
