"""Print a base model's parameters per component as an entry of core/data/model_sizes.json. Runs in the app env.

    .venv/bin/python tools/dump_model_sizes.py --hub-id black-forest-labs/FLUX.1-dev --folder /path/to/snapshot
    .venv/bin/python tools/dump_model_sizes.py --hub-id black-forest-labs/FLUX.1-dev --online

--folder reads a local diffusers folder (or a Hugging Face cache snapshot) through core/models/sizes.py's
`model_sizes`: each component's safetensors headers, no tensor loaded. --online asks the Hub for the same headers
(huggingface_hub's HfApi.get_safetensors_metadata, HF_TOKEN for a gated model). The output is
{"<lower-case hub id>": {"components": {component: {"params": N, "source": "..."}}}}: merge it into the table's
"models". Entries written by hand from a published parameter count name that publication as their source.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project's core package, whatever the working directory

from core.models import model_sizes  # noqa: E402


def folder_entry(folder: Path) -> dict[str, Any]:
    """component -> {"params", "source"} from the folder's safetensors headers."""
    source = f"safetensors headers of {folder.name} (tools/dump_model_sizes.py --folder)"
    return {name: {"params": size.params, "source": source} for name, size in model_sizes(folder).items()}


def online_entry(hub_id: str) -> dict[str, Any]:
    """component -> {"params", "source"} from the Hub's safetensors metadata of each component folder."""
    from huggingface_hub import HfApi  # only here: the --folder path needs no Hub client

    metadata = HfApi().get_safetensors_metadata(hub_id)
    params: dict[str, int] = {}
    for filename, file in metadata.files_metadata.items():
        component = filename.rpartition("/")[0] or "model"
        params[component] = params.get(component, 0) + sum(file.parameter_count.values())
    source = f"safetensors headers of {hub_id} on the Hub (tools/dump_model_sizes.py --online)"
    return {name: {"params": count, "source": source} for name, count in sorted(params.items())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hub-id", required=True, help="the Hub id the entry is for (the table's key)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--folder", type=Path, help="a local diffusers folder or Hugging Face cache snapshot")
    where.add_argument("--online", action="store_true", help="read the headers from the Hub")
    args = parser.parse_args(argv)
    components = online_entry(args.hub_id) if args.online else folder_entry(args.folder.resolve())
    if not components:
        print(f"no safetensors weights found for {args.hub_id}", file=sys.stderr)
        return 1
    json.dump({args.hub_id.strip("/").lower(): {"components": components}}, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
