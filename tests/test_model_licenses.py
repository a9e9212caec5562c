"""The licence a LoRA's card declares: the job's, else the base model's own card on this machine, else SimpleTuner's
table (core/data/model_licenses.json, which must match the installed SimpleTuner)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from core.publishing.license import LICENSES_FILE, base_model_license
from tests.conftest import ROOT

FLUX_DEV = {"license": "other", "license_name": "flux-1-dev-non-commercial-license",
            "license_link": "https://huggingface.co/black-forest-labs/FLUX.1-dev/blob/main/LICENSE.md"}


def card(folder: Path, front_matter: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text(f"---\n{front_matter}---\n\n# A model\n")
    return folder


@pytest.mark.trainer_env
def test_the_committed_licence_table_matches_the_installed_simpletuner(settings):
    done = subprocess.run([str(settings.trainer_python), "-P", str(ROOT / "tools" / "dump_model_licenses.py")],
                          capture_output=True, text=True, timeout=300, check=False,
                          env={"PATH": f"{settings.trainer_bin}:/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": "",
                               "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    installed, committed = json.loads(done.stdout), json.loads(LICENSES_FILE.read_text())
    assert installed["simpletuner_version"] == committed["simpletuner_version"] == "4.10.1"
    assert installed == committed, ("regenerate: .venv-trainer/bin/python -P tools/dump_model_licenses.py "
                                    "> core/data/model_licenses.json")


@pytest.mark.parametrize(("base_model", "family", "expected"), [
    ("black-forest-labs/FLUX.1-dev", "flux", FLUX_DEV),
    ("black-forest-labs/flux.1-dev", "flux", FLUX_DEV),  # Hub ids ignore case
    ("black-forest-labs/FLUX.1-schnell", "flux", {"license": "apache-2.0"}),
    ("stabilityai/stable-diffusion-xl-base-1.0", "sdxl", {"license": "openrail++"}),
    ("someone/an-sdxl-finetune", "sdxl", {"license": "creativeml-openrail-m"}),  # its family's
    ("someone/a-flux-finetune", "flux", FLUX_DEV),
])
def test_a_hub_base_model_gets_simpletuners_licence(base_model, family, expected, tmp_path):
    found = base_model_license(base_model=base_model, model_family=family, hf_cache=tmp_path / "empty-cache")
    assert found.card_fields() == expected


def test_the_jobs_own_licence_wins(tmp_path):
    found = base_model_license(base_model="black-forest-labs/FLUX.1-dev", model_family="flux", chosen="mit",
                               hf_cache=tmp_path)
    assert found.card_fields() == {"license": "mit"} and found.source == "job"


def test_a_cached_hub_card_wins_over_the_table_with_its_relative_link_made_absolute(tmp_path):
    cache = tmp_path / "hub"
    repo = cache / "models--someone--flux-finetune"
    commit = "0123456789abcdef0123456789abcdef01234567"
    card(repo / "snapshots" / commit, "license: other\nlicense_name: my-licence\nlicense_link: LICENSE.md\n")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    found = base_model_license(base_model="someone/flux-finetune", model_family="flux", hf_cache=cache)
    assert found.source == "base model card"
    assert found.card_fields() == {"license": "other", "license_name": "my-licence",
                                   "license_link": "https://huggingface.co/someone/flux-finetune/blob/main/LICENSE.md"}


def test_a_local_model_folder_uses_its_own_card_else_its_family(tmp_path):
    with_card = card(tmp_path / "mine", "license: apache-2.0\n")
    assert base_model_license(base_model=str(with_card), model_family="sdxl").card_fields() == {"license": "apache-2.0"}
    bare = tmp_path / "bare"
    bare.mkdir()
    found = base_model_license(base_model=str(bare), model_family="sdxl")
    assert found.card_fields() == {"license": "creativeml-openrail-m"} and found.source == "SimpleTuner (family)"


def test_an_unknown_family_claims_no_licence(tmp_path):
    assert base_model_license(base_model=str(tmp_path), model_family="no_such_family") is None
