"""SimpleTuner's example recipes: the committed table matches the installed examples, and the pick for a GPU."""

from __future__ import annotations

import json
import subprocess

import pytest

from core.errors import SpecError
from core.simpletuner.recipes import RECIPES_FILE, families_with_recipes, recipe_for, recipe_table, tiers
from tests.conftest import ROOT


@pytest.mark.trainer_env
def test_the_committed_recipes_match_the_installed_examples(settings):
    done = subprocess.run([str(settings.trainer_python), "-P", str(ROOT / "tools" / "dump_recipes.py")],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={"PATH": f"{settings.trainer_bin}:/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    installed = json.loads(done.stdout)
    committed = json.loads(RECIPES_FILE.read_text())
    assert installed["simpletuner_version"] == committed["simpletuner_version"] == "4.10.1"
    assert installed == committed, "run tools/dump_recipes.py and commit core/data/recipes.json"


def test_every_recipe_names_its_example_and_the_numbers_that_matter():
    table = recipe_table()
    assert len(table["recipes"]) > 50
    for entry in table["recipes"]:
        assert entry["name"] and entry["family"] and entry["lora_type"] in ("standard", "lycoris")
        assert {"optimizer", "learning_rate"} <= set(entry["settings"]), entry["name"]
    assert "flux.peft-controlnet-lora" in table["skipped"]


def test_the_main_families_have_recipes():
    assert {"flux", "sd3", "sdxl", "pixart", "chroma", "qwen_image", "wan"} <= set(families_with_recipes())


def test_the_largest_tier_the_gpu_holds_is_picked():
    assert tiers("qwen_image") == [24, 32, 48, 80, 144]
    assert recipe_for("qwen_image", "v2.1", gpu_memory_gb=24).tier_gb == 24
    pick = recipe_for("qwen_image", "v2.1", gpu_memory_gb=40)
    assert (pick.example, pick.tier_gb, pick.fits) == ("qwen_image-2.1-32g.peft-lora", 32, True)
    assert recipe_for("qwen_image", "v2.1", gpu_memory_gb=80).settings["gradient_checkpointing_interval"] == 2
    assert recipe_for("qwen_image", "v2.1", gpu_memory_gb=24).settings["gradient_checkpointing_interval"] == 1
    assert recipe_for("qwen_image", "v2.1", gpu_memory_gb=141).tier_gb == 80


def test_a_gpu_below_every_tier_gets_the_smallest_tier_marked_as_not_fitting():
    pick = recipe_for("qwen_image", "v2.1", gpu_memory_gb=16)
    assert (pick.tier_gb, pick.fits) == (24, False)


def test_a_smaller_tier_brings_its_quantization():
    small = recipe_for("cosmos3", "nano", gpu_memory_gb=24)
    large = recipe_for("cosmos3", "nano", gpu_memory_gb=48)
    assert small.quantized and small.settings["base_model_precision"] == "int8-sdnq"
    assert not large.quantized and large.settings["base_model_precision"] == "no_change"
    batch = {gb: recipe_for("moss_image", "base", gpu_memory_gb=gb).settings["train_batch_size"] for gb in (24, 48)}
    assert batch[24] < batch[48]


def test_an_untiered_family_gets_its_reference_example_with_its_numbers():
    flux = recipe_for("flux", "krea", gpu_memory_gb=24)
    assert (flux.example, flux.tier_gb, flux.fits) == ("flux.peft-lora", None, None)
    assert flux.settings["base_model_precision"] == "int8-quanto" and flux.settings["quantize_via"] == "cpu"
    assert flux.settings["flow_schedule_shift"] == 3 and flux.settings["validation_guidance"] == 4.0
    assert flux.flags()["lora_rank"] == 16 and flux.flags()["resolution"] == 512
    sd3 = recipe_for("sd3", None, gpu_memory_gb=None)
    assert sd3.flavour == "medium" and sd3.settings["lora_rank"] == 128


def test_a_flavour_with_its_own_example_gets_it_and_another_falls_back_to_the_default_flavour():
    assert recipe_for("flux", "kontext", gpu_memory_gb=48).example == "kontext.peft-lora"
    dev = recipe_for("flux", "dev", gpu_memory_gb=48)
    assert (dev.example, dev.flavour) == ("flux.peft-lora", "krea")


def test_plain_lora_beats_lycoris_and_variants():
    assert recipe_for("boogu_image", None, gpu_memory_gb=80).example == "boogu-image-v0.1.peft-lora"
    assert recipe_for("flux", None, gpu_memory_gb=80).variant is None
    wan = recipe_for("wan", "t2v-480p-14b-2.1", gpu_memory_gb=80)
    assert wan.variant == "ramtorch" and wan.settings["ramtorch"] is True


def test_bad_inputs_name_their_field():
    with pytest.raises(SpecError) as caught:
        recipe_for("sd15", None, gpu_memory_gb=24)
    assert caught.value.field == "model_family" and "flux" in str(caught.value)
    for bad in (0, -8, True):
        with pytest.raises(SpecError) as caught:
            recipe_for("flux", None, gpu_memory_gb=bad)
        assert caught.value.field == "gpu_memory_gb"


def test_an_offloading_example_keeps_every_setting_it_needs_to_fit():
    wan = recipe_for("wan", "t2v-480p-14b-2.1", gpu_memory_gb=None, variant="ramtorch")
    assert wan.example == "wan2.1-t2v-14b-480p-single-gpu.peft-lora+ramtorch"
    for key in ("ramtorch", "ramtorch_target_modules", "ramtorch_transformer_percent", "offload_during_startup",
                "vae_enable_tiling", "vae_enable_slicing", "validation_num_video_frames", "validation_resolution"):
        assert key in wan.settings, key
    with pytest.raises(SpecError) as caught:
        recipe_for("flux", "dev", gpu_memory_gb=None, variant="ramtorch")
    assert caught.value.field == "model_flavour"
