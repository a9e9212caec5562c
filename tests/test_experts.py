"""Wan 2.2 A14B's two experts (core/simpletuner/experts.py): the job's `experts` field, each expert's folders,
plan, checkpoints and resume, the status that says which one trains, the card that says which loader takes which,
and one real training of both experts of a tiny Wan 2.2 (two transformers of different depth, so a LoRA's keys
tell which one it was trained on) through run_job, published to the local Hub server and resumed by "auto"."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.adapters import GpuFacts
from core.errors import SpecError
from core.events import ExpertStarted, LogLine, TrainingProgress
from core.jobdir import JobDir
from core.pipeline import check_job, run_job
from core.publishing import CardExpert, CheckpointUploads, checkpoint_folder
from core.publishing.card import render_model_card
from core.publishing.checkpoints import HubCheckpoints
from core.settings import Settings
from core.spec import parse_job
from core.status import JobStatus, apply
from core.training import auto_sources, fetch_finished_lora, fetch_latest_checkpoint, gpu_plan, gpu_report
from tests.support.clips import write_clip
from tests.support.hub_server import running_hub_server
from tests.test_checkpoint_uploads import TOKEN, hub_repo, write_checkpoint
from tests.test_demo_families import _safetensors_keys
from tests.test_model_card import facts as card_facts

I2V = "Wan-AI/Wan2.2-I2V-A14B-Diffusers"
LORA = "pytorch_lora_weights.safetensors"


def job(model: str = I2V, *, dataset: Path | str = "/unused", **fields) -> dict:
    config = fields.pop("config", {})
    return {"dataset": {"path": str(dataset)}, "trigger_word": "sks",
            "config": {"model_name": model, "resolution": 64, "max_train_steps": 1, **config},
            "dataloader": {"minimum_image_size": 32, "video": {"num_frames": 9}}, **fields}


def two_clips(folder: Path) -> Path:
    for index, frames in enumerate((9, 13)):
        write_clip(folder / f"clip{index}.mp4", frames=frames, caption=f"a white bar moving, take {index}")
    return folder


# -- the job field ------------------------------------------------------------------------------------------------

def test_an_a14b_id_alone_trains_both_experts_high_first():
    spec = parse_job(job())
    assert spec.experts == "both" and spec.config["model_flavour"] == "i2v-14b-2.2-high"
    assert [(e.name, e.flavour, e.folder) for e in spec.expert_runs] == [
        ("high", "i2v-14b-2.2-high", "high_noise"), ("low", "i2v-14b-2.2-low", "low_noise")]
    assert parse_job(spec.to_job_json()).experts == "both"
    low = spec.for_expert(spec.expert_runs[1])
    assert low.config["model_flavour"] == "i2v-14b-2.2-low" and [e.name for e in low.expert_runs] == ["low"]


def test_a_flavour_names_its_expert_and_experts_can_name_one():
    assert parse_job(job(config={"model_flavour": "i2v-14b-2.2-low"})).experts == "low"
    chosen = parse_job(job(experts="low"))
    assert chosen.config["model_flavour"] == "i2v-14b-2.2-low" and len(chosen.expert_runs) == 1
    both = parse_job(job(config={"model_flavour": "i2v-14b-2.2-low"}, experts="both"))
    assert [e.name for e in both.expert_runs] == ["high", "low"]
    t2v = parse_job(job("Wan-AI/Wan2.2-T2V-A14B-Diffusers"))  # SimpleTuner's T2V A14B flavours: AnimeGen's
    assert [e.flavour for e in t2v.expert_runs] == ["animegen-t2v-high", "animegen-t2v-low"]


@pytest.mark.parametrize(("fields", "field", "words"), [
    ({"config": {"model_flavour": "i2v-14b-2.2-low"}, "experts": "high"}, "experts", "contradicts"),
    ({"experts": "sideways"}, "experts", "'high', 'low' or 'both'"),
    ({"resume_from": "tester/repo/checkpoints/high_noise/checkpoint-5"}, "resume_from", '"auto"'),
    ({"hub": {"repo_id": "tester/wan", "checkpoint": "best"}}, "hub.checkpoint", "last LoRA"),
])
def test_what_a_two_expert_job_cannot_do_is_refused_naming_the_field(fields: dict, field: str, words: str):
    with pytest.raises(SpecError) as refused:
        parse_job(job(**fields))
    assert refused.value.field == field and words in refused.value.message


def test_experts_is_refused_for_a_model_with_one_denoiser():
    with pytest.raises(SpecError) as refused:
        parse_job(job("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", experts="both"))
    assert refused.value.field == "experts" and "one denoiser" in refused.value.message
    assert parse_job(job("Wan-AI/Wan2.1-T2V-1.3B-Diffusers")).experts is None
    assert parse_job(job(experts="high", resume_from="tester/r/checkpoints/high_noise/checkpoint-5")).resume_from


# -- folders, plan, status, card ----------------------------------------------------------------------------------

def test_each_expert_gets_its_own_output_and_config_and_shares_the_rest(tmp_path: Path):
    job_dir = JobDir(tmp_path)
    high = job_dir.for_expert("high_noise")
    assert high.output == tmp_path / "output" / "high_noise"
    assert high.config == tmp_path / "trainer" / "config" / "high_noise"
    assert (high.dataset, high.cache, high.log, high.trainer) == (job_dir.dataset, job_dir.cache, job_dir.log,
                                                                 job_dir.trainer)
    spec = parse_job(job())
    assert [checkpoint_folder(spec.for_expert(e)) for e in spec.expert_runs] == [
        "checkpoints/high_noise", "checkpoints/low_noise"]
    assert checkpoint_folder(parse_job(job("Wan-AI/Wan2.1-T2V-1.3B-Diffusers"))) == "checkpoints"
    assert auto_sources(hub_repo="u/r", bucket="b", prefix="p", folder="checkpoints/low_noise") == [
        "hf://u/r/checkpoints/low_noise", "s3://b/p/checkpoints/low_noise"]


def test_the_plan_is_one_experts_and_the_download_both(tmp_path: Path):
    card = GpuFacts(count=1, memory_gb=80, source="GPU_MEMORY_GB")
    both = gpu_plan(parse_job(job()), device="cuda", gpu=card, system_memory_gb=128)
    one = gpu_plan(parse_job(job(experts="high")), device="cuda", gpu=card, system_memory_gb=128)
    assert both is not None and one is not None
    assert both.estimated_vram_gb == one.estimated_vram_gb < 80  # never loaded together for training
    assert both.memory["weights_gb"] < 30  # one 14.3B expert in bf16, not two
    assert both.download_gb is not None and both.download_gb > 2 * 14.3e9 * 2 / 2**30  # both experts are fetched
    single = gpu_report(both, card, total_steps=100, resolution=480, price_per_hour=2.0)
    double = gpu_report(both, card, total_steps=100, resolution=480, price_per_hour=2.0, experts=2)
    assert single and double and double["experts_in_sequence"] == 2 and "experts_in_sequence" not in single


def test_the_status_says_which_expert_trains():
    status = apply(JobStatus(), ExpertStarted(index=1, count=2, name="high", label="high-noise"))
    status = apply(status, TrainingProgress(step=3, total_steps=10, loss=0.5))
    assert status.message == "expert 1/2 high-noise, step 3/10" and status.to_dict()["expert"] == "1/2 high-noise"
    status = apply(status, ExpertStarted(index=2, count=2, name="low", label="low-noise"))
    assert (status.stage, status.step, status.loss) == ("loading", None, None)  # the second run starts afresh
    done = apply(JobStatus(), ExpertStarted(index=1, count=2, name="high", label="high-noise", finished_at=40))
    assert "finished at step 40 in an earlier run, not trained again" in done.message


def test_the_card_says_which_file_goes_into_which_model():
    facts = card_facts(model_family="wan", base_model=I2V, config={"--model_flavour": "i2v-14b-2.2-high"},
                       experts=[CardExpert("high_noise", "high-noise", "sks-high_noise.safetensors"),
                                CardExpert("low_noise", "low-noise", "sks-low_noise.safetensors")])
    card = render_model_card(facts)
    assert "| `high_noise/pytorch_lora_weights.safetensors` | the high-noise expert" in card
    assert "| `low_noise/sks-low_noise.safetensors` | the low-noise expert in ComfyUI" in card
    assert 'weight_name="low_noise/pytorch_lora_weights.safetensors", adapter_name="low_noise", ' \
           "load_into_transformer_2=True" in card
    assert "WanImageToVideoPipeline" in card and "LoraLoaderModelOnly" in card
    assert "the **high-noise** model's loader: `high_noise/sks-high_noise.safetensors`" in card


# -- checkpoints and resume, without a training -------------------------------------------------------------------

def test_auto_takes_a_finished_experts_lora_and_the_other_ones_own_latest_checkpoint(tmp_path: Path):
    high, low = JobDir(tmp_path / "before").for_expert("high_noise"), JobDir(tmp_path / "before").for_expert(
        "low_noise")
    high.output.mkdir(parents=True)
    (high.output / LORA).write_bytes(b"the finished high-noise LoRA")
    with running_hub_server(tmp_path, token=TOKEN) as hub:
        repo = hub_repo("tester/wan", hub)
        with CheckpointUploads([HubCheckpoints(repo, folder="checkpoints/high_noise")], job=high) as uploads:
            write_checkpoint(high, 7)  # a higher step than the low expert's: each reads only its own folder
            uploads.ensure(high.output / "checkpoint-7")
            uploads.record_finished(step=8)
        with CheckpointUploads([HubCheckpoints(repo, folder="checkpoints/low_noise")], job=low) as uploads:
            uploads.ensure(write_checkpoint(low, 3))
        files = set(hub.repos["tester/wan"].files)
        settings = Settings.from_env()
        after = JobDir(tmp_path / "after")
        lines: list = []
        finished = fetch_finished_lora(["hf://tester/wan/checkpoints/high_noise"],
                                       after.for_expert("high_noise").output, settings=settings, token=TOKEN,
                                       on_event=lines.append)
        unfinished = fetch_finished_lora(["hf://tester/wan/checkpoints/low_noise"],
                                         after.for_expert("low_noise").output, settings=settings, token=TOKEN)
        resumed = fetch_latest_checkpoint(["hf://tester/wan/checkpoints/low_noise"],
                                          after.for_expert("low_noise").output, settings=settings, token=TOKEN)
    assert {"checkpoints/high_noise/final/pytorch_lora_weights.safetensors",
            "checkpoints/high_noise/final/training_state.json",
            "checkpoints/low_noise/checkpoint-3/training_state.json"} <= files
    assert finished == 8 and unfinished is None
    assert (after.for_expert("high_noise").output / LORA).read_bytes() == b"the finished high-noise LoRA"
    assert not list(after.for_expert("high_noise").output.glob("checkpoint-*"))
    assert any("finished at step 8" in getattr(line, "message", "") for line in lines)
    assert resumed is not None and resumed.name == "checkpoint-3"


def test_a_dry_run_resumes_only_the_expert_that_was_cut(tmp_path: Path, settings: Settings):
    """check_job runs the resume stage of each expert: the finished one fetches its LoRA, the other its
    checkpoint."""
    with running_hub_server(tmp_path, token=TOKEN) as hub:
        prior = JobDir(tmp_path / "prior").for_expert("high_noise")
        prior.output.mkdir(parents=True)
        (prior.output / LORA).write_bytes(b"done")
        with CheckpointUploads([HubCheckpoints(hub_repo("tester/cut", hub), folder="checkpoints/high_noise")],
                               job=prior) as uploads:
            uploads.record_finished(step=1)
        low = JobDir(tmp_path / "prior").for_expert("low_noise")
        with CheckpointUploads([HubCheckpoints(hub_repo("tester/cut", hub), folder="checkpoints/low_noise")],
                               job=low) as uploads:
            uploads.ensure(write_checkpoint(low, 2))
        events: list = []
        spec = parse_job(job(dataset=two_clips(tmp_path / "data"), resume_from="auto",
                             hub={"repo_id": "tester/cut", "token": TOKEN, "checkpoints": True}))
        result = check_job(spec, tmp_path / "work", events.append, settings=settings)
    work = JobDir(tmp_path / "work")
    assert (work.for_expert("high_noise").output / LORA).read_bytes() == b"done"
    assert not list(work.for_expert("high_noise").output.glob("checkpoint-*"))
    assert (work.for_expert("low_noise").output / "checkpoint-2" / "training_state.json").is_file()
    config = result.trainer_files["config.json"]  # the first expert's
    assert config["--model_flavour"] == "i2v-14b-2.2-high" and config["--output_dir"].endswith("output/high_noise")
    assert any("resuming from checkpoint-2" in getattr(e, "message", "") for e in events if isinstance(e, LogLine))


# -- one real training of both experts ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_both(tmp_path_factory, tiny_family_model, settings: Settings):
    """Both experts of the tiny Wan 2.2 I2V, one step each, from two clips, published to the local Hub with
    checkpoint uploads on; then the same job again with resume_from "auto": (first, second, events, repo files)."""
    root = tmp_path_factory.mktemp("both")
    model = tiny_family_model("wan22_a14b")
    spec = parse_job(job(str(model), dataset=two_clips(root / "data"), experts="both", resume_from="auto",
                         config={"model_family": "wan", "model_flavour": "i2v-14b-2.2-high", "lora_rank": 2,
                                 "seed": 42, "checkpointing_steps": 100},
                         hub={"repo_id": "tester/wan-both", "token": TOKEN, "checkpoints": True}))
    with running_hub_server(root, token=TOKEN) as hub:
        events: list = []
        first = run_job(spec, root / "first", events.append, settings=settings)
        again: list = []
        second = run_job(spec, root / "second", again.append, settings=settings)
        files = dict(hub.repos["tester/wan-both"].files)
    return first, second, events, again, files


@pytest.mark.training
def test_both_experts_train_in_sequence_each_on_its_own_transformer(trained_both):
    first, _, events, _, _ = trained_both
    assert first.status == "succeeded" and [(e.name, e.steps, e.trained) for e in first.experts] == [
        ("high", 1, True), ("low", 1, True)]
    blocks = {}
    for expert in first.experts:
        assert expert.lora_path == first.job_dir / "output" / expert.folder / LORA
        blocks[expert.name] = {key.split(".")[2] for key in _safetensors_keys(expert.lora_path)
                               if key.startswith("transformer.blocks.")}
    # The tiny model's `transformer` has 1 block, `transformer_2` 2: SimpleTuner 4.10.1 trains the high flavour
    # on transformer_2's weights and the low one on transformer's.
    assert blocks == {"high": {"0", "1"}, "low": {"0"}}
    started = [(e.index, e.name) for e in events if isinstance(e, ExpertStarted)]
    assert started == [(1, "high"), (2, "low")]
    order = [e.name if isinstance(e, ExpertStarted) else "step" for e in events
             if isinstance(e, (ExpertStarted, TrainingProgress))]
    assert order == ["high", "step", "low", "step"]
    assert first.metrics.steps == 2


@pytest.mark.training
def test_both_loras_go_to_one_repo_and_auto_does_not_train_them_again(trained_both):
    first, second, _, again, files = trained_both
    for folder in ("high_noise", "low_noise"):
        assert files[f"{folder}/{LORA}"] == (first.job_dir / "output" / folder / LORA).read_bytes()
        assert f"checkpoints/{folder}/final/{LORA}" in files
    card = files["README.md"].decode()
    assert "high_noise/pytorch_lora_weights.safetensors" in card and "load_into_transformer_2=True" in card
    output = first.to_output()
    assert [entry["lora"].endswith(f"{entry['folder']}/{LORA}") for entry in output["experts"]] == [True, True]
    assert output["model_checkpoint"] == output["experts"][0]["lora"]
    # The same job again: each expert's finished LoRA is fetched, nothing trains, the repo gets both again.
    assert second.status == "succeeded" and [e.trained for e in second.experts] == [False, False]
    assert not [e for e in again if isinstance(e, TrainingProgress)]
    assert [e.finished_at for e in again if isinstance(e, ExpertStarted)] == [1, 1]
    for expert in second.experts:
        assert expert.lora_path.read_bytes() == (first.job_dir / "output" / expert.folder / LORA).read_bytes()
