"""Concepts: kohya-named folders (`10_alice/`, `5_bob/`) and plain folders given repeats become one dataloader entry
each, read back from the generated multidatabackend.json, from a folder and from a zip; the preflight shows their
balance."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from core.pipeline import check_job
from core.settings import Settings
from core.spec import parse_job
from tests.conftest import tiny_job


def concept_dataset(root: Path, folders: dict[str, int]) -> Path:
    """`folders`: name -> images in it, each 128 px with a caption that names no trigger."""
    for folder, count in folders.items():
        (root / folder).mkdir(parents=True)
        for index in range(count):
            Image.new("RGB", (128, 128), (index * 40, len(folder) * 20, 90)).save(root / folder / f"{index}.png")
            (root / folder / f"{index}.txt").write_text("a photo")
    return root


def zipped(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder.parent).as_posix())  # one top folder, as people zip
    return target


def checked(tmp_path: Path, model: Path, dataset: dict, name: str) -> dict:
    job = {**tiny_job(model, Path("/unused")), "dataset": dataset}
    result = check_job(parse_job(job), tmp_path / name, settings=Settings.from_env())
    return json.loads(json.dumps(result.to_output()))


@pytest.mark.parametrize("source", ["path", "zip"])
def test_kohya_folders_become_entries_with_their_repeats(tmp_path: Path, tiny_model: Path, source: str):
    folder = concept_dataset(tmp_path / "people", {"10_alice": 2, "5_bob": 3})
    dataset = {"path": str(folder if source == "path" else zipped(folder, tmp_path / "people.zip"))}
    output = checked(tmp_path, tiny_model, dataset, "work")
    backends = output["trainer_files"]["multidatabackend.json"]
    images = {b["id"]: b for b in backends if b.get("dataset_type") == "image"}
    assert set(images) == {"concept-10_alice", "concept-5_bob"}
    # SimpleTuner's repeats are the passes after the first: a `10_` folder is seen 10 times an epoch.
    assert images["concept-10_alice"]["repeats"] == 9 and images["concept-5_bob"]["repeats"] == 4
    assert Path(images["concept-10_alice"]["instance_data_dir"]).name == "10_alice"
    assert len(list(Path(images["concept-5_bob"]["instance_data_dir"]).glob("*.png"))) == 3
    assert images["concept-10_alice"]["cache_dir_vae"] != images["concept-5_bob"]["cache_dir_vae"]
    alice = Path(images["concept-10_alice"]["instance_data_dir"])
    captions = sorted(p.read_text().strip() for p in alice.glob("*.txt"))
    assert captions == ["alice, a photo"] * 2  # the folder's own trigger word, not the job's
    concepts = {c["name"]: c for c in output["preflight"]["concepts"]}
    assert (concepts["alice"]["samples"], concepts["bob"]["samples"]) == (20, 15)
    assert concepts["alice"]["share"] == pytest.approx(20 / 35, abs=1e-3)
    assert output["preflight"]["steps_per_epoch"] == 35


def test_plain_folders_get_repeats_from_the_job(tmp_path: Path, tiny_model: Path):
    folder = concept_dataset(tmp_path / "mixed", {"alice": 2, "bob": 2})
    Image.new("RGB", (128, 128), "white").save(folder / "loose.png")
    output = checked(tmp_path, tiny_model, {"path": str(folder), "repeats": {"alice": 10}}, "work")
    backends = output["trainer_files"]["multidatabackend.json"]
    images = {b["id"]: b for b in backends if b.get("dataset_type") == "image"}
    # alice is a concept; bob is no concept: its images and the loose one train once each, in the main entry.
    assert set(images) == {"concept-alice", "dataset"}
    assert images["concept-alice"]["repeats"] == 9 and images["dataset"]["repeats"] == 0
    assert len(list(Path(images["dataset"]["instance_data_dir"]).glob("*.png"))) == 3
    captions = sorted(p.read_text().strip() for p in Path(images["concept-alice"]["instance_data_dir"]).glob("*.txt"))
    assert captions == ["sks, a photo"] * 2  # a plain folder keeps the job's trigger word
    shares = {c["name"]: c["share"] for c in output["preflight"]["concepts"]}
    assert shares == {"alice": pytest.approx(20 / 23, abs=1e-3), "(no concept)": pytest.approx(3 / 23, abs=1e-3)}
    assert any("concept 'alice' takes 87% of the steps" in w for w in output["warnings"])


def test_a_repeats_key_must_be_a_folder_name():
    with pytest.raises(Exception) as caught:
        parse_job({"dataset": {"path": "/x", "repeats": {"a/b": 2}}, "config": {"model_name": "a/b-xl"}})
    assert getattr(caught.value, "field", "") == "dataset.repeats"
