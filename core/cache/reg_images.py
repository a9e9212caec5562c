"""Class images the base model rendered (core/generation/reg_images.py), kept in the cache on the volume
(core/cache/store.py) so a second job with the same request does not render them again (a hundred renders of a
large model take many minutes of GPU time).

One entry per request, keyed by what changes the pixels: the base model's identity (a local folder: its files'
names, sizes and times; a Hub model: repo plus the commit its revision resolves to in the local Hugging Face cache,
and the variant), the prompt and negative prompt, the count, the size, the seed, the steps, the guidance and the
generation script's content. It holds the PNGs and their caption files, linked into the job's `dataset/reg/` on a hit.
A Hub model not in the local cache yet has no identity: its images are rendered and not kept.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from core.cache.buckets import model_identity
from core.cache.store import Cache, file_sha256, key_of, link_tree
from core.settings import Settings

KIND = "reg_images"
_WHOLE_FOLDER = re.compile(r"(?!)")
"""Matches no sub-folder: a local model's identity is every file of it."""


def reg_images_key(request: dict[str, Any], *, base_model: str, config: dict[str, Any], settings: Settings,
                   script: Path) -> str | None:
    """The entry's key for a render `request` (prompt, negative_prompt, count, size, seed, steps, guidance) of
    `base_model`; None when the model's identity is unknown (nothing is looked up or kept)."""
    model = model_identity(base_model, parts=_WHOLE_FOLDER, settings=settings, config=config)
    if model is None:
        return None
    return key_of({"kind": KIND, "model": model, "request": dict(sorted(request.items())),
                   "script": file_sha256(script)})


def restore_reg_images(cache: Cache, key: str, dest: Path) -> tuple[int, float] | None:
    """The entry's files linked into `dest` (emptied first): (how many files, what rendering them took), or None on a
    miss."""
    entry = cache.lookup(KIND, key)
    if entry is None:
        return None
    try:
        count = link_tree(entry.data, dest)
    except OSError:
        return None
    return count, entry.build_s


def keep_reg_images(cache: Cache, key: str, folder: Path, *, build_s: float) -> bool:
    """Best effort, like every cache write: False leaves the next job to render again."""
    try:
        with cache.writing(KIND, key, build_s=build_s) as data:
            link_tree(folder, data)
    except OSError:
        return False
    return cache.lookup(KIND, key) is not None
