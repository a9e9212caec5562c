"""Print SimpleTuner's LyCORIS presets (simpletuner/lycoris_defaults.py) and the LyCORIS algorithms the installed
`lycoris` library knows, as JSON. Runs in the trainer env.

    .venv-trainer/bin/python -P tools/dump_lycoris_presets.py > core/data/lycoris_presets.json

core/simpletuner/lycoris.py reads the result: a job's `lycoris_config` may name a preset instead of giving the object.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import version


def main() -> None:
    from lycoris.wrapper import network_module_dict
    from simpletuner.lycoris_defaults import lycoris_defaults

    json.dump({"simpletuner_version": version("simpletuner"), "lycoris_version": version("lycoris-lora"),
               "algos": sorted(network_module_dict), "presets": lycoris_defaults}, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
