"""Edit pairs in the UI. The store (without the app): a pair dataset loads with each input kept beside its target
(images/control/), shows as one picture per pair (input left, target right), lists the unpaired file with its reason,
replaces either side of a pair, and the folder it hands the job stages as pairs again. The edit presets (one per
edit family, the Hub id as the Hub spells it). Then, in a real browser (Debian Chromium driven by Playwright): upload a
pair zip, see the pairs side by side, replace one input, edit one instruction, see the unpaired file reported by
*Check dataset*, and train the tiny FLUX.1 Kontext two steps from the Train tab with the Kontext preset."""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from app.dataset_store import DatasetStore
from app.job_form import spec_from_form
from app.presets import EDIT_PRESETS, preset_fields, presets
from core.dataset import stage_dataset
from core.errors import DatasetError
from core.generation.demo import write_demo_pairs
from core.settings import Settings
from core.simpletuner import edit_inputs, hub_ids
from core.spec import DatasetSpec
from tests.test_app_api import launch
from tests.test_app_browser import ARGS, CHROMIUM, open_tab
from tests.test_video_browser import choose

TRAINING_MS = 600_000
PAIRS = 3
RED_INPUT = (220, 30, 30)


def pair_folder(folder: Path) -> Path:
    """Three pairs (control/ layout) and lonely.png, a target without its input."""
    write_demo_pairs(folder, count=PAIRS)
    Image.new("RGB", (128, 128), (10, 120, 200)).save(folder / "lonely.png")
    (folder / "lonely.txt").write_text("turn the blue circle into a square")
    return folder


def pair_zip(folder: Path) -> Path:
    source = pair_folder(folder / "edits")
    target = folder / "edits.zip"
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(source.rglob("*")):
            if path.is_file():
                archive.write(path, f"edits/{path.relative_to(source).as_posix()}")
    return target


