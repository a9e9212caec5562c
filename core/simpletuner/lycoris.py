"""LyCORIS settings of a job: SimpleTuner's named presets and the checks SimpleTuner makes of a LyCORIS config.

A job's `config.lycoris_config` is the LyCORIS config object inline (`{"algo": "lokr", "multiplier": 1.0, ...}`),
or the name of one of SimpleTuner's presets (`"lokr"`, `"loha"`, ... from its `lycoris_defaults`, generated into
core/data/lycoris_presets.json by tools/dump_lycoris_presets.py). core/training/config.py writes the object into the
job's config folder and points SimpleTuner's `--lycoris_config` at it. The checks here are the ones SimpleTuner makes
when it starts (the keys it asserts) plus the algorithm names the installed `lycoris` library knows, so a bad config
is refused when the job is validated, never after the model was downloaded.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from core.errors import SpecError
from core.settings import TABLES_DIR

PRESETS_FILE = TABLES_DIR / "lycoris_presets.json"
FIELD = "config.lycoris_config"
KEYS = ("lycoris_config", "--lycoris_config")


@lru_cache(maxsize=1)
def _data() -> dict[str, Any]:
    return json.loads(PRESETS_FILE.read_text())


def lycoris_presets() -> dict[str, dict[str, Any]]:
    """SimpleTuner's LyCORIS presets: name -> config object."""
    return _data()["presets"]


def lycoris_algos() -> list[str]:
    """The `algo` values the installed lycoris library takes."""
    return list(_data()["algos"])


def with_preset(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    """A job's raw config with a preset name in `lycoris_config` replaced by the preset's object (a copy; the raw
    config is returned as is when there is nothing to replace). SpecError for a name that is no preset."""
    key = next((key for key in KEYS if key in raw), "")
    value = raw.get(key) if key else None
    if not isinstance(value, str) or value.strip()[:1] in ("{", "["):
        return raw  # an object, inline JSON text, or nothing: the flag policy takes it from here
    name = value.strip()
    presets = lycoris_presets()
    if name not in presets:
        close = difflib.get_close_matches(name, list(presets), n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise SpecError(f"{name!r} is not one of SimpleTuner's LyCORIS presets ({', '.join(presets)}){hint}; give "
                        "a preset name or the LyCORIS config object itself (a file path is not accepted)",
                        field=f"config.{key}")
    return {**raw, key: json.loads(json.dumps(presets[name]))}


def check_lycoris_config(value: Any) -> list[dict[str, str]]:
    """What SimpleTuner would refuse in a LyCORIS config object, as errors naming the key."""
    if not isinstance(value, Mapping):
        return [{"field": FIELD, "message": "must be a LyCORIS config object or the name of a preset "
                                            f"({', '.join(lycoris_presets())})"}]
    errors = []
    algo = value.get("algo")
    if not isinstance(algo, str) or algo.lower() not in lycoris_algos():
        close = difflib.get_close_matches(str(algo), lycoris_algos(), n=1, cutoff=0.6)
        errors.append({"field": f"{FIELD}.algo",
                       "message": f"must be one of {', '.join(lycoris_algos())}, got {algo!r}"
                                  + (f" (did you mean '{close[0]}'?)" if close else "")})
    needed = ["multiplier", "linear_alpha"] + ([] if value.get("full_matrix") is True else ["linear_dim"])
    for key in needed:
        if key not in value:
            errors.append({"field": f"{FIELD}.{key}", "message": f"a LyCORIS config needs '{key}' "
                                                                 "(SimpleTuner refuses one without it)"})
    multiplier = value.get("multiplier")
    if "multiplier" in value and (isinstance(multiplier, bool) or not isinstance(multiplier, (int, float))):
        errors.append({"field": f"{FIELD}.multiplier", "message": f"must be a number, got {multiplier!r}"})
    return errors
