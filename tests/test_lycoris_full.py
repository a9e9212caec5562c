"""LyCORIS and full fine-tunes, end to end: what a job may ask (refused at validate when SimpleTuner could not train
it), the file SimpleTuner needs, and real runs of the tiny SDXL model through `python -m core run` that publish to
the local Hub: a LyCORIS adapter, and a full fine-tune's diffusers folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import SpecError
from core.jobdir import JobDir
from core.simpletuner.lycoris import PRESETS_FILE, lycoris_presets
from core.spec.job import parse_job
from core.training.config import build_trainer_files
from tests.conftest import ROOT, tiny_job
from tests.support.hub_server import CLIENT_ENV, running_hub_server

TOKEN = "hf_LycorisFullTestToken0123456789"
LOKR = {"algo": "lokr", "multiplier": 1.0, "linear_dim": 10000, "linear_alpha": 1, "factor": 4,
        "apply_preset": {"target_module": ["Attention", "FeedForward"]}}


def a_job(**config) -> dict:
    return {"dataset": {"path": "/data"},
            "config": {"model_name": "stabilityai/stable-diffusion-xl-base-1.0", **config}}


def errors_of(job: dict) -> dict[str, str]:
    with pytest.raises(SpecError) as caught:
        parse_job(job)
    return {error["field"]: error["message"] for error in caught.value.errors}


def test_a_named_preset_becomes_simpletuners_own_lycoris_config(tmp_path):
    spec = parse_job(a_job(lora_type="lycoris", lycoris_config="lokr"))
    assert spec.config["lycoris_config"] == lycoris_presets()["lokr"]
    job = JobDir(tmp_path / "job").create()
    files = build_trainer_files(spec, images_dir=job.dataset, job=job, device="cpu")
    files.write(job, webhook_url="http://127.0.0.1:1/webhook")
    written = Path(files.config["--lycoris_config"])
    assert written.parent == job.config and json.loads(written.read_text())["algo"] == "lokr"
    assert files.config["--lora_type"] == "lycoris"
    # The job the UI exports says the whole config, and reads back the same.
    assert parse_job(spec.to_job_json()).config["lycoris_config"] == spec.config["lycoris_config"]


def test_a_lycoris_config_alone_means_lora_type_lycoris():
    assert parse_job(a_job(lycoris_config=LOKR)).config["lora_type"] == "lycoris"


def test_what_simpletuner_would_refuse_is_refused_at_validate_naming_the_field():
    assert "did you mean 'lokr'" in errors_of(a_job(lora_type="lycoris", lycoris_config="lokx"))[
        "config.lycoris_config"]
    assert "preset" in errors_of(a_job(lora_type="lycoris"))["config.lycoris_config"]
    bad = errors_of(a_job(lora_type="lycoris", lycoris_config={"algo": "lokk", "multiplier": 1.0}))
    assert "did you mean 'lokr'" in bad["config.lycoris_config.algo"]
    assert {"config.lycoris_config.linear_dim", "config.lycoris_config.linear_alpha"} <= set(bad)
    assert "lora_type" in errors_of(a_job(lora_type="standard", lycoris_config=LOKR))["config.lycoris_config"]
    assert "full" in errors_of(a_job(model_type="full", lora_type="lycoris"))["config.lora_type"]
    assert "text encoder" in errors_of(a_job(lycoris_config=LOKR, train_text_encoder=True))[
        "config.train_text_encoder"]
    on_failure = {**a_job(model_type="full"), "hub": {"repo_id": "me/full", "on_failure": True}}
    assert "full fine-tune" in errors_of(on_failure)["hub.on_failure"]
    # A path is never read from the machine.
    assert "file path is not accepted" in errors_of(a_job(lycoris_config="/etc/lycoris.json"))[
        "config.lycoris_config"]


@pytest.mark.trainer_env
def test_the_committed_presets_match_the_installed_simpletuner(settings):
    done = subprocess.run([str(settings.trainer_python), "-P", str(ROOT / "tools" / "dump_lycoris_presets.py")],
                          capture_output=True, text=True, timeout=300, check=False,
                          env={"PATH": f"{settings.trainer_bin}:/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == json.loads(PRESETS_FILE.read_text()), \
        "run tools/dump_lycoris_presets.py and commit core/data/lycoris_presets.json"


# -- real runs -------------------------------------------------------------------------------------------------


def run_cli(job: dict, tmp_path: Path, hub, *, printed: list[str] | None = None) -> dict:
    """`python -m core run` of `job`: its result; what it printed to stderr goes to `printed`."""
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    env = {key: value for key, value in os.environ.items() if key not in ("HF_HUB_OFFLINE", "HF_TOKEN")}
    env.update(CLIENT_ENV, HF_ENDPOINT=hub.endpoint, HF_TOKEN=TOKEN, TRAINER_DEVICE="cpu")
    done = subprocess.run([sys.executable, "-m", "core", "run", str(path), "--workdir", str(tmp_path / "work")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    if printed is not None:
        printed += done.stderr.splitlines()
    return json.loads(done.stdout)


def trainer_python(settings, code: str) -> str:
    """Run `code` in the trainer env (diffusers, lycoris), as a user of the published files would."""
    done = subprocess.run([str(settings.trainer_python), "-P", "-c", code], capture_output=True, text=True,
                          timeout=300, check=False, env={"PATH": f"{settings.trainer_bin}:/usr/bin:/bin",
                                                         "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def quick_job(model: Path, dataset: Path, repo: str, **config) -> dict:
    return tiny_job(model, dataset, config={"resolution": 64, "max_train_steps": 2, "checkpointing_steps": 100,
                                            **config}, hub={"repo_id": repo})


@pytest.mark.training
def test_a_lycoris_adapter_trains_and_publishes(tmp_path, demo_dataset, tiny_model, settings):
    """Also what a person at a terminal sees (test_cli.py's run, merged here): a progress line per step on stderr,
    then the result on stdout."""
    printed: list[str] = []
    with running_hub_server(tmp_path, token=TOKEN) as hub:
        result = run_cli(quick_job(tiny_model, demo_dataset, "tester/lokr", lycoris_config=LOKR), tmp_path, hub,
                         printed=printed)
        repo = hub.repos["tester/lokr"].files
    progress = [line for line in printed if line.startswith("[training] step ")]
    assert [line.split()[2] for line in progress] == ["1/2", "2/2"]
    assert result["metrics"]["steps"] == 2
    assert (tmp_path / "work" / "output" / "pytorch_lora_weights.safetensors").stat().st_size > 0
    assert result["status"] == "succeeded" and result["model_type"] == "lycoris"
    assert result["model_checkpoint"].endswith("/pytorch_lora_weights.safetensors")
    assert {"pytorch_lora_weights.safetensors", "lycoris_config.json", "README.md"} <= set(repo)
    assert json.loads(repo["lycoris_config.json"])["algo"] == "lokr"
    card = repo["README.md"].decode()
    assert "A LyCORIS adapter (lokr)" in card and "create_lycoris_from_weights" in card and "lycoris" in card
    # ComfyUI reads the LyCORIS file itself: no converted copy, no warning, and the card says so.
    assert result["comfyui_checkpoint"] is None and not any("ComfyUI" in w for w in result["warnings"])
    assert "no separate ComfyUI file" in card
    # The card's recipe works: the adapter merges into the base model's UNet with the lycoris library.
    weights = tmp_path / "work" / "output" / "pytorch_lora_weights.safetensors"
    merged = trainer_python(settings, f"""
from diffusers import UNet2DConditionModel
from lycoris import create_lycoris_from_weights
unet = UNet2DConditionModel.from_pretrained({str(tiny_model)!r}, subfolder="unet")
wrapper, _ = create_lycoris_from_weights(1.0, {str(weights)!r}, unet)
wrapper.merge_to()
print(len(wrapper.loras))""")
    assert int(merged.strip().splitlines()[-1]) > 0


@pytest.mark.training
def test_a_full_fine_tune_trains_and_publishes_its_pipeline_folder(tmp_path, demo_dataset, tiny_model, settings):
    with running_hub_server(tmp_path, token=TOKEN) as hub:
        result = run_cli(quick_job(tiny_model, demo_dataset, "tester/full", model_type="full",
                                   learning_rate=1e-5), tmp_path, hub)
        repo = hub.repos["tester/full"].files
    assert result["status"] == "succeeded" and result["model_type"] == "full" and result["metrics"]["steps"] == 2
    assert result["model_checkpoint"] == f"{hub.endpoint}/tester/full"
    assert {"model_index.json", "unet/diffusion_pytorch_model.safetensors", "unet/config.json",
            "vae/diffusion_pytorch_model.safetensors", "README.md"} <= set(repo)
    assert not any(name.endswith("pytorch_lora_weights.safetensors") for name in repo)
    card = repo["README.md"].decode()
    assert "A full fine-tune of" in card and 'UNet2DConditionModel.from_pretrained("tester/full"' in card
    assert "full-finetune" in card and "Not applicable" in card and result["comfyui_checkpoint"] is None
    # The card's recipe works: the fine-tuned UNet loads into the base pipeline in place of its own.
    pipeline = tmp_path / "work" / "output" / "pipeline"
    loaded = trainer_python(settings, f"""
from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
unet = UNet2DConditionModel.from_pretrained({str(pipeline)!r}, subfolder="unet")
pipe = StableDiffusionXLPipeline.from_pretrained({str(tiny_model)!r}, unet=unet)
print(type(pipe.unet).__name__)""")
    assert loaded.strip().splitlines()[-1] == "UNet2DConditionModel"
