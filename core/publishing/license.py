"""The licence a LoRA's card declares: the base model's, unless the job names one.

A LoRA is a derivative of its base model, so its card carries the base model's licence (`license`, and for a custom
licence such as FLUX.1-dev's non-commercial one `license_name` and `license_link`). Where it comes from, first found:

1. the job's `hub.license` (the user knows best);
2. the base model's own card, when it is on this machine: README.md front matter in a local model folder, or in the
   Hugging Face cache for a Hub model (never fetched: no network here);
3. core/data/model_licenses.json, generated from SimpleTuner's model classes (tools/dump_model_licenses.py): first
   the Hub model's own entry, then its model family's.

Nothing found: no licence is claimed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from core.settings import TABLES_DIR, hub_cache_path

LICENSES_FILE = TABLES_DIR / "model_licenses.json"
HUB = "https://huggingface.co"


@dataclass(frozen=True)
class ModelLicense:
    license: str
    name: str | None = None
    link: str | None = None
    source: str = ""
    """Where it was found: 'job', 'base model card', 'SimpleTuner (model)', 'SimpleTuner (family)'."""

    def card_fields(self) -> dict[str, str]:
        """license / license_name / license_link, as the card's YAML header takes them."""
        fields = {"license": self.license}
        if self.name:
            fields["license_name"] = self.name
        if self.link:
            fields["license_link"] = self.link
        return fields


@cache
def license_table() -> dict:
    return json.loads(LICENSES_FILE.read_text())


def base_model_license(*, base_model: str, model_family: str, chosen: str | None = None,
                       hf_cache: Path | None = None) -> ModelLicense | None:
    """The licence for a LoRA of `base_model` (a Hub id or a local folder); `chosen` is the job's hub.license."""
    if chosen:
        return ModelLicense(license=chosen, source="job")
    found = _from_card(base_model, hf_cache=hf_cache)
    if found:
        return found
    table = license_table()
    entry = table["models"].get(base_model.strip().lower())
    source = "SimpleTuner (model)"
    if entry is None:
        entry, source = table["families"].get(model_family), "SimpleTuner (family)"
    if not entry:
        return None
    return ModelLicense(license=entry["license"], name=entry.get("license_name"), link=entry.get("license_link"),
                        source=source)


def _from_card(base_model: str, *, hf_cache: Path | None) -> ModelLicense | None:
    folder = Path(base_model).expanduser()
    if folder.is_dir():
        return _read_card(folder / "README.md", link_base=None)
    if base_model.count("/") != 1 or base_model.startswith((".", "/")):
        return None
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(base_model, "README.md", cache_dir=str(hf_cache or hub_cache_path()))
    except Exception:  # a malformed id or an unreadable cache: no card, the table answers
        return None
    if not isinstance(cached, str):
        return None
    return _read_card(Path(cached), link_base=f"{HUB}/{base_model}/blob/main/")


def _read_card(path: Path, *, link_base: str | None) -> ModelLicense | None:
    if not path.is_file():
        return None
    from huggingface_hub.repocard import metadata_load

    try:
        meta = metadata_load(path) or {}
    except Exception:  # a card whose YAML does not parse says nothing we can use
        return None
    value = meta.get("license")
    if isinstance(value, list):
        value = value[0] if value else None
    if not isinstance(value, str) or not value.strip():
        return None
    name, link = meta.get("license_name"), meta.get("license_link")
    if isinstance(link, str) and link and "://" not in link:
        # A card links its licence file relative to its repo; only a Hub repo has an address for it.
        link = link_base + link.lstrip("./") if link_base else None
    return ModelLicense(license=value.strip(), name=name if isinstance(name, str) and name else None,
                        link=link if isinstance(link, str) and link else None, source="base model card")
