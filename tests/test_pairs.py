"""Edit pairs (core/dataset/pairs.py): recognised from the dataset's layout, staged as targets and inputs, checked by
the preflight, linked by `conditioning_data` in SimpleTuner's dataloader, counted in the memory plan. Fast: no
training (tests/test_edit_training.py trains a tiny Kontext LoRA)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from core.adapters import GpuFacts
from core.dataset import Manifest, stage_dataset
from core.dataset.pairs import split_pairs
from core.errors import EmptyDataset, SpecError
from core.jobdir import JobDir
from core.settings import Settings
from core.spec.job import DatasetSpec, parse_job
from core.training import build_trainer_files, preflight
from core.training.gpu_fit import plan_gpu
from core.training.memory_plan import table_params
from tests.conftest import ROOT

KONTEXT = "black-forest-labs/FLUX.1-Kontext-dev"


def _image(path: Path, size: tuple[int, int] = (160, 160), colour: tuple[int, int, int] = (200, 40, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def _pairs(root: Path, names: list[str], *, folder: str = "control", instruction: bool = True) -> Path:
    for name in names:
        _image(root / f"{name}.png")
        _image(root / folder / f"{name}.png", colour=(40, 40, 200))
        if instruction:
            (root / f"{name}.txt").write_text(f"make {name} red")
    return root


def _stage(root: Path, dest: Path, **dataset) -> Manifest:
    return stage_dataset(DatasetSpec(path=str(root), **dataset), dest, settings=Settings.from_env())


def _job(root: Path, **config) -> dict:
    return {"dataset": {"path": str(root)},
            "config": {"model_name": KONTEXT, "resolution": 128, "max_train_steps": 10, **config},
            "dataloader": {"minimum_image_size": 64}}


# -- the conventions --------------------------------------------------------------------------------------------


def test_a_control_folder_pairs_by_stem_and_lists_what_has_no_partner():
    split = split_pairs(["a.png", "b.jpg", "c.png", "control/a.webp", "control/b.png", "control/zz.png"])
    assert split is not None and split.layout == "control folders"
    assert dict(zip(split.targets, split.inputs, strict=True)) == {"a.png": ["control/a.webp"],
                                                                   "b.jpg": ["control/b.png"]}
    assert sorted((name, reason) for name, reason, _ in split.unpaired) == [
        ("c.png", "edit target without an input"), ("control/zz.png", "edit input without a target")]


def test_images_and_control_side_by_side_and_three_inputs_pair():
    split = split_pairs(["images/a.png", "control/a.png", "control_2/a.png", "control_3/a.png"])
    assert split is not None and split.targets == ["images/a.png"]
    assert split.inputs == [["control/a.png", "control_2/a.png", "control_3/a.png"]]


def test_start_end_names_pair_and_take_the_instruction_from_name_txt():
    split = split_pairs(["cat_start.png", "cat_end.png", "dog_end.png", "owl_start.png", "owl_start2.png"],
                        captions={"cat.txt"})
    assert split is not None and split.layout == "start/end names"
    assert split.targets == ["cat_end.png"] and split.inputs == [["cat_start.png"]]
    assert split.instructions == {"cat_end.png": "cat.txt"}
    reasons = {name: reason for name, reason, _ in split.unpaired}
    assert reasons == {"dog_end.png": "edit target without an input", "owl_start.png": "edit input without a target",
                       "owl_start2.png": "edit input without a target"}


def test_pairs_with_fewer_inputs_than_most_are_listed():
    names = ["a.png", "b.png", "c.png", *(f"control/{n}.png" for n in "abc"), "control_2/a.png", "control_2/b.png"]
    split = split_pairs(names)
    assert split is not None and split.targets == ["a.png", "b.png"]
    assert {name for name, reason, _ in split.unpaired if reason == "edit pair with fewer inputs than the others"} \
        == {"c.png", "control/c.png"}


def test_a_plain_dataset_is_no_pair_dataset_and_a_named_folder_is_used():
    assert split_pairs(["a.png", "sub/b.png"]) is None
    split = split_pairs(["targets/a.png", "x/y/b.png", "edits/inputs/a.png", "edits/inputs/b.png"],
                        control_dirs=["edits/inputs"])
    assert split is not None and split.inputs == [["edits/inputs/a.png"], ["edits/inputs/b.png"]]


def test_control_dir_must_stay_inside_the_dataset(tmp_path):
    with pytest.raises(SpecError) as error:
        parse_job({**_job(tmp_path), "dataset": {"path": str(tmp_path), "control_dir": "../elsewhere"}})
    assert error.value.field == "dataset.control_dir"


# -- staging a hostile corpus ------------------------------------------------------------------------------------


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    """Two good pairs, a target with no input, an input with no target, an input that is text, sides 100x apart."""
    root = _pairs(tmp_path / "src", ["good1", "good2"])
    _image(root / "orphan.png")
    _image(root / "control" / "lonely.png")
    _image(root / "broken.png")
    (root / "control" / "broken.png").write_text("this is not an image")
    _image(root / "tiny.png", size=(2000, 2000))
    _image(root / "control" / "tiny.png", size=(100, 100))
    return root


def test_staging_a_hostile_pair_corpus_keeps_whole_pairs_and_names_each_reason(hostile, tmp_path):
    manifest = _stage(hostile, tmp_path / "job" / "dataset")
    assert sorted(entry.path.name for entry in manifest.images) == ["good1.png", "good2.png"]
    assert manifest.pairs is not None and [f.name for f in manifest.pairs.folders] == ["control"]
    assert sorted(p.name for p in manifest.pairs.folders[0].iterdir()) == ["good1.png", "good2.png"]
    reasons = {item.name: item.reason for item in manifest.skipped}
    assert reasons["orphan.png"] == "edit target without an input"
    assert reasons["control/lonely.png"] == "edit input without a target"
    assert reasons["broken.png"] == reasons["control/broken.png"] == "edit input not a usable image"
    assert reasons["tiny.png"] == reasons["control/tiny.png"] == "edit pair sides too far apart in size"
    details = {item.name: item.detail for item in manifest.skipped}
    assert "not a decodable image" in details["broken.png"] and "400x" not in details["tiny.png"]
    assert "100x apart in pixels" in details["tiny.png"]
    assert not (manifest.root / "broken.png").exists() and not (manifest.root / "tiny.png").exists()


def test_start_end_pairs_stage_under_the_targets_name_with_the_instruction(tmp_path):
    root = tmp_path / "src"
    _image(root / "cat_start.jpg")
    _image(root / "cat_end.png")
    (root / "cat.txt").write_text("give the cat a hat")
    manifest = _stage(root, tmp_path / "dataset")
    assert [(e.path.name, e.caption, e.caption_source) for e in manifest.images] == \
        [("cat_end.png", "give the cat a hat", "file")]
    staged = manifest.pairs.folders[0] / "cat_end.png"  # the input's JPEG bytes under its target's name
    with Image.open(staged) as image:
        assert image.format == "JPEG"
    assert not any(item.reason == "caption without an image" for item in manifest.skipped)


def test_pairs_false_stages_every_image(tmp_path):
    manifest = _stage(_pairs(tmp_path / "src", ["a"]), tmp_path / "dataset", pairs=False)
    assert manifest.pairs is None and len(manifest.images) == 2


# -- the preflight ----------------------------------------------------------------------------------------------


def _preflight(root: Path, tmp_path: Path):
    spec = parse_job(_job(root))
    return preflight(_stage(root, tmp_path / "dataset"), spec), spec


def test_an_edit_flavour_without_inputs_is_refused_naming_the_folder(tmp_path):
    root = tmp_path / "src"
    for name in "ab":
        _image(root / f"{name}.png")
    report, _ = _preflight(root, tmp_path)
    assert report.errors and "trains on edit pairs" in report.errors[0]
    assert "control/ folder beside the images" in report.errors[0] and "NAME_start" in report.errors[0]
    named = parse_job({**_job(root), "dataset": {"path": str(root), "control_dir": "before"}})
    with pytest.raises(EmptyDataset) as error:  # the job's own folder: every image lacks its input there
        stage_dataset(named.source, tmp_path / "named", settings=Settings.from_env())
    assert "2 edit target without an input" in error.value.message and "no input found at before/a.*" in \
        error.value.message


def test_a_pair_dataset_for_an_image_family_is_refused_clearly(tmp_path):
    root = _pairs(tmp_path / "src", ["a", "b"])
    spec = parse_job({**_job(root), "config": {"model_name": "black-forest-labs/FLUX.1-dev", "resolution": 128}})
    report = preflight(_stage(root, tmp_path / "dataset"), spec)
    assert report.errors and "holds 2 edit pairs" in report.errors[0] and "trains on images alone" in report.errors[0]
    assert "dataset.pairs false" in report.errors[0]


def test_more_inputs_than_kontext_takes_is_refused_and_shapes_are_warned(tmp_path):
    root = _pairs(tmp_path / "src", ["a", "b"])
    for name in "ab":
        _image(root / "control_2" / f"{name}.png", size=(320, 160))
    report, _ = _preflight(root, tmp_path)
    assert any("have 2 inputs each (control, control_2)" in e and "takes 1" in e for e in report.errors)
    assert any("another aspect ratio than their target" in w for w in report.warnings)


def test_the_report_counts_pairs_and_lists_the_unpaired(hostile, tmp_path):
    report, spec = _preflight(hostile, tmp_path)
    assert spec.config["model_family"] == "flux" and spec.config["model_flavour"] == "kontext"
    assert report.ok, report.errors
    assert report.pairs["pairs"] == 2 and report.pairs["inputs_per_pair"] == 1
    assert report.pairs["unpaired_count"] == 6  # orphan, lonely, both sides of broken and of tiny
    assert "cropped and resized exactly as its target" in report.pairs["cropping"]
    assert any("not part of a whole edit pair" in w for w in report.warnings)


# -- SimpleTuner's files and the memory plan ---------------------------------------------------------------------


def test_the_trainer_config_links_each_input_folder_by_conditioning_data(tmp_path):
    root = _pairs(tmp_path / "src", ["a", "b"])
    for name in "ab":
        _image(root / "control_2" / f"{name}.png")
    spec = parse_job({**_job(root), "config": {"model_name": "Qwen/Qwen-Image-Edit-2509", "resolution": 128}})
    assert spec.config["model_family"] == "qwen_image" and spec.config["model_flavour"] == "edit-v2"
    manifest = _stage(root, tmp_path / "job" / "dataset")
    assert preflight(manifest, spec).ok
    files = build_trainer_files(spec, images_dir=manifest.root, job=JobDir(tmp_path / "job"), device="cpu",
                                inputs_dirs=manifest.pairs.folders)
    image, first, second, _ = files.backends
    assert image["conditioning_data"] == ["control", "control_2"]
    for backend, folder in ((first, "control"), (second, "control_2")):
        assert backend["dataset_type"] == "conditioning" and backend["conditioning_type"] == "reference_strict"
        assert backend["instance_data_dir"] == str(tmp_path / "job" / "dataset" / folder)
        assert backend["resolution"] == image["resolution"]
    assert files.config["--conditioning_multidataset_sampling"] == "combined"


def test_the_memory_plan_counts_the_inputs_tokens():
    params = table_params(KONTEXT)
    gpu = GpuFacts(count=1, memory_gb=80.0, source="test")
    config = {"resolution": 1024, "resolution_type": "pixel", "base_model_precision": "int8-quanto"}
    alone = plan_gpu(family="flux", flavour="kontext", config=config, gpu=gpu, params=params)
    paired = plan_gpu(family="flux", flavour="kontext", config=config, gpu=gpu, params=params, references=1)
    assert paired.memory["activations_gb"] == pytest.approx(2 * alone.memory["activations_gb"], rel=0.01)
    # SimpleTuner's Kontext quickstart: a 24 GB card is the realistic minimum at 1024 px with int8 (FLUX.1: 18).
    assert 20 <= paired.estimated_vram_gb <= 26 and paired.references == 1


# -- a dry run of the real Hub id, offline ------------------------------------------------------------------------


def test_a_dry_run_of_kontext_dev_resolves_the_flavour_and_counts_the_pairs(hostile, tmp_path):
    job = tmp_path / "job.json"
    job.write_text(json.dumps(_job(hostile)))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRAINER_DEVICE": "cpu"}
    done = subprocess.run([sys.executable, "-m", "core", "check", str(job), "--workdir", str(tmp_path / "work")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    result = json.loads(done.stdout)
    config = result["trainer_files"]["config.json"]
    assert (config["--model_family"], config["--model_flavour"]) == ("flux", "kontext")
    pairs = result["preflight"]["pairs"]
    assert pairs["pairs"] == 2 and {item["name"] for item in pairs["unpaired"]} >= {"orphan.png", "control/lonely.png"}
    backends = result["trainer_files"]["multidatabackend.json"]
    assert backends[0]["conditioning_data"] == "control" and backends[1]["dataset_type"] == "conditioning"


def test_kontexts_recipe_trains_at_the_guides_learning_rate_not_the_examples_smoke_value():
    from core.simpletuner import recipe_for

    recipe = recipe_for("flux", "kontext", gpu_memory_gb=24)
    assert recipe.example == "kontext.peft-lora" and recipe.settings["learning_rate"] == 1e-5
    assert recipe.settings["optimizer"] == "optimi-lion"
