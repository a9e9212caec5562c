"""An edit run's model card shows a few training pairs before and after: small copies of the input and the target
with the instruction, planned into the repo's one commit (pairs/...), linked by their repo paths only."""

from __future__ import annotations

import re
from pathlib import Path

from huggingface_hub import ModelCard
from PIL import Image

from core.publishing.card import CardFacts, render_model_card
from core.publishing.card_pairs import CARD_IMAGE_PX, card_pairs
from core.publishing.hub_repo import plan_hub_commit
from tests.test_publish import card_facts, write_lora_output


def staged_pairs(root: Path, *, count: int = 4, size: int = 900) -> Path:
    """A job's staged edit dataset: images/NAME.png (+ .txt), control/NAME.png; one target without its input."""
    dataset = root / "dataset"
    (dataset / "images").mkdir(parents=True)
    (dataset / "control").mkdir()
    for index in range(count):
        name = f"shape {index}.png"  # a space: the repo name is made safe
        Image.new("RGB", (size, size // 2), (40 * index, 200, 40)).save(dataset / "images" / name)
        (dataset / "images" / name).with_suffix(".txt").write_text(f"turn circle {index} into a square\n")
        if index != 0:
            Image.new("RGB", (size, size // 2), (200, 40 * index, 40)).save(dataset / "control" / name)
    return dataset


def test_the_first_whole_pairs_are_written_small_with_their_instruction(tmp_path: Path):
    dataset = staged_pairs(tmp_path)
    pairs = card_pairs(dataset, input_folders=["control"], out=tmp_path / "card", limit=2)
    # shape 0 has no input: the first two whole pairs are 1 and 2.
    assert [pair.instruction for pair in pairs] == ["turn circle 1 into a square", "turn circle 2 into a square"]
    assert pairs[0].inputs == ["pairs/01-shape-1_input.png"] and pairs[0].output == "pairs/01-shape-1_output.png"
    for pair in pairs:
        assert set(pair.files) == {*pair.inputs, pair.output}
        for path in pair.files.values():
            assert path.parent == tmp_path / "card"
            with Image.open(path) as image:
                assert image.size == (CARD_IMAGE_PX, CARD_IMAGE_PX // 2)
    with Image.open(pairs[0].files[pairs[0].inputs[0]]) as image:  # the input's colour, not the target's
        assert image.getpixel((5, 5))[0] > 150


def test_no_staged_pairs_no_examples(tmp_path: Path):
    assert card_pairs(tmp_path / "gone", input_folders=["control"], out=tmp_path / "card") == []
    assert card_pairs(staged_pairs(tmp_path), input_folders=[], out=tmp_path / "card") == []


def test_the_card_shows_the_pairs_and_the_commit_uploads_their_images(tmp_path: Path):
    pairs = card_pairs(staged_pairs(tmp_path), input_folders=["control"], out=tmp_path / "card")
    facts = card_facts(base_model="black-forest-labs/FLUX.1-Kontext-dev", model_family="flux", trigger_word=None,
                       config={"--model_flavour": "kontext", "--lora_rank": 4}, validation=[], pairs=pairs,
                       dataset_pairs=3)
    text = render_model_card(facts)
    assert "## Before and after" in text
    assert ("| ![input](pairs/01-shape-1_input.png) | turn circle 1 into a square | "
            "![output](pairs/01-shape-1_output.png) |") in text
    assert str(tmp_path) not in text and "/card/" not in text  # repo paths only
    rows = dict(re.findall(r"^\| ([^|]+?) \| (.+?) \|$", text, re.M))
    assert rows["Dataset size"] == "3 edit pairs"
    data = ModelCard(text).data.to_dict()
    assert data["pipeline_tag"] == "image-to-image" and "text-to-image" not in data["tags"]
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    compile(code, "snippet", "exec")
    assert "FluxKontextPipeline.from_pretrained(" in code
    assert 'pipeline(image=source, prompt="turn circle 1 into a square")' in code

    operations = plan_hub_commit(write_lora_output(tmp_path), facts=facts, include_checkpoints=False)
    planned = {op.path_in_repo: op for op in operations}
    shown = [path for pair in pairs for path in (*pair.inputs, pair.output)]
    assert len(shown) == 6 and set(shown) <= set(planned)
    assert planned[shown[0]].path_or_fileobj == str(pairs[0].files[shown[0]])


def test_a_text_to_image_card_has_no_pairs_section():
    text = render_model_card(CardFacts(repo_id="t/x", base_model="black-forest-labs/FLUX.1-dev", model_family="flux",
                                       trigger_word="sks", steps=1, final_loss=None, elapsed_s=None, dataset_size=3,
                                       config={"--model_flavour": "dev"}, validation=[]))
    assert "Before and after" not in text and "load_image" not in text
    assert ModelCard(text).data.to_dict()["pipeline_tag"] == "text-to-image"


def test_the_config_shows_the_jobs_own_paths_relative_to_its_folder():
    job = "/data/jobs/job-1234"
    text = render_model_card(CardFacts(
        repo_id="t/x", base_model="black-forest-labs/FLUX.1-Kontext-dev", model_family="flux", trigger_word=None,
        steps=1, final_loss=None, elapsed_s=None, dataset_size=3, validation=[], job_dir=job,
        config={"--data_backend_config": f"{job}/trainer/config/multidatabackend.json", "--output_dir": f"{job}/output",
                "--model_flavour": "kontext"}))
    assert job not in text
    assert '"--data_backend_config": "trainer/config/multidatabackend.json"' in text
    assert '"--output_dir": "output"' in text
