"""Print SimpleTuner's Hub ids per model family and flavour as JSON, from its model classes. Runs in the trainer env.

    .venv-trainer/bin/python -P tools/dump_model_ids.py > core/data/model_ids.json

Every model class in simpletuner/helpers/models (listed in its model_metadata.json) has `HUGGINGFACE_PATHS`
(flavour -> Hub id) and `DEFAULT_MODEL_FLAVOUR`. core/simpletuner/families.py reads the result.
"""

from __future__ import annotations

import importlib
import json
import sys
from importlib.metadata import version
from pathlib import Path

import simpletuner


def _classes() -> dict[str, type]:
    models = Path(simpletuner.__file__).parent / "helpers" / "models"
    metadata = json.loads((models / "model_metadata.json").read_text())
    return {family: getattr(importlib.import_module(entry["module_path"]), entry["class_name"])
            for family, entry in sorted(metadata.items())}


def _primary(candidates: list[dict[str, str]], *, flavour_counts: dict[str, int],
             defaults: dict[str, str | None]) -> dict[str, str]:
    """One id, several (family, flavour) pairs: the family with the most flavours is the general one (wan, not
    infinitetalk); within it the default flavour if it maps here, else the first one listed."""
    family = max(candidates, key=lambda c: flavour_counts[c["family"]])["family"]
    mine = [c for c in candidates if c["family"] == family]
    return next((c for c in mine if c["flavour"] == defaults[family]), mine[0])


def main() -> int:
    families: dict[str, dict] = {}
    by_id: dict[str, list[dict[str, str]]] = {}
    for family, model_class in _classes().items():
        paths = dict(getattr(model_class, "HUGGINGFACE_PATHS", None) or {})
        default = getattr(model_class, "DEFAULT_MODEL_FLAVOUR", None)
        families[family] = {"name": str(getattr(model_class, "NAME", family)), "default_flavour": default,
                            "flavours": paths}
        for flavour, hub_id in paths.items():
            by_id.setdefault(str(hub_id).lower(), []).append({"family": family, "flavour": flavour})
    counts = {family: len(entry["flavours"]) for family, entry in families.items()}
    defaults = {family: entry["default_flavour"] for family, entry in families.items()}
    ids = {}
    for hub_id, candidates in sorted(by_id.items()):
        entry = dict(_primary(candidates, flavour_counts=counts, defaults=defaults))
        others = [c for c in candidates if c != entry]
        if others:
            entry["also"] = others
        ids[hub_id] = entry
    json.dump({"simpletuner_version": version("simpletuner"), "families": families, "ids": ids},
              sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
