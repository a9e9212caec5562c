"""Print the base-model licence table as JSON, from SimpleTuner's own model classes. Runs in the trainer env:

    .venv-trainer/bin/python -P tools/dump_model_licenses.py > core/data/model_licenses.json

Each model family's class carries MODEL_LICENSE (a Hub licence id, or "other"), and a few MODEL_LICENSE_NAME and
MODEL_LICENSE_LINK for a custom licence; its HUGGINGFACE_PATHS lists the Hub models of its flavours. SimpleTuner's
card writer also keeps a family -> licence-name table (helpers/publishing/metadata.py) that it folds to "other" at
import; the names are read from its source so a custom licence keeps its name. CORRECTIONS are the few Hub models
whose own card says otherwise than their family's class (checked against each model's card on the Hub).
The app reads the table (core/publishing/license.py) without importing SimpleTuner.
"""

from __future__ import annotations

import ast
import json
import sys
from importlib.metadata import version
from pathlib import Path

# What each model's own Hub card says, where the family's class would say something else or nothing.
CORRECTIONS: dict[str, dict[str, str]] = {
    "black-forest-labs/FLUX.1-dev": {
        "license": "other", "license_name": "flux-1-dev-non-commercial-license",
        "license_link": "https://huggingface.co/black-forest-labs/FLUX.1-dev/blob/main/LICENSE.md"},
    "black-forest-labs/FLUX.1-schnell": {"license": "apache-2.0"},
    "stabilityai/stable-diffusion-3.5-large": {
        "license": "other", "license_name": "stabilityai-ai-community",
        "license_link": "https://huggingface.co/stabilityai/stable-diffusion-3.5-large/blob/main/LICENSE.md"},
    "stabilityai/stable-diffusion-3.5-medium": {
        "license": "other", "license_name": "stabilityai-ai-community",
        "license_link": "https://huggingface.co/stabilityai/stable-diffusion-3.5-medium/blob/main/LICENSE.md"},
    "stabilityai/stable-diffusion-xl-base-1.0": {"license": "openrail++"},
}
# The family default for a custom licence: the link of its best-known model.
FAMILY_LINKS = {
    "flux": "https://huggingface.co/black-forest-labs/FLUX.1-dev/blob/main/LICENSE.md",
    "sd3": "https://huggingface.co/stabilityai/stable-diffusion-3.5-large/blob/main/LICENSE.md",
}


def card_license_names() -> dict[str, str]:
    """SimpleTuner's family -> licence-name table, as written in its source (the module rewrites it on import)."""
    import simpletuner

    source = Path(simpletuner.__file__).parent / "helpers" / "publishing" / "metadata.py"
    for node in ast.parse(source.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "licenses" for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def family_licence(cls, family: str, names: dict[str, str]) -> dict[str, str]:
    entry = {"license": str(getattr(cls, "MODEL_LICENSE", "other") or "other")}
    name, link = getattr(cls, "MODEL_LICENSE_NAME", None), getattr(cls, "MODEL_LICENSE_LINK", None)
    if entry["license"] == "other" and not name and names.get(family) not in (None, "other"):
        name = names[family]
    if isinstance(name, str) and name:
        entry["license_name"] = name
        link = link or FAMILY_LINKS.get(family)
    if isinstance(link, str) and link:
        entry["license_link"] = link
    return entry


def main() -> None:
    import simpletuner.helpers.models  # noqa: F401  (registers the families)
    from simpletuner.helpers.models.registry import ModelRegistry

    names = card_license_names()
    families: dict[str, dict] = {}
    models: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    for family, lazy in sorted(ModelRegistry.model_families().items()):
        try:
            cls = lazy.get_real_class() if hasattr(lazy, "get_real_class") else lazy
        except Exception as exc:  # a family whose module needs an optional package: listed, not guessed
            skipped[family] = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            continue
        families[family] = family_licence(cls, family, names)
        for repo in sorted(set((getattr(cls, "HUGGINGFACE_PATHS", None) or {}).values())):
            if isinstance(repo, str) and repo.count("/") == 1:
                models[repo.lower()] = {"family": family, **families[family]}  # Hub ids ignore case
    for repo, entry in CORRECTIONS.items():
        models[repo.lower()] = {"family": models.get(repo.lower(), {}).get("family", ""), **entry}
    document = {"simpletuner_version": version("simpletuner"), "families": families,
                "models": dict(sorted(models.items())), "skipped_families": skipped}
    json.dump(document, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
