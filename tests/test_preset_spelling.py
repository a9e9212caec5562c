"""Presets keep the Hub's spelling of a model id (SimpleTuner's table lower-cases FLUX.1's), so the Config tab, the
job JSON and the card name the repo as the Hub shows it."""

from __future__ import annotations

from pathlib import Path

from app.presets import presets
from core.settings import Settings
from core.simpletuner import lookup


def test_flux_presets_name_the_hub_repo_as_the_hub_spells_it():
    catalogue = presets(settings=Settings(trainer_venv=Path("/none"), data_root=Path("/none")))
    assert catalogue["FLUX.1-dev"]["base_model"] == "black-forest-labs/FLUX.1-dev"
    assert catalogue["FLUX.1-schnell"]["base_model"] == "black-forest-labs/FLUX.1-schnell"
    assert lookup(catalogue["FLUX.1-dev"]["base_model"]) == ("flux", "dev")  # still SimpleTuner's flavour
    assert catalogue["SDXL"]["base_model"] == "stabilityai/stable-diffusion-xl-base-1.0"
