"""A dataset's regularisation images (reg/), held-out images (eval/ or dataset.eval_share) and masks
(NAME.mask.png): staged apart, turned into SimpleTuner backends, and really trained on a tiny SDXL, whose evaluation
loss at each checkpoint reaches the events, the status, the result and hub.checkpoint "best". Also the sample
prompts with settings of their own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from core.dataset import CaptionOptions, stage_dataset
from core.errors import SpecError
from core.events import EvalLoss, TrainingProgress
from core.generation.demo import write_demo_dataset
from core.jobdir import JobDir
from core.spec.job import DatasetSpec, parse_job
from core.status import JobStatus, apply
from core.training.config import build_trainer_files
from core.training.eval_loss import EvalLossReader
from core.training.samples import pick_checkpoint, sample_labels, sample_library
from core.training.subsets import subsets_report
from tests.conftest import tiny_job


def dataset_with_subsets(root: Path, *, count: int = 4) -> Path:
    """`count` training images, two in reg/ and two in eval/, a mask for demo_000 (half its size, so it is
    resized), a black one for demo_001, and a mask of no image."""
    src = write_demo_dataset(root, count=count)
    write_demo_dataset(src / "reg", count=2)
    write_demo_dataset(src / "eval", count=2)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    mask.save(src / "demo_000.mask.png")
    Image.new("L", (128, 128), 0).save(src / "demo_001.mask.png")
    Image.new("L", (128, 128), 255).save(src / "ghost.mask.png")
    return src


def staged(src: Path, dest: Path, settings, **dataset) -> object:
    return stage_dataset(DatasetSpec(path=str(src), **dataset), dest, settings=settings,
                         captions=CaptionOptions(trigger_word="sks"))


def test_reg_eval_and_masks_are_staged_apart(tmp_path: Path, settings):
    manifest = staged(dataset_with_subsets(tmp_path / "src"), tmp_path / "dest", settings)
    subsets = manifest.subsets
    assert sorted(e.path.name for e in manifest.images) == [f"demo_00{i}.png" for i in range(4)]
    assert [p.name for p in subsets.reg] == ["reg__demo_000.png", "reg__demo_001.png"]
    assert [p.name for p in subsets.eval] == ["eval__demo_000.png", "eval__demo_001.png"]
    # Regularisation captions are the class's, without the trigger word; held-out ones are the dataset's.
    assert not (tmp_path / "dest/reg/reg__demo_000.txt").read_text().startswith("sks")
    assert (tmp_path / "dest/eval/eval__demo_000.txt").read_text().startswith("sks, ")
    # Every training image has a mask of its file name and size: its own (resized), or a white one.
    masks = tmp_path / "dest/masks"
    assert sorted(p.name for p in masks.iterdir()) == [e.path.name for e in manifest.images]
    with Image.open(masks / "demo_000.png") as resized, Image.open(masks / "demo_002.png") as white:
        assert resized.size == (128, 128) and resized.getpixel((64, 64))[0] == 255 and resized.getpixel((2, 2))[0] == 0
        assert white.getextrema()[0] == (255, 255)
    assert (subsets.masks, subsets.masks_filled, subsets.masks_resized) == (2, 2, ["demo_000.mask.png"])
    assert [(s.name, s.reason) for s in manifest.skipped] == [("ghost.mask.png", "mask without an image")]


def test_eval_share_holds_out_the_same_images_each_time(tmp_path: Path, settings):
    src = write_demo_dataset(tmp_path / "src", count=10)
    first = staged(src, tmp_path / "a", settings, eval_share=0.2)
    again = staged(src, tmp_path / "b", settings, eval_share=0.2)
    assert len(first.images) == 8 and first.subsets.held_out == 2
    assert [p.name for p in first.subsets.eval] == [p.name for p in again.subsets.eval]
    assert not {p.name for p in first.subsets.eval} & {e.path.name for e in first.images}
    with pytest.raises(SpecError) as too_much:
        parse_job({**tiny_job(Path("/m"), src), "dataset": {"path": str(src), "eval_share": 0.9}})
    assert too_much.value.field == "dataset.eval_share"


def test_a_dataset_with_reg_yields_a_regularisation_backend(tmp_path: Path, settings):
    manifest = staged(dataset_with_subsets(tmp_path / "src"), tmp_path / "dest", settings)
    spec = parse_job(tiny_job(Path("/models/tiny"), tmp_path / "src"))
    job = JobDir(tmp_path / "job").create()
    files = build_trainer_files(spec, images_dir=manifest.root, job=job, device="cpu", subsets=manifest.subsets)
    backends = {b["id"]: b for b in files.backends}
    assert backends["regularisation"]["is_regularisation_data"] is True
    assert backends["regularisation"]["instance_data_dir"] == str(tmp_path / "dest/reg")
    assert backends["dataset"]["conditioning_data"] == "masks"
    assert backends["masks"]["conditioning_type"] == "mask" and backends["masks"]["dataset_type"] == "conditioning"
    assert backends["eval"]["dataset_type"] == "eval"
    assert "conditioning_data" not in backends["regularisation"] and "conditioning_data" not in backends["eval"]
    config = files.config
    assert config["--eval_steps_interval"] == 5 and config["--num_eval_images"] == 2  # the checkpoint interval
    assert config["--report_to"] == "simpletuner" and config["--validation_disable"] is False
    report, warnings = subsets_report(manifest, spec)
    assert report["regularisation_images"] == 2 and report["unpaired_masks"] == ["ghost.mask.png: mask without an "
                                                                                  "image"]
    assert any("resized" in w for w in warnings) and any("whole image" in w for w in warnings)


def test_the_eval_loss_is_read_line_by_line_from_simpletuners_metrics(tmp_path: Path):
    reader = EvalLossReader(tmp_path)
    assert reader.read() == []
    metrics = tmp_path / "training_metrics.jsonl"
    metrics.write_text(json.dumps({"step": 5, "metrics": {"loss/val/pooled": 0.5, "train_loss": 0.9}}) + "\n"
                       + json.dumps({"step": 6, "metrics": {"train_loss": 0.8}}) + "\n" + '{"step": 10, "met')
    assert reader.read() == [EvalLoss(step=5, loss=0.5)]
    with metrics.open("a") as handle:  # the half-written line completed
        handle.write('rics": {"loss/val/a": 0.2, "loss/val/b": 0.4}}\n')
    assert reader.read() == [EvalLoss(step=10, loss=pytest.approx(0.3))]
    status = apply(apply(JobStatus(), TrainingProgress(step=10, total_steps=20, loss=0.8)), EvalLoss(step=10, loss=0.3))
    assert status.eval_loss == 0.3 and status.to_dict()["eval_loss"] == 0.3


def test_best_follows_the_eval_loss_when_there_is_one(tmp_path: Path):
    for step in (2, 4):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "pytorch_lora_weights.safetensors").write_bytes(b"x")
    losses = [(1, 1.0), (2, 0.9), (3, 0.5), (4, 0.4)]  # training loss: step 4
    assert pick_checkpoint("best", output_dir=tmp_path, losses=losses).step == 4
    pick = pick_checkpoint("best", output_dir=tmp_path, losses=losses, eval_losses=[(2, 0.3), (4, 0.6)])
    assert pick.step == 2 and "evaluation loss" in pick.reason


def test_sample_prompts_with_their_own_settings():
    spec = parse_job(tiny_job(Path("/m"), Path("/d"), samples={"prompts": [
        "a [trigger] circle", {"prompt": "[trigger] square", "seed": 7, "width": 512, "lora_scale": 0.8}]}))
    assert sample_library(spec.samples, "sks") == {
        "sample_0": "a sks circle", "sample_1": {"prompt": "sks square", "adapter_strength": 0.8}}
    assert sample_labels(spec.samples, "sks")["sample_1"] == "sks square (seed 7, 512x512, LoRA 0.8)"
    with pytest.raises(SpecError) as bad:
        parse_job(tiny_job(Path("/m"), Path("/d"), samples={"prompts": [{"prompt": "x", "width": 500}]}))
    assert bad.value.field == "samples.prompts.0.width"


@pytest.fixture(scope="module")
def trained_with_subsets(tmp_path_factory, tiny_model: Path, settings):
    """Two steps of the tiny SDXL, a checkpoint and an evaluation at each, with reg/, eval/ and masks."""
    from core.pipeline import run_job

    base = tmp_path_factory.mktemp("subsets")
    src = dataset_with_subsets(base / "src")
    events: list = []
    job = tiny_job(tiny_model, src, config={"max_train_steps": 2, "checkpointing_steps": 1, "eval_timesteps": 2})
    result = run_job(parse_job(job), base / "job", events.append, settings=settings)
    return result, events


@pytest.mark.training
def test_a_tiny_lora_trains_with_masks_reg_and_eval(trained_with_subsets):
    result, events = trained_with_subsets
    assert result.status == "succeeded"
    written = json.loads((JobDir(result.job_dir).config / "multidatabackend.json").read_text())
    by_id = {b["id"]: b for b in written}
    assert by_id["masks"]["conditioning_type"] == "mask" and by_id["dataset"]["conditioning_data"] == "masks"
    assert by_id["regularisation"]["is_regularisation_data"] is True
    log = Path(result.log_path).read_text(errors="replace")
    assert "Connected conditioning datasets: ['masks']" in log and "Used for regularisation data: Yes" in log
    # An evaluation loss per checkpoint, in the events, the result and the worker's progress.
    evals = [e for e in events if isinstance(e, EvalLoss)]
    assert [e.step for e in evals] == [1, 2] and all(e.loss > 0 for e in evals)
    assert result.metrics.to_dict()["eval_losses"] == [[e.step, e.loss] for e in evals]
    status = JobStatus()
    for event in events:
        status = apply(status, event)
    assert status.eval_loss == evals[-1].loss
    assert result.preflight["subsets"]["masked_images"] == 2


@pytest.mark.training
def test_best_of_the_trained_run_is_its_lowest_eval_loss(trained_with_subsets):
    result, _ = trained_with_subsets
    pick = pick_checkpoint("best", output_dir=result.output_dir, losses=[],
                           eval_losses=result.metrics.eval_losses)
    lowest = min(result.metrics.eval_losses, key=lambda item: (item[1], -item[0]))
    assert pick.step == lowest[0] and "evaluation loss" in pick.reason


def test_the_train_tabs_plot_shows_the_eval_loss_beside_the_training_loss(tmp_path: Path):
    from app.run import Run
    from app.train_tab import loss_frame

    run = Run(kind="train", spec=parse_job(tiny_job(Path("/m"), Path("/d"))), job_dir=tmp_path)
    for step in (1, 2):
        run.on_event(TrainingProgress(step=step, total_steps=2, loss=1.0 / step))
    run.on_event(EvalLoss(step=2, loss=0.7))
    snap = run.snapshot()
    frame = loss_frame(snap)
    assert frame.values.tolist() == [[1, 1.0, "training"], [2, 0.5, "training"], [2, 0.7, "evaluation"]]
    assert snap.to_dict()["eval_losses"] == [{"step": 2, "loss": 0.7}]
    assert "step 2 evaluation loss 0.7000" in snap.log[-1]
