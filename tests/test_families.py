"""Model family and flavour: SimpleTuner's own Hub id table, a local model's model_index.json, the name guess."""

from __future__ import annotations

import json
import subprocess

import pytest

from core.errors import SpecError
from core.simpletuner.families import (
    MODEL_IDS_FILE,
    family_from_model_index,
    family_names,
    guess_family,
    hub_ids,
    identify,
    lookup,
    model_index_path,
    resolve_family,
)
from core.spec.job import parse_job
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


def _job(model: str, **config) -> dict:
    return {"dataset": {"path": "/data"}, "config": {"model_name": model, **config}}


@pytest.mark.parametrize(("model_id", "family", "flavour"), [
    ("black-forest-labs/FLUX.1-dev", "flux", "dev"),
    ("black-forest-labs/FLUX.1-schnell", "flux", "schnell"),
    ("stabilityai/stable-diffusion-3.5-large", "sd3", "large"),
    ("stabilityai/stable-diffusion-3.5-medium", "sd3", "medium"),
    ("stabilityai/stable-diffusion-xl-base-1.0", "sdxl", "base-1.0"),
    ("PixArt-alpha/PixArt-XL-2-1024-MS", "pixart", None),
    ("Qwen/Qwen-Image", "qwen_image", "v1.0"),
    ("lodestones/Chroma1-HD", "chroma", "hd"),
    ("HiDream-ai/HiDream-I1-Full", "hidream", "full"),
    ("Alpha-VLLM/Lumina-Image-2.0", "lumina2", "2.0"),
    ("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "wan", "t2v-480p-1.3b-2.1"),
    ("someone/my-juggernaut-xl", "sdxl", None),
])
def test_a_job_gets_the_family_and_flavour_of_its_base_model(model_id, family, flavour):
    config = parse_job(_job(model_id)).config
    assert config["model_family"] == family and config.get("model_flavour") == flavour


def test_what_the_job_sets_wins_over_the_lookup():
    config = parse_job(_job("black-forest-labs/FLUX.1-schnell", model_flavour="dev")).config
    assert (config["model_family"], config["model_flavour"]) == ("flux", "dev")
    config = parse_job(_job("black-forest-labs/FLUX.1-dev", model_family="sdxl")).config
    assert config["model_family"] == "sdxl" and "model_flavour" not in config


def test_a_local_folder_whose_model_index_says_otherwise_overrides_the_name(tmp_path):
    folder = _model_index(tmp_path / "my-sdxl-style-mix", "FluxPipeline")
    assert parse_job(_job(str(folder))).config["model_family"] == "flux"


def test_a_flavour_simpletuner_cannot_train_here_is_refused_at_validate():
    # An edit flavour with the shorthand dataloader trains on the dataset's pairs (tests/test_pairs.py); an
    # image-to-video flavour, or a dataloader list without a conditioning backend, has no pairs to train on.
    assert parse_job(_job("black-forest-labs/FLUX.1-Kontext-dev")).config["model_flavour"] == "kontext"
    assert parse_job(_job("Qwen/Qwen-Image-Edit-2509")).config["model_flavour"] == "edit-v2"
    with pytest.raises(SpecError) as caught:
        parse_job(_job("hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_i2v"))
    assert caught.value.field == "config.model_flavour" and "conditioning dataset" in str(caught.value)
    native = _job("black-forest-labs/FLUX.1-Kontext-dev")
    native["dataloader"] = [{"id": "edits"}]
    with pytest.raises(SpecError) as caught:
        parse_job(native)
    assert caught.value.field == "config.model_flavour" and "edit pairs" in str(caught.value)
    with pytest.raises(SpecError) as caught:
        parse_job(_job("black-forest-labs/FLUX.1-dev", model_flavour="large"))
    assert caught.value.field == "config.model_flavour" and "schnell" in str(caught.value)
    paired = _job("black-forest-labs/FLUX.1-Kontext-dev")
    paired["dataloader"] = [{"id": "edits", "conditioning_data": "refs"},
                            {"id": "refs", "dataset_type": "conditioning"}]
    assert parse_job(paired).config["model_flavour"] == "kontext"


def test_an_unknown_model_names_the_family_field():
    with pytest.raises(SpecError) as caught:
        parse_job(_job("someone/a-model-with-no-hint"))
    assert caught.value.field == "config.model_family"


def test_a_cached_hub_model_index_overrides_a_wrong_guess(tmp_path):
    repo = tmp_path / "hub" / "models--someone--juggernaut-xl-flux-merge"
    _model_index(repo / "snapshots" / "abc123", "FluxPipeline")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    assert model_index_path("someone/juggernaut-xl-flux-merge", hf_cache=tmp_path / "hub") is not None
    assert guess_family("someone/juggernaut-xl-flux-merge") == "flux"  # "flux" comes before "xl" in the needles
    found = resolve_family({"pretrained_model_name_or_path": "someone/juggernaut-xl-flux-merge"},
                           has_conditioning=False, hf_cache=tmp_path / "hub")
    assert found == {"model_family": "flux"}
    _model_index(tmp_path / "hub" / "models--someone--my-xl-mix" / "snapshots" / "c1", "PixArtSigmaPipeline")
    (tmp_path / "hub" / "models--someone--my-xl-mix" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--my-xl-mix" / "refs" / "main").write_text("c1")
    found = resolve_family({"pretrained_model_name_or_path": "someone/my-xl-mix"}, has_conditioning=False,
                           hf_cache=tmp_path / "hub")
    assert found == {"model_family": "pixart"}
    assert model_index_path("someone/not-cached", hf_cache=tmp_path / "hub") is None
