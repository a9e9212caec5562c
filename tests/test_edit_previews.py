"""Edit models with an input image: FLUX.1 Kontext, Qwen-Image-Edit and LongCat-Image-Edit need one to render (the
playground, a generate job), and an edit job's samples edit pairs of its own dataset, held back from training with
`samples.hold_out` (core/training/sample_pairs.py, SimpleTuner's edit validation). One tiny Kontext LoRA is trained
for the module (three steps on CPU) and rendered through the playground and the worker's generate mode."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from app.sample_grid import gallery_items, sample_cells
from core.errors import JobError, SpecError
from core.generation.demo import write_demo_pairs
from core.generation.playground import GenerateRequest, Playground, parse_generate_job
from core.pipeline import run_job
from core.settings import Settings
from core.simpletuner import input_images, is_edit_model, takes_input_image
from core.spec import parse_job
from tests.support.http_server import serve_files

KONTEXT_ID = "black-forest-labs/FLUX.1-Kontext-dev"
REQUEST = GenerateRequest(prompt="turn the red circle into a square", steps=2, width=64, height=64, seed=3)


@pytest.mark.parametrize(("family", "flavour", "count"), [
    ("flux", "kontext", 1), ("qwen_image", "edit-v1", 1), ("qwen_image", "edit-v2", 3), ("qwen_image", "edit-v3", 3),
    ("longcat_image", "edit", 1), ("wan", "i2v-14b-2.1", 1), ("flux", "dev", 0), ("qwen_image", None, 0),
])
def test_the_families_table_marks_edit_models_and_how_many_images_they_take(family, flavour, count):
    assert input_images(family, flavour) == count
    assert takes_input_image(family, flavour) is (count > 0)
    assert is_edit_model(family, flavour) is (family != "wan" and count > 0)


def test_an_edit_pipelines_model_index_says_it_too(tmp_path: Path):
    index = tmp_path / "model_index.json"
    for name, count in (("FluxKontextPipeline", 1), ("QwenImageEditPlusPipeline", 3), ("LongCatImageEditPipeline", 1),
                        ("FluxPipeline", 0)):
        index.write_text(json.dumps({"_class_name": name}))
        assert input_images("flux", None, model_index=index) == count, name
        assert is_edit_model("flux", None, model_index=index) is (count > 0), name


def fake_model(folder: Path, pipeline: str) -> Path:
    """A model folder whose model_index.json names `pipeline`: enough for the checks made before anything loads."""
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": pipeline}))
    return folder


def picture(path: Path, colour: tuple[int, int, int], *, circle: bool = True) -> Path:
    from PIL import ImageDraw

    image = Image.new("RGB", (96, 64), (245, 245, 240))
    (ImageDraw.Draw(image).ellipse if circle else ImageDraw.Draw(image).rectangle)((20, 10, 70, 54), fill=colour)
    image.save(path)
    return path


def test_too_many_input_images_are_refused_before_the_process_starts(tmp_path: Path):
    playground = Playground(settings=Settings.from_env({}))
    images = [picture(tmp_path / f"{i}.png", (200, 30, 30)) for i in range(4)]
    kontext = fake_model(tmp_path / "kontext", "FluxKontextPipeline")
    plus = fake_model(tmp_path / "plus", "QwenImageEditPlusPipeline")
    with pytest.raises(JobError) as two:
        playground.generate(REQUEST, model=str(kontext), lora=None, out_dir=tmp_path, name="x", input_image=images[:2])
    with pytest.raises(JobError) as four:
        playground.generate(REQUEST, model=str(plus), lora=None, out_dir=tmp_path, name="x", input_image=images)
    assert not playground.running
    assert two.value.field == "input_image" and "takes 1 input image per render, 2 given" in two.value.message
    assert "FluxKontextPipeline" in two.value.message
    assert four.value.field == "input_image" and "takes 3 input images per render, 4 given" in four.value.message
    with pytest.raises(SpecError) as listed:  # a generate job's list is bounded before any download
        parse_generate_job({"mode": "generate", "model": "a/b", "prompt": "x", "input_image": ["a", "b", "c", "d"]})
    assert listed.value.field == "input_image" and "1 to 3 images" in listed.value.message


def edit_job(model: str, dataset: Path, **samples) -> dict:
    return {"dataset": {"path": str(dataset)},
            "config": {"model_name": model, "resolution": 64, "max_train_steps": 3, "checkpointing_steps": 2,
                       "lora_rank": 2, "seed": 42, "learning_rate": 0.01},
            "dataloader": {"minimum_image_size": 64}, **({"samples": samples} if samples else {})}


def test_an_edit_jobs_samples_fields_are_checked_naming_them(tmp_path: Path):
    parse_job({**edit_job(KONTEXT_ID, tmp_path), "samples": {"hold_out": 1}})  # no prompts: the instructions
    with pytest.raises(SpecError) as no_prompt:
        parse_job({**edit_job("black-forest-labs/FLUX.1-dev", tmp_path), "samples": {"steps": 2}})
    assert no_prompt.value.field == "samples.prompts"
    with pytest.raises(SpecError) as hold:
        parse_job({**edit_job("black-forest-labs/FLUX.1-dev", tmp_path), "samples": {"prompts": ["x"], "hold_out": 1}})
    assert hold.value.field == "samples.hold_out" and "no edit model" in hold.value.message
    with pytest.raises(SpecError) as image:
        parse_job({**edit_job(KONTEXT_ID, tmp_path), "samples": {"prompts": ["x"], "input_image": "aGk="}})
    assert image.value.field == "samples.input_image" and "dataset's pairs" in image.value.message


def test_a_dry_run_holds_a_pair_back_and_stages_the_samples_dataset(tmp_path: Path, tiny_kontext: Path, settings):
    pairs = write_demo_pairs(tmp_path / "pairs", count=4)
    job = {**edit_job(str(tiny_kontext), pairs, hold_out=2, prompts=["a", "b", "c"]), "dry_run": True}
    result = run_job(parse_job(job), tmp_path / "job", settings=settings)
    staged = tmp_path / "job" / "dataset"
    assert sorted(p.name for p in (staged / "images").glob("*.png")) == ["pair_002.png", "pair_003.png"]
    assert sorted(p.name for p in (staged / "control").glob("*.png")) == ["pair_002.png", "pair_003.png"]
    assert result.preflight["pairs"]["pairs"] == 2 and result.preflight["pairs"]["held_out"] == 2  # what trains
    # Three prompts over the two held-back pairs: the third edits the first pair again.
    samples = staged / "samples"
    assert [p.read_text() for p in sorted(samples.glob("*.txt"))] == ["a", "b", "c"]
    assert (samples / "sample_02.png").read_bytes() == (samples / "sample_00.png").read_bytes() \
        == (pairs / "pair_000.png").read_bytes()
    assert (staged / "samples_control" / "sample_01.png").read_bytes() == \
        (pairs / "control" / "pair_001.png").read_bytes()
    backends = {b["id"]: b for b in result.trainer_files["multidatabackend.json"]}
    assert backends["dataset"]["disable_validation"] is True and backends["dataset"]["conditioning_data"] == "control"
    assert backends["sample"]["probability"] == 0 and backends["sample"]["conditioning_data"] == "sample_control"
    assert backends["sample_control"]["conditioning_type"] == "reference_strict"
    config = result.trainer_files["config.json"]
    assert config["--num_eval_images"] == 3 and config["--validation_stitch_input_location"] == "right"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_kontext: Path, settings):
    """Three steps on tiny Kontext from four pairs, one held back for the samples (no prompts: its instruction):
    SimpleTuner renders step 2's sample, the run renders step 3's."""
    root = tmp_path_factory.mktemp("edit-run")
    pairs = write_demo_pairs(root / "pairs", count=4)
    spec = parse_job(edit_job(str(tiny_kontext), pairs, hold_out=1, steps=2, every=2))
    return run_job(spec, root / "job", settings=settings), pairs


@pytest.mark.training
def test_samples_edit_the_held_back_pair_with_its_instruction(trained):
    result, pairs = trained
    assert result.status == "succeeded" and result.metrics.steps == 3
    by_step = {entry["step"]: entry["images"] for entry in result.to_output()["samples"]}
    assert sorted(by_step) == [2, 3]  # SimpleTuner's at step 2, the run's own at the last step
    assert {image["prompt"] for images in by_step.values() for image in images} == {
        (pairs / "pair_000.txt").read_text()}
    log = (result.job_dir / "training.log").read_text(errors="replace")
    assert "Collected 1 edit-validation samples" in log
    trained_on = json.loads((result.job_dir / "dataset" / "images" / "aspect_ratio_bucket_indices_dataset.json")
                            .read_text())
    assert "pair_000" not in json.dumps(trained_on) and "pair_001" in json.dumps(trained_on)

    cells, columns = sample_cells(parse_job(edit_job(KONTEXT_ID, pairs, hold_out=1)), result.job_dir)
    items, item_columns = gallery_items(cells, columns=columns)
    assert item_columns == 3 and len(items) == 6  # two steps: input, result, expected each
    (input_path, input_caption), (_, result_caption), (expected, expected_caption) = items[:3]
    assert Path(input_path).read_bytes() == (pairs / "control" / "pair_000.png").read_bytes()
    assert Path(expected).read_bytes() == (pairs / "pair_000.png").read_bytes()
    assert input_caption.startswith("input · turn the") and result_caption.startswith("step 2 · turn the")
    assert expected_caption.startswith("expected · ")


@pytest.mark.training
def test_the_trained_lora_edits_an_input_image_in_the_playground_and_a_generate_job(trained, tiny_kontext: Path,
                                                                                   settings, tmp_path, monkeypatch):
    from worker.handler import handler

    result, _ = trained
    red = picture(tmp_path / "red.png", (220, 30, 30))
    playground = Playground(settings=settings)
    try:
        with pytest.raises(JobError) as missing:
            playground.generate(REQUEST, model=str(tiny_kontext), lora=result.lora_path, out_dir=tmp_path, name="no")
        edited = playground.generate(REQUEST, model=str(tiny_kontext), lora=result.lora_path, out_dir=tmp_path,
                                     name="lora", input_image=red)
        base = playground.generate(REQUEST, model=str(tiny_kontext), lora=None, out_dir=tmp_path, name="base",
                                   input_image=red)
        other = playground.generate(REQUEST, model=str(tiny_kontext), lora=result.lora_path, out_dir=tmp_path,
                                    name="blue", input_image=picture(tmp_path / "blue.png", (30, 60, 220)))
    finally:
        playground.stop()
    assert missing.value.field == "input_image" and "an edit model: give input_image" in missing.value.message
    assert edited.input_image == {"width": 64, "height": 64, "pipeline": "FluxKontextPipeline", "conditions": "edit",
                                  "images": 1}
    pixels = [list(Image.open(r.images[0]).convert("RGB").getdata()) for r in (edited, base, other)]
    assert Image.open(edited.images[0]).size == (64, 64)
    assert pixels[0] != pixels[1]  # the LoRA changed the render
    assert pixels[0] != pixels[2]  # and another input image gives another one at the same seed

    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ALLOW_PRIVATE_URLS", "1")
    served = tmp_path / "served"
    served.mkdir()
    shutil.copyfile(result.lora_path, served / "edit.safetensors")
    job = {"mode": "generate", "model": str(tiny_kontext), "prompt": REQUEST.prompt, "steps": 2, "width": 64,
           "height": 64, "seed": 3}
    with serve_files(served) as server:
        job["lora"] = server.url("edit.safetensors")
        refused = asyncio.run(handler({"id": "edit-none", "input": job}))
        output = asyncio.run(handler({"id": "edit-1", "input": {
            **job, "input_image": "data:image/png;base64," + base64.b64encode(red.read_bytes()).decode()}}))
    assert refused["error"]["field"] == "input_image" and refused["error"]["code"] == "invalid_input", refused
    assert output.get("status") == "succeeded", output
    assert output["input_image"]["conditions"] == "edit" and output["input_image"]["pipeline"] == "FluxKontextPipeline"
    [answer] = output["images"]
    with Image.open(io.BytesIO(base64.b64decode(answer["base64"]))) as png:
        assert png.size == (64, 64)
        assert list(png.convert("RGB").getdata()) == pixels[0]  # the same LoRA, image and seed as the playground's
