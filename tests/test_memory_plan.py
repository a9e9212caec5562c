"""The memory plan from a model's own size: its calibration reproduces SimpleTuner's published figures, and it reads
a local model's size from its safetensors headers."""

from __future__ import annotations

import pytest

from core.models import model_sizes
from core.training.memory_plan import (
    calibration,
    estimate,
    estimate_table,
    figure_shape,
    find_params,
    headroom_gb,
    precision_class,
    size_table,
    table_params,
)
from tests.conftest import ROOT

CALIBRATED = [(family, flavour, entry) for family, top in estimate_table()["memory_calibration"].items()
              if isinstance(top, dict) for flavour, entry in [(None, top), *top.get("flavours", {}).items()]
              if "figure" in entry]


def _estimate(family, flavour, figure, precision):
    params = table_params(figure["model"])
    return estimate(params, figure_shape(figure), precision_class_name=precision_class(precision),
                    calibrated=calibration(family, flavour), ramtorch=figure.get("ramtorch", False))


@pytest.mark.parametrize(("family", "flavour", "entry"), CALIBRATED, ids=[f"{f}-{v}" for f, v, _ in CALIBRATED])
def test_the_calibration_reproduces_each_published_figure_within_15_percent(family, flavour, entry):
    figure = entry["figure"]
    assert abs(_estimate(family, flavour, figure, figure["precision"]).training_gb - figure["gb"]) < 0.05
    for check in entry.get("checks", []):
        got = _estimate(family, flavour, figure, check["precision"]).training_gb
        if check.get("conservative"):  # nf4: the published figure is below what its weights allow; never under it
            assert got >= check["gb"], (check, got)
        else:
            assert abs(got - check["gb"]) <= 0.15 * check["gb"], (check, got)


def test_every_family_names_the_figure_its_calibration_rests_on():
    for family, flavour in [("flux", None), ("chroma", None), ("sd3", None), ("qwen_image", "v1.0"), ("sdxl", None),
                            ("wan", "t2v-480p-1.3b-2.1"), ("wan", "t2v-480p-14b-2.1")]:
        found = calibration(family, flavour)
        assert found is not None and found.coefficient > 0 and "SimpleTuner" in found.basis, family
    assert "borrowed" in calibration("sd3", None).basis
    assert calibration("qwen_image", "v2.1") is None  # no figure: the recipe's tiers decide


def test_the_size_table_names_a_source_per_component_and_uses_known_hub_ids():
    import json

    ids = json.loads((ROOT / "core" / "data" / "model_ids.json").read_text())["ids"]
    for hub_id, entry in size_table()["models"].items():
        assert hub_id in ids, hub_id
        for component, part in entry["components"].items():
            assert part["params"] > 1_000_000 and part["source"], (hub_id, component)
    flux = table_params("black-forest-labs/FLUX.1-dev")
    assert flux.trained == 11_900_000_000 and len(flux.text_encoders) == 2


def test_a_local_model_is_sized_from_its_own_headers_and_a_fine_tune_by_its_flavour():
    tiny = ROOT / ".cache" / "tiny-flux"
    if not tiny.is_dir():
        pytest.skip("the tiny FLUX model is not built (make setup)")
    found = find_params(base_model=str(tiny), flavour_id="black-forest-labs/flux.1-dev", hub_cache=None)
    assert found.components == {name: size.params for name, size in model_sizes(tiny).items()}
    assert "safetensors headers" in found.source
    tuned = find_params(base_model="someone/flux-finetune", flavour_id="black-forest-labs/flux.1-dev", hub_cache=None)
    assert tuned.trained == 11_900_000_000


def test_headroom_is_a_share_of_the_card_with_a_floor():
    assert headroom_gb(16) == 1.5 and headroom_gb(80) == 4.8