def test_a_pair_dataset_shows_side_by_side_lists_the_unpaired_and_replaces_either_side(tmp_path: Path):
    settings = Settings.from_env({**os.environ, "DATA_DIR": str(tmp_path / "data")})
    store = DatasetStore(settings=settings)
    manifest = store.load(DatasetSpec(path=str(pair_folder(tmp_path / "source"))))
    assert manifest.pairs is not None and len(manifest.images) == PAIRS
    assert [p.name for p in store.input_folders()] == ["control"] and store.is_pairs()
    assert sorted(p.name for p in (store.images_dir / "control").iterdir()) == [f"pair_{i:03d}.png" for i in range(3)]
    assert store.unpaired() == [{"name": "lonely.png", "reason": "edit target without an input",
                                 "detail": "no input found at control/lonely.*"}]

    page = store.page(1)
    assert page.pairs and (page.images, page.unpaired) == (PAIRS, 1)
    assert [name for *_, name in page.items] == ["pair_000.png", "pair_001.png", "pair_002.png", "lonely.png"]
    assert page.items[0][1] == "turn the red circle into a square"
    assert page.items[-1][1] == ("lonely.png · unpaired: edit target without an input "
                                 "(no input found at control/lonely.*)")
    with Image.open(page.items[0][0]) as picture:  # the input (a circle) left, the target (a square) right
        width, height = picture.size
        corner_left, corner_right = picture.getpixel((width // 4 - 32, height // 2 - 32)), \
            picture.getpixel((3 * width // 4 - 32, height // 2 - 32))
    assert sum(corner_left) > 600 and corner_right[0] > 150 and corner_right[1] < 100  # circle's corner is background

    Image.new("RGB", (128, 128), RED_INPUT).save(tmp_path / "new-input.png")
    written = store.replace_side("pair_001.png", "input", tmp_path / "new-input.png")
    assert written == store.images_dir / "control" / "pair_001.png"
    with Image.open(written) as image:
        assert image.getpixel((2, 2)) == RED_INPUT
    Image.new("RGB", (96, 64), (0, 0, 0)).save(tmp_path / "new-target.jpg")
    store.replace_side("pair_002.png", "target", tmp_path / "new-target.jpg")
    with Image.open(store.images_dir / "pair_002.png") as image:
        assert image.format == "PNG" and image.size == (96, 64)  # saved in the format of the file it replaced
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(DatasetError, match=r"notes\.png is not an image") as raised:
        store.replace_side("pair_000.png", "input", tmp_path / "notes.png")
    assert raised.value.field == "replace_input"
    assert json.loads((store.root / "source.json").read_text()) == {"path": str(store.images_dir)}

    # What the job stages from the curated folder: the same pairs, the replaced input under its target's name.
    staged = stage_dataset(DatasetSpec(path=str(store.images_dir)), tmp_path / "job", settings=settings)
    assert staged.pairs is not None and len(staged.images) == PAIRS and not staged.skipped
    with Image.open(tmp_path / "job" / "control" / "pair_001.png") as image:
        assert image.getpixel((2, 2)) == RED_INPUT


def test_an_image_dataset_has_no_pairs_and_refuses_a_side(tmp_path: Path):
    settings = Settings.from_env({**os.environ, "DATA_DIR": str(tmp_path / "data")})
    store = DatasetStore(settings=settings)
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (96, 96), (1, 2, 3)).save(folder / "a.png")
    store.load(DatasetSpec(path=str(folder)))
    assert not store.is_pairs() and not store.page(1).pairs and store.unpaired() == []
    with pytest.raises(DatasetError, match="no edit pairs"):
        store.replace_side("a.png", "input", folder / "a.png")


@pytest.mark.parametrize("name", list(EDIT_PRESETS))
def test_each_edit_preset_names_the_hub_model_as_spelled_and_makes_an_edit_job(settings: Settings, name: str):
    family, flavour, hub_id = EDIT_PRESETS[name]
    values = presets(settings=settings)[name]
    assert values["base_model"] == hub_id and hub_ids(family)[flavour].lower() == hub_id.lower()
    assert "Edit model: trains on pairs" in values["note"] and values["resolution"] >= 512
    fields = {**preset_fields(name, settings=settings), "dataset": '{"path": "/data/set"}', "trigger_word": "",
              "repo_id": "", "private": True}
    spec = spec_from_form(fields)
    assert spec.model_family == family and spec.config.get("model_flavour", flavour) == flavour
    assert edit_inputs(spec.model_family, spec.config.get("model_flavour") or flavour) >= 1


def test_the_kontext_preset_keeps_the_hubs_spelling_and_qwen_lists_its_flavours(settings: Settings):
    names = set(presets(settings=settings))
    assert {"FLUX.1 Kontext dev (edit)", "LongCat-Image-Edit"} <= names
    assert {flavour for family, flavour, _ in EDIT_PRESETS.values() if family == "qwen_image"} == {
        flavour for flavour in hub_ids("qwen_image") if flavour.startswith("edit")}
    assert presets(settings=settings)["FLUX.1 Kontext dev (edit)"]["base_model"] == \
        "black-forest-labs/FLUX.1-Kontext-dev"


# -- in a real browser ---------------------------------------------------------------------------------------------


@dataclass
class TrainedPage:
    page: Any
    job_dir: Path
    store_dir: Path
    report: str


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model: Path, tiny_kontext: Path) -> Iterator[TrainedPage]:
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)")
    from playwright.sync_api import expect, sync_playwright

    area = tmp_path_factory.mktemp("pairs-browser")
    data_root = area / "data"
    ui, url = launch(data_root, tiny_model)
    kontext = data_root / "models" / "tiny-flux-kontext"
    kontext.symlink_to(tiny_kontext, target_is_directory=True)
    Image.new("RGB", (128, 128), RED_INPUT).save(area / "new-input.png")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(30_000)
            page.goto(url)

            open_tab(page, "Dataset")
            page.locator("#dataset-upload input[type=file]").set_input_files(str(pair_zip(area / "upload")))
            expect(page.get_by_text(re.compile(r"Loaded 3 edit pairs \(1 input each\)"))).to_be_visible(timeout=60_000)
            expect(page.get_by_text(re.compile(r"1 edit target without an input"))).to_be_visible()
            expect(page.get_by_text("Page 1 of 1 · 3 pairs (input, then target) · 1 files unpaired "
                                    "(listed last, with the reason)")).to_be_visible()

            # A pair: its input left of its target.
            page.locator("button.thumbnail-item").first.click()
            expect(page.get_by_role("textbox", name="Selected file")).to_have_value("pair_000.png")
            pair_input, target = page.locator("#pair-input img"), page.locator("#selected-image img")
            expect(pair_input).to_be_visible()
            expect(target).to_be_visible()
            left, right = pair_input.bounding_box(), target.bounding_box()
            assert left["x"] + left["width"] <= right["x"] and abs(left["y"] - right["y"]) < 40
            expect(page.get_by_text("Target (after)")).to_be_visible()
            instruction = page.get_by_label("Instruction")
            expect(instruction).to_have_value("turn the red circle into a square")

            with page.expect_file_chooser() as chooser:
                page.get_by_role("button", name="Replace input").click()
            chooser.value.set_files(str(area / "new-input.png"))
            expect(page.get_by_text("Replaced the input of pair_000.png.")).to_be_visible()
            instruction.fill("turn the red circle into a red square")
            page.get_by_role("button", name="Save caption").click()
            expect(page.get_by_text("Saved the caption of pair_000.png.")).to_be_visible()

            open_tab(page, "Config")
            page.get_by_label("FLUX.1 Kontext dev (edit)").check()
            base_model = page.get_by_label("Base model")
            expect(base_model).to_have_value("black-forest-labs/FLUX.1-Kontext-dev")
            base_model.fill(str(kontext))  # the tiny Kontext in place of the Hub's: a CPU trains it
            choose(page, "Optimizer", "torch-adamw")
            for label, value in (("LoRA rank", "2"), ("Resolution", "64"), ("Steps or epochs", "2")):
                page.get_by_label(label).fill(value)
            page.get_by_role("button", name="Advanced").click()
            page.get_by_label("Other job fields (JSON)").fill(json.dumps({"dataloader": {"minimum_image_size": 64}}))

            open_tab(page, "Dataset")
            page.get_by_role("button", name="Check dataset").click()
            expect(page.get_by_text(re.compile("unpaired lonely.png: edit target without an input"))).to_be_visible(
                timeout=120_000)
            report_text = page.locator("#dataset-report").inner_text()

            open_tab(page, "Train")
            page.get_by_role("button", name="Start training").click()
            expect(page.get_by_text(re.compile(r"Started run"))).to_be_visible()
            expect(page.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100", timeout=TRAINING_MS)
            run = ui.registry.training()
            yield TrainedPage(page=page, job_dir=Path(run.job_dir), store_dir=data_root / "dataset",
                              report=report_text)
            browser.close()
    finally:
        ui.registry.shutdown()
        ui.blocks.close()


@pytest.mark.browser
@pytest.mark.training
def test_the_check_reports_the_pairs_and_the_unpaired_file(trained):
    assert "ready to train" in trained.report
    assert "Edit pairs: 3 (1 input each, control/; control folders), 1 files unpaired" in trained.report
    assert "unpaired lonely.png: edit target without an input (no input found at control/lonely.*)" in trained.report


@pytest.mark.browser
@pytest.mark.training
def test_the_ui_trains_kontext_on_the_curated_pairs(trained):
    from playwright.sync_api import expect

    expect(trained.page.get_by_text(re.compile(r"Finished · .*step 2/2"))).to_be_visible()
    assert (trained.job_dir / "output" / "pytorch_lora_weights.safetensors").stat().st_size > 0
    config = json.loads((trained.job_dir / "trainer" / "config" / "config.json").read_text())
    assert config["--model_flavour"] == "kontext"
    log = (trained.job_dir / "training.log").read_text(errors="replace")
    assert "Connected conditioning datasets: ['control']" in log
    # It trained on the pairs as curated: the replaced input and the edited instruction.
    staged = trained.job_dir / "dataset"
    with Image.open(staged / "control" / "pair_000.png") as image:
        assert image.getpixel((2, 2)) == RED_INPUT
    assert (staged / "images" / "pair_000.txt").read_text().strip() == "turn the red circle into a red square"
