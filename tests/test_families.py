"""Model family and flavour: SimpleTuner's own Hub id table, a local model's model_index.json, the name guess."""

from __future__ import annotations

import json
import subprocess

import pytest

from core.errors import SpecError
from core.families import MODEL_IDS_FILE, family_from_model_index, family_names, guess_family, hub_ids, identify, lookup
from tests.conftest import ROOT


@pytest.mark.trainer_env
def test_the_committed_id_table_matches_the_installed_simpletuner(settings):
    done = subprocess.run([str(settings.trainer_python), "-P", str(ROOT / "tools" / "dump_model_ids.py")],
                          capture_output=True, text=True, timeout=300, check=False,
                          env={"PATH": f"{settings.trainer_bin}:/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": "",
                               "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    installed = json.loads(done.stdout)
    committed = json.loads(MODEL_IDS_FILE.read_text())
    assert installed["simpletuner_version"] == committed["simpletuner_version"] == "4.10.1"
    assert installed == committed, "run tools/dump_model_ids.py and commit core/data/model_ids.json"


@pytest.mark.parametrize(("model_id", "expected"), [
    ("black-forest-labs/FLUX.1-dev", ("flux", "dev")),
    ("black-forest-labs/FLUX.1-schnell", ("flux", "schnell")),
    ("black-forest-labs/FLUX.1-Kontext-dev", ("flux", "kontext")),
    ("black-forest-labs/FLUX.1-Krea-dev", ("flux", "krea")),
    ("black-forest-labs/FLUX.2-dev", ("flux2", "dev")),
    ("stabilityai/stable-diffusion-3.5-large", ("sd3", "large")),
    ("stabilityai/stable-diffusion-3.5-medium", ("sd3", "medium")),
    ("stabilityai/stable-diffusion-xl-base-1.0", ("sdxl", "base-1.0")),
    ("PixArt-alpha/PixArt-Sigma-XL-2-1024-MS", ("pixart", "600M-1024")),
    ("Qwen/Qwen-Image", ("qwen_image", "v1.0")),
    ("Qwen/Qwen-Image-Edit-2509", ("qwen_image", "edit-v2")),
    ("lodestones/Chroma1-HD", ("chroma", "hd")),
    ("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", ("wan", "t2v-480p-1.3b-2.1")),
    ("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", ("wan", "i2v-14b-2.1")),
    ("Alpha-VLLM/Lumina-Image-2.0", ("lumina2", "2.0")),
    ("HiDream-ai/HiDream-I1-Full", ("hidream", "full")),
    ("Tongyi-MAI/Z-Image-Turbo", ("z_image", "turbo-ostris-v2")),
])
def test_simpletuner_hub_ids_give_family_and_flavour(model_id, expected):
    assert lookup(model_id) == expected
    assert lookup(model_id.upper()) == expected
    assert identify(model_id).source == "simpletuner"


def test_an_id_simpletuner_does_not_list_has_no_flavour_but_a_guessed_family():
    assert lookup("PixArt-alpha/PixArt-XL-2-1024-MS") is None
    found = identify("PixArt-alpha/PixArt-XL-2-1024-MS")
    assert (found.family, found.flavour, found.source) == ("pixart", None, "name")
    assert guess_family("someone/my-flux-dev-finetune") == "flux"
    assert guess_family("someone/FLUX.2-merge") == "flux2"
    assert guess_family("someone/Chroma-flux-hybrid") == "chroma"
    assert guess_family("someone/juggernaut-xl") == "sdxl"
    assert guess_family("someone/my-sd3.5-tune") == "sd3"
    assert identify("someone/a-model-with-no-hint") is None


def _model_index(folder, class_name):
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": class_name, "_diffusers_version": "0.36.0"}))
    return folder


@pytest.mark.parametrize(("class_name", "family"), [
    ("StableDiffusionXLPipeline", "sdxl"), ("FluxPipeline", "flux"), ("PixArtAlphaPipeline", "pixart"),
    ("PixArtSigmaPipeline", "pixart"), ("StableDiffusion3Pipeline", "sd3"), ("ChromaPipeline", "chroma"),
    ("QwenImagePipeline", "qwen_image"), ("WanPipeline", "wan"), ("SanaPipeline", "sana"),
])
def test_a_model_index_names_the_family(tmp_path, class_name, family):
    folder = _model_index(tmp_path / "model", class_name)
    assert family_from_model_index(folder) == family
    assert family_from_model_index(folder / "model_index.json") == family


def test_a_model_index_overrides_a_wrong_name_guess(tmp_path):
    folder = _model_index(tmp_path / "my-sdxl-style-mix", "FluxPipeline")
    assert guess_family(folder.name) == "sdxl"
    found = identify(str(folder))
    assert (found.family, found.source) == ("flux", "model_index")
    cached = _model_index(tmp_path / "snapshot", "StableDiffusion3Pipeline")
    found = identify("someone/flux-looking-name", local_path=cached)
    assert (found.family, found.flavour) == ("sd3", None)


def test_a_model_index_of_a_listed_id_keeps_its_flavour(tmp_path):
    cached = _model_index(tmp_path / "snapshot", "FluxPipeline")
    found = identify("black-forest-labs/FLUX.1-schnell", local_path=cached)
    assert (found.family, found.flavour, found.source) == ("flux", "schnell", "model_index")


def test_no_or_an_unknown_model_index_gives_none(tmp_path):
    assert family_from_model_index(tmp_path) is None
    assert family_from_model_index(_model_index(tmp_path / "odd", "SomeNewPipeline")) is None


def test_a_broken_model_index_is_a_clear_error(tmp_path):
    (tmp_path / "model_index.json").write_text("{not json")
    with pytest.raises(SpecError) as caught:
        family_from_model_index(tmp_path)
    assert caught.value.field == "model_name" and "model_index.json" in str(caught.value)


def test_the_tiny_demo_models_are_identified_by_their_model_index(tiny_model):
    assert identify(str(tiny_model)).family == "sdxl"


def test_every_family_lists_its_hub_ids():
    assert {"sdxl", "flux", "sd3", "pixart", "chroma", "qwen_image", "wan"} <= set(family_names())
    assert hub_ids("flux")["dev"] == "black-forest-labs/flux.1-dev"
    assert hub_ids("no-such-family") == {}
