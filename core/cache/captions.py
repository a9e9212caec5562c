"""Generated captions kept in the cache on the volume (core/cache/store.py), so that a second run of the same job
does not
caption again.

One entry per caption run, keyed by what changes the model's text: the caption model's identity (a Hub model's
commit in the Hugging Face cache, or a local folder's files with their sizes and times), the caption script, the
style and length settings, and the sha256 of every image captioned. It holds the raw text per image hash; the
prefix and trigger word are applied afterwards, as for fresh captions, so they may change without a miss.
"""

from __future__ import annotations

import json
from pathlib import Path

from core.cache.store import Cache, file_sha256, key_of
from core.spec import CaptioningSpec

KIND = "captions"
FILE = "captions.json"




def model_identity(model: str, *, hub_cache: Path) -> str | None:
    """What names the caption model's weights now; None when nothing does yet (a Hub model not in the cache)."""
    folder = Path(model)
    if folder.is_absolute():
        if not (folder / "config.json").is_file():  # no model: nothing to walk (a job's folder is checked first)
            return None
        files = sorted((p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
                       for p in folder.rglob("*") if p.is_file())
        return key_of({"folder": str(folder), "files": files})
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(model, "config.json", cache_dir=hub_cache)
    return f"{model}@{Path(config).parent.name}" if isinstance(config, str) else None  # snapshots/<commit>/


def run_key(captioning: CaptioningSpec, *, model: str, script: Path, images: list[str]) -> str:
    # batch_size too: padding in a batch can change a greedy decode's text.
    return key_of({"kind": KIND, "model": model, "script": file_sha256(script), "style": captioning.style,
                   "max_tokens": captioning.new_tokens, "batch_size": captioning.batch_size, "images": images})


def cached_captions(cache: Cache, key: str) -> dict[str, str] | None:
    """Image sha256 -> raw caption text, from the entry under `key`; None on a miss."""
    entry = cache.lookup(KIND, key)
    if entry is None:
        return None
    try:
        captions = json.loads((entry.data / FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return {str(k): str(v) for k, v in captions.items()} if isinstance(captions, dict) else None


def keep_captions(cache: Cache, key: str, captions: dict[str, str], *, build_s: float) -> None:
    """Best effort, like every cache write: a failure leaves the next run to caption again."""
    try:
        with cache.writing(KIND, key, build_s=build_s) as folder:
            (folder / FILE).write_text(json.dumps(captions), encoding="utf-8")
    except OSError:
        return
