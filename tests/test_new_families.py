"""The newest image families SimpleTuner 4.10.1 trains, FLUX.2 klein and Z-Image: tiny random models built offline
(tools/tiny_models/flux2.py, z_image.py), told apart by their model_index.json, and a LoRA really trains on each
through `python -m core run` on CPU; their Hub ids have sizes, recipes and presets, so a GPU plan needs no
download."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.adapters import GpuFacts
from core.publishing.lora_files import add_comfyui_files, comfyui_reads_diffusers_file
from core.settings import Settings
from core.simpletuner import hub_ids, recipe_for
from core.simpletuner.families import identify
from core.training import plan_gpu
from core.training.memory_plan import headroom_gb, table_params
from tests.conftest import tiny_job
from tests.support.comfyui_files import assert_generic_comfyui_file
from tests.test_demo_families import core_cli

# The flavour whose layout the tiny model has. Z-Image's turbo flavours load Ostris' training adapter from the Hub,
# so the offline test trains the base flavour.
NEW = {
    "flux2": {"flavour": "klein-4b", "pipeline": "Flux2KleinPipeline", "encoder": "Qwen3ForCausalLM"},
    "z_image": {"flavour": "base", "pipeline": "ZImagePipeline", "encoder": "Qwen3ForCausalLM"},
}


def _lora_keys(path: Path) -> list[str]:
    """The tensor names of a safetensors file (8-byte little-endian header length, then the JSON header)."""
    with path.open("rb") as handle:
        header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
    return [key for key in header if key != "__metadata__"]


@pytest.mark.trainer_env
@pytest.mark.parametrize("family", list(NEW))
def test_the_tiny_model_is_its_familys_pipeline_offline_and_small(tiny_family_model, family):
    model = tiny_family_model(family)
    index = json.loads((model / "model_index.json").read_text())
    assert index["_class_name"] == NEW[family]["pipeline"]
    assert index["text_encoder"][1] == NEW[family]["encoder"]
    assert (model / "tokenizer" / "tokenizer_config.json").is_file()
    assert identify(str(model)).family == family  # the folder alone says what it is
    assert sum(path.stat().st_size for path in model.rglob("*") if path.is_file()) < 30 * 2**20


@pytest.mark.training
@pytest.mark.parametrize("family", list(NEW))
def test_a_lora_trains_two_steps_on_the_tiny_model_with_the_family_read_from_the_folder(
        tmp_path, demo_dataset, tiny_family_model, family):
    job = tiny_job(tiny_family_model(family), demo_dataset,
                   config={"model_flavour": NEW[family]["flavour"], "resolution": 64, "max_train_steps": 2,
                           "checkpointing_steps": 100, "lora_rank": 2})
    del job["config"]["model_family"]  # found from model_index.json
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    done = core_cli("run", str(path), "--workdir", str(tmp_path / "work"))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["status"] == "succeeded" and result["metrics"]["steps"] == 2
    trained = json.loads((tmp_path / "work" / "output" / "simpletuner_config.json").read_text())
    assert (trained["model_family"], trained["model_flavour"]) == (family, NEW[family]["flavour"])
    output = tmp_path / "work" / "output"
    keys = _lora_keys(output / "pytorch_lora_weights.safetensors")
    assert keys and all("lora" in key and key.startswith("transformer.") for key in keys)
    # ComfyUI: Z-Image's file from SimpleTuner's converter; FLUX.2's diffusers file is what ComfyUI loads (SimpleTuner
    # marks it so), said without a warning
    assert not [warning for warning in result["warnings"] if "ComfyUI" in warning]
    if family == "z_image":
        assert_generic_comfyui_file(output / "pytorch_lora_weights.safetensors",
                                    Path(result["comfyui_checkpoint"]), rank=2)
    else:
        assert result["comfyui_checkpoint"] is None
        assert sorted(path.name for path in output.glob("*.safetensors")) == ["pytorch_lora_weights.safetensors"]
        done = add_comfyui_files(output, name="again", model_family=family, settings=Settings.from_env())
        assert done.file is None and done.native and not done.warnings
        assert comfyui_reads_diffusers_file(done.note) and "Flux2" in done.note


@pytest.mark.parametrize(("family", "flavour"), [("flux2", "klein-4b"), ("flux2", "klein-9b"), ("flux2", "dev"),
                                                 ("z_image", "turbo"), ("z_image", "base")])
def test_each_hub_flavour_gets_a_plan_from_its_published_size_and_simpletuners_recipe(family, flavour):
    params = table_params(hub_ids(family)[flavour])
    assert params is not None and "published" in params.source
    assert recipe_for(family, flavour, gpu_memory_gb=None).lora_type == "standard"
    plans = {gb: plan_gpu(family=family, flavour=flavour, config={}, params=params, system_memory_gb=128,
                          gpu=GpuFacts(count=1, memory_gb=gb, source="GPU_MEMORY_GB")) for gb in (24, 80)}
    for card, plan in plans.items():
        assert plan.vram_source.startswith("model plan") and plan.estimated_vram_gb
        if plan.fits:
            assert plan.estimated_vram_gb + headroom_gb(card) <= card
        else:
            assert "What would fit" in plan.problem
    assert plans[80].fits


def test_flux2_dev_is_far_heavier_than_klein_and_z_image_trains_bf16_on_a_24_gb_card():
    def plan(family: str, flavour: str, gb: float):
        return plan_gpu(family=family, flavour=flavour, config={}, params=table_params(hub_ids(family)[flavour]),
                        system_memory_gb=128, gpu=GpuFacts(count=1, memory_gb=gb, source="GPU_MEMORY_GB"))

    klein = plan("flux2", "klein-4b", 24)
    assert klein.fits and klein.base_model_precision == "no_change"
    dev = plan("flux2", "dev", 24)  # Mistral Small 3.1 (24B) embeds the captions: 45 GB in bf16
    assert dev.fits is False and "caching text embeddings" in dev.problem
    assert plan("flux2", "dev", 80).memory["weights_gb"] > 4 * klein.memory["weights_gb"]
    assert plan("z_image", "turbo", 24).base_model_precision == "no_change"


@pytest.mark.parametrize(("preset", "family", "hub_id"), [
    ("FLUX.2 klein 4B", "flux2", "black-forest-labs/FLUX.2-klein-base-4B"),
    ("FLUX.2 klein 9B", "flux2", "black-forest-labs/FLUX.2-klein-base-9B"),
    ("Z-Image Turbo", "z_image", "TONGYI-MAI/Z-Image-Turbo"), ("Z-Image", "z_image", "TONGYI-MAI/Z-Image")])
def test_the_ui_presets_name_the_hub_model_and_simpletuners_recipe(settings, preset, family, hub_id):
    from app.presets import presets
    from core.spec.job import parse_job

    values = presets(settings=settings)[preset]
    assert (values["base_model"], values["model_family"]) == (hub_id, family)
    assert "SimpleTuner's" in values["note"] and values["lora_rank"] >= 16
    spec = parse_job({"dataset": {"path": "/data"}, "config": {"model_name": values["base_model"]}})
    assert spec.model_family == family
