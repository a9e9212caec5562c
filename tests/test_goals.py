"""Goal presets: the same dataset planned for a likeness, a style and an object gives three different plans, each
value explained; the job's own values win; `python -m core check` shows the plan and trains with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from core.dataset import caption_options, stage_dataset
from core.errors import SpecError
from core.settings import Settings
from core.simpletuner import recipe_for
from core.spec import parse_job
from core.training import apply_goal, plan_goal
from tests.conftest import tiny_job
from tests.test_cli import core_cli

CONFIG = {"model_family": "sdxl", "model_name": "some/sdxl-model"}


def staged(tmp_path: Path, job: dict, *, count: int = 15, caption: str = "a photo of a woman smiling"):
    source = tmp_path / "src"
    if not source.exists():
        source.mkdir()
        for index in range(count):
            Image.new("RGB", (256, 256), (index * 10, 100, 200)).save(source / f"{index}.png")
            if caption:
                (source / f"{index}.txt").write_text(caption)
    spec = parse_job({"dataset": {"path": str(source)}, "config": CONFIG, "trigger_word": "ohwx", **job})
    return spec, stage_dataset(spec.source, tmp_path / f"job-{job.get('goal')}", captions=caption_options(spec),
                               settings=Settings.from_env({}))


def test_each_goal_gives_a_different_explained_plan(tmp_path: Path):
    plans = {goal: plan_goal(*staged(tmp_path, {"goal": goal})) for goal in ("likeness", "style", "object")}
    rate = recipe_for("sdxl", None, gpu_memory_gb=None).settings["learning_rate"]
    likeness, style, obj = plans["likeness"], plans["style"], plans["object"]
    assert likeness and style and obj
    assert likeness.config["lora_rank"] == 16 and style.config["lora_rank"] == 32 and obj.config["lora_rank"] == 16
    assert likeness.config["learning_rate"] == rate and style.config["learning_rate"] == rate / 2
    assert (likeness.config["max_train_steps"], style.config["max_train_steps"], obj.config["max_train_steps"]) \
        == (1500, 1000, 1200)
    assert likeness.backend["crop"] is False and obj.backend == {"crop": True, "crop_style": "center",
                                                                 "crop_aspect": "square",
                                                                 "caption_dropout_probability": 0.05}
    assert "likeness: 1,500 steps = 15 images x 100 (kohya" in "\n".join(likeness.reasons)
    assert "style: 1,000 steps = 15 images x 40, bounded to 1,000-4,000" in "\n".join(style.reasons)
    assert any(r.startswith("likeness: rank 16 because ai-toolkit") for r in likeness.reasons)
    assert any("captions lead with 'ohwx woman'" in r and "'woman' taken from 15 of 15 captions" in r
               for r in likeness.reasons)
    assert any("captions are full descriptions" in r for r in style.reasons)
    assert any("set class_word" in r for r in obj.reasons)  # an object's class word is not guessed
    resolution = recipe_for("sdxl", None, gpu_memory_gb=None).settings["resolution"]
    assert all(plan.config["resolution"] == resolution for plan in plans.values())


def test_the_jobs_own_values_win(tmp_path: Path):
    spec, manifest = staged(tmp_path, {"goal": "likeness", "config": {**CONFIG, "lora_rank": 8, "max_train_steps": 300},
                                       "dataloader": {"crop": True}})
    plan = plan_goal(spec, manifest)
    assert plan is not None
    assert plan.kept == {"lora_rank": 8, "max_train_steps": 300, "crop": True}
    assert "lora_rank" not in plan.config and "max_train_steps" not in plan.config
    applied = apply_goal(spec, plan)
    assert applied.config["lora_rank"] == 8 and applied.config["max_train_steps"] == 300
    assert applied.config["learning_rate"] == plan.config["learning_rate"]
    assert applied.dataloader.backend_overrides["crop"] is True  # type: ignore[union-attr]
    assert any("lora_rank 8 as the job sets (the goal's: 16)" in r for r in plan.reasons)


def test_no_goal_is_todays_behaviour(tmp_path: Path):
    spec, manifest = staged(tmp_path, {})
    assert plan_goal(spec, manifest) is None and apply_goal(spec, None) is spec


def test_a_class_word_leads_the_captions_that_lack_the_trigger(tmp_path: Path):
    spec, manifest = staged(tmp_path, {"goal": "likeness", "class_word": "man"}, count=3, caption="")
    assert [entry.caption for entry in manifest.images] == ["ohwx man"] * 3
    plan = plan_goal(spec, manifest)
    assert plan is not None and plan.class_word == "man"


@pytest.mark.parametrize(("job", "field"), [({"goal": "portrait"}, "goal"), ({"class_word": "a, b"}, "class_word")])
def test_bad_goal_fields_name_the_field(job: dict, field: str):
    with pytest.raises(SpecError) as caught:
        parse_job({"dataset": {"path": "/x"}, "config": CONFIG, **job})
    assert caught.value.field == field


def test_check_shows_the_plan_and_trains_with_it(tmp_path: Path, tiny_model: Path, demo_dataset: Path):
    job = tiny_job(tiny_model, demo_dataset, goal="object")
    for key in ("max_train_steps", "lora_rank"):
        job["config"].pop(key)
    (tmp_path / "job.json").write_text(json.dumps({"input": job}))
    done = core_cli("check", str(tmp_path / "job.json"), "--workdir", str(tmp_path / "work"))
    assert done.returncode == 0, done.stdout + done.stderr
    output = json.loads(done.stdout)
    goal, config = output["preflight"]["goal"], output["trainer_files"]["config.json"]
    assert goal["goal"] == "object" and goal["config"]["max_train_steps"] == 600
    assert "object: 600 steps = 6 images x 80, bounded to 600-2,500" in "\n".join(goal["reasons"])
    assert goal["kept"]["resolution"] == 128  # the job's own
    assert config["--max_train_steps"] == 600 and config["--lora_rank"] == 16 and config["--lora_alpha"] == 16
    assert output["preflight"]["total_steps"] == 600
    image = output["trainer_files"]["multidatabackend.json"][0]
    assert image["crop"] is True and image["crop_aspect"] == "square" and image["resolution"] == 128
