"""Both LoRA files: the diffusers one SimpleTuner writes, and a ComfyUI/kohya-format one beside it, checked with the
session's one trained tiny-SDXL LoRA (tests/conftest.py's trained_job): its keys, the weights diffusers' own kohya
loader fuses from it, and what the Hub receives."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from safetensors import safe_open

from core.publishing.lora_files import add_comfyui_files, add_lora_files, comfyui_name, is_comfyui_file
from core.settings import Settings
from core.spec.job import parse_job
from tests.conftest import tiny_job
from tests.support.lora_loading import compare_lora_files

DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"
KOHYA_SUFFIXES = (".lora_down.weight", ".lora_up.weight", ".alpha")
TOKEN = "hf_plantedtoken_lorafiles_0123456789"


def keys_of(path: Path) -> list[str]:
    with safe_open(str(path), framework="numpy") as weights:
        return list(weights.keys())


@pytest.fixture(scope="module")
def lora_copy(trained_job, tmp_path_factory):
    """A copy of the trained run's output, for tests that rename or rewrite its files: the session's run stays as
    other modules expect it."""
    result, _ = trained_job
    base = tmp_path_factory.mktemp("lora-files")
    shutil.copytree(result.job_dir, base / "job", ignore=shutil.ignore_patterns("dataset", "cache"))
    job = base / "job"
    return dataclasses.replace(result, job_dir=job, output_dir=job / "output",
                               lora_path=job / "output" / DIFFUSERS_FILE,
                               log_path=job / result.log_path.name if result.log_path else None,
                               comfyui_path=None, comfyui_note=None, warnings=[], hub=None, storage=None,
                               checkpoints=[])


@pytest.mark.training
def test_a_trained_run_gives_both_files_in_its_output_and_every_checkpoint(trained_job):
    result, _ = trained_job
    comfy = result.comfyui_path
    assert comfy is not None and comfy.is_file() and comfy.parent == result.output_dir
    assert comfy.name != DIFFUSERS_FILE and result.lora_path.is_file()
    for checkpoint in ("checkpoint-5", "checkpoint-10"):
        assert (result.output_dir / checkpoint / DIFFUSERS_FILE).is_file()
        assert (result.output_dir / checkpoint / comfy.name).is_file()
    output = result.to_output()
    assert output["comfyui_checkpoint"] in (str(comfy), *[v for v in (result.hub or {}).get("files", {}).values()])
    assert comfy.name in {entry["path"] for entry in output["files"]}
    assert not [w for w in result.warnings if "ComfyUI" in w]


@pytest.mark.training
def test_the_comfyui_file_has_kohya_keys_with_an_alpha_per_module(trained_job):
    result, _ = trained_job
    diffusers_keys = keys_of(result.lora_path)
    kohya_keys = keys_of(result.comfyui_path)
    assert all(key.startswith(("lora_unet_", "lora_te1_", "lora_te2_")) for key in kohya_keys)
    assert all(key.endswith(KOHYA_SUFFIXES) for key in kohya_keys)
    assert any(key.startswith("lora_unet_down_blocks_") for key in kohya_keys)
    modules = {key.rsplit(".", 2)[0] for key in kohya_keys if key.endswith(".weight")}
    assert {key.removesuffix(".alpha") for key in kohya_keys if key.endswith(".alpha")} == modules
    assert len(modules) * 2 == len(diffusers_keys)  # every diffusers down/up pair, nothing dropped
    assert is_comfyui_file(result.comfyui_path) and not is_comfyui_file(result.lora_path)


@pytest.mark.training
@pytest.mark.trainer_env
def test_diffusers_kohya_loader_fuses_the_same_weights_from_the_comfyui_file(trained_job, tiny_model, settings):
    result, _ = trained_job
    report = compare_lora_files(settings=settings, model=tiny_model, lora=result.lora_path,
                                comfyui=result.comfyui_path)
    unet = report["unet"]
    assert unet["changed_by_diffusers_file"] > 0 and unet["same_keys_changed"]
    assert unet["changed_by_comfyui_file"] == unet["changed_by_diffusers_file"]
    assert unet["max_abs_diff"] <= 1e-6 * max(1.0, unet["max_abs_weight"])
    assert all(part["same_keys_changed"] and part["max_abs_diff"] <= 1e-6 for part in report.values())


@pytest.mark.training
def test_the_hub_gets_both_files_named_after_the_repo_and_the_base_model_licence(lora_copy, tmp_path, settings):
    from huggingface_hub import ModelCard

    from core.pipeline import publish
    from tests.support.hub_server import running_hub_server

    earlier = lora_copy.output_dir / "sks-sdxl-lora.safetensors"
    assert earlier.is_file()  # written when it trained, before any repo was named
    job = tiny_job(lora_copy.output_dir, lora_copy.output_dir,
                   config={"model_name": "black-forest-labs/FLUX.1-dev", "model_family": "sdxl"},
                   hub={"repo_id": "tester/flux-style", "token": TOKEN, "include_checkpoints": True})
    spec = parse_job(job)
    events = []
    with running_hub_server(tmp_path, token=TOKEN) as hub:
        published = publish(spec, lora_copy, settings=settings, on_event=events.append)
        files = hub.repos["tester/flux-style"].files
    assert files[DIFFUSERS_FILE] == lora_copy.lora_path.read_bytes()
    assert files["flux-style.safetensors"] == (lora_copy.output_dir / "flux-style.safetensors").read_bytes()
    assert "sks-sdxl-lora.safetensors" not in files and not earlier.exists()  # renamed, not sent twice
    assert {"checkpoint-10/pytorch_lora_weights.safetensors", "checkpoint-10/flux-style.safetensors"} <= set(files)
    card = ModelCard(files["README.md"].decode())
    assert card.data.license == "other"
    assert card.data.license_name == "flux-1-dev-non-commercial-license"
    assert card.data.license_link == "https://huggingface.co/black-forest-labs/FLUX.1-dev/blob/main/LICENSE.md"
    assert "| `flux-style.safetensors` | ComfyUI" in card.text and "ComfyUI/models/loras/" in card.text
    output = published.to_output()
    assert output["comfyui_checkpoint"].startswith(hub.endpoint)
    assert output["comfyui_checkpoint"].endswith("/flux-style.safetensors")


@pytest.mark.training
def test_a_job_licence_wins_over_the_base_models(lora_copy, tmp_path, settings):
    from huggingface_hub import ModelCard

    from core.pipeline import publish
    from tests.support.hub_server import running_hub_server

    spec = parse_job(tiny_job(lora_copy.output_dir, lora_copy.output_dir,
                              config={"model_name": "black-forest-labs/FLUX.1-dev", "model_family": "sdxl"},
                              hub={"repo_id": "tester/mit-lora", "token": TOKEN, "license": "mit"}))
    with running_hub_server(tmp_path, token=TOKEN) as hub:
        publish(spec, lora_copy, settings=settings)
        card = ModelCard(hub.repos["tester/mit-lora"].files["README.md"].decode())
    assert card.data.license == "mit"
    assert card.data.license_name is None and card.data.license_link is None


@pytest.mark.training
@pytest.mark.trainer_env
def test_a_family_without_a_converter_is_said_in_the_result_never_a_failure(lora_copy, tmp_path, settings):
    folder = tmp_path / "out"
    folder.mkdir()
    shutil.copy(lora_copy.lora_path, folder / DIFFUSERS_FILE)
    events = []
    done = add_comfyui_files(folder, name="my-lora", model_family="no_such_family", settings=settings,
                             on_event=events.append)
    assert done.file is None and not (folder / "my-lora.safetensors").exists()
    assert "no model family 'no_such_family'" in done.note
    assert done.warnings and any(getattr(e, "field", None) == "lora_files" for e in events)


def test_a_missing_trainer_env_is_a_warning_and_the_run_keeps_its_diffusers_file(tmp_path):
    folder = tmp_path / "job" / "output"
    folder.mkdir(parents=True)
    (folder / DIFFUSERS_FILE).write_bytes(b"x")
    spec = parse_job(tiny_job(tmp_path, tmp_path))
    from core.result import JobResult

    result = JobResult(status="succeeded", job_dir=tmp_path / "job", output_dir=folder,
                       lora_path=folder / DIFFUSERS_FILE)
    add_lora_files(spec, result, settings=Settings(trainer_venv=tmp_path / "nowhere", data_root=tmp_path))
    assert result.comfyui_path is None and "trainer env" in result.comfyui_note
    assert any("no ComfyUI-format file" in w for w in result.warnings)
    assert result.to_output()["comfyui_checkpoint"] is None and (folder / DIFFUSERS_FILE).is_file()


@pytest.mark.parametrize(("repo_id", "trigger", "expected"), [
    ("tester/flux-style", "sks", "flux-style"),
    (None, "sks dog", "sks-dog-sdxl-lora"),
    (None, None, "sdxl-lora-job-1"),
    ("tester/pytorch_lora_weights", None, "pytorch_lora_weights-comfyui"),  # never overwrites the diffusers file
])
def test_the_comfyui_file_is_named_after_the_repo_else_the_job(repo_id, trigger, expected):
    assert comfyui_name(repo_id=repo_id, trigger_word=trigger, model_family="sdxl", job_name="job-1") == expected


@pytest.mark.parametrize(("kind", "said"), [("full", "not applicable"), ("lycoris", "reads SimpleTuner's LyCORIS")])
def test_a_full_fine_tune_or_lycoris_run_gets_a_note_and_no_conversion(tmp_path, settings, kind, said):
    from core.result import JobResult

    folder = tmp_path / "job" / "output"
    folder.mkdir(parents=True)
    (folder / DIFFUSERS_FILE).write_bytes(b"lycoris weights")
    result = JobResult(status="succeeded", job_dir=tmp_path / "job", output_dir=folder, kind=kind)
    add_lora_files(parse_job(tiny_job(tmp_path, tmp_path)), result, settings=settings)
    assert result.comfyui_path is None and said in result.comfyui_note and not result.warnings
    assert sorted(p.name for p in folder.iterdir()) == [DIFFUSERS_FILE]
