"""SimpleTuner's text-embedding and VAE-latent caches, reused through the cache (core/cache.py).

SimpleTuner writes its caches into the folders multidatabackend.json names (`cache_dir` of the text_embeds
backend, `cache_dir_vae` of each image backend), inside the job's folder, and computes only the files it does not
find there. So a whole cache folder is one entry, keyed by every input of its content:
- text embeddings: the text encoders' identity (a local model: its text_encoder*/tokenizer* files' names, sizes and
  times; a Hub model: repo and commit), every caption of the staged dataset, and the settings that change an
  embedding (model family and flavour, precisions, tokenizer and T5 options, the image backends' caption options);
- VAE latents: the VAE's identity (the same way), the content hash of every staged image, the image backend's
  settings (resolution, crop, buckets: everything but its paths) and the settings that change a latent.
Before training, a hit is linked into the job's folder (hard links: no copy; SimpleTuner only adds files beside
them). After a training that succeeded, a folder that missed is stored, written whole and renamed into place, so a
crashed or cancelled job never leaves an entry. Not cached: a model whose identity is unknown (a Hub id whose
commit is not in the local Hugging Face cache), and empty folders (on CPU the latents are computed on the fly).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.cache import Cache, Entry, key_of, link_tree
from core.dataset import Manifest
from core.events import EventSink, LogLine, ignore_event
from core.model_card import is_hub_model_id
from core.settings import Settings
from core.spec import JobSpec

TEXT_SETTINGS = re.compile(r"model_family|model_flavour|precision|text_encoder|tokenizer|t5|caption|prompt_prefix")
VAE_SETTINGS = re.compile(r"model_family|model_flavour|precision|vae|resolution|aspect|crop|image_size|downsample")
BACKEND_PATHS = re.compile(r"dir|path|cache|^id$")
TEXT_PARTS = re.compile(r"^(text_encoder|tokenizer)")


@dataclass
class CacheDir:
    kind: str
    """text_embeds | vae_latents"""
    key: str
    folder: Path
    """The job's own folder SimpleTuner writes into."""
    hit: Entry | None = None
    files: int = 0
    """Files reused (a hit) or stored (a miss)."""


@dataclass
class TrainerCaches:
    """The job's SimpleTuner cache folders and what the cache did for them; the result's `cache` counts."""

    dirs: list[CacheDir] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def reused(self, kind: str) -> int:
        return sum(d.files for d in self.dirs if d.kind == kind and d.hit is not None)

    @property
    def saved_s(self) -> float:
        return sum(d.hit.build_s for d in self.dirs if d.hit is not None)

    def to_dict(self) -> dict[str, Any]:
        return {"text_embeds": self.reused("text_embeds"), "latents": self.reused("vae_latents")}


def plan(spec: JobSpec, backends: list[dict[str, Any]], manifest: Manifest, *, images: dict[str, str],
         settings: Settings) -> TrainerCaches:
    """The cache folders of this job's multidatabackend.json, each with its key; a folder whose inputs cannot be
    identified is left out (computed as usual, never stored)."""
    out = TrainerCaches()
    config = spec.config
    text_model = model_identity(spec.base_model, parts=TEXT_PARTS, settings=settings, config=config)
    vae_name = str(config.get("pretrained_vae_model_name_or_path") or spec.base_model)
    vae_model = model_identity(vae_name, parts=re.compile(r"^vae$"), settings=settings, config=config)
    image_backends = [b for b in backends if b.get("dataset_type", "image") == "image"]
    caption_options = [{k: v for k, v in b.items() if "caption" in k or "instance_prompt" in k}
                       for b in image_backends]
    for backend in backends:
        if backend.get("dataset_type") == "text_embeds" and backend.get("cache_dir") and text_model:
            key = key_of({"kind": "text_embeds", "model": text_model, "captions": sorted({e.caption for e in
                                                                                          manifest.images}),
                          "settings": _matching(config, TEXT_SETTINGS), "backends": caption_options})
            out.dirs.append(CacheDir("text_embeds", key, Path(backend["cache_dir"])))
        elif backend in image_backends and backend.get("cache_dir_vae") and vae_model and images:
            settings_part = {k: v for k, v in backend.items() if not BACKEND_PATHS.search(k)}
            key = key_of({"kind": "vae_latents", "model": vae_model, "images": images, "backend": settings_part,
                          "data_dir": _relative(backend.get("instance_data_dir"), manifest.root),
                          "settings": _matching(config, VAE_SETTINGS)})
            out.dirs.append(CacheDir("vae_latents", key, Path(backend["cache_dir_vae"])))
    return out


def restore(caches: TrainerCaches, cache: Cache, *, on_event: EventSink = ignore_event) -> TrainerCaches:
    """Link every hit into the job's folder; a hit that cannot be linked counts as a miss."""
    for item in caches.dirs:
        entry = cache.lookup(item.kind, item.key)
        if entry is None:
            continue
        try:
            item.files = link_tree(entry.data, item.folder)
        except OSError as exc:
            on_event(LogLine(f"cached {item.kind} not reused: {exc}", severity="warning"))
            continue
        item.hit = entry
        on_event(LogLine(f"{item.files} {_noun(item.kind)} from the cache"))
    return caches


def store(caches: TrainerCaches, cache: Cache, *, build_s: float, on_event: EventSink = ignore_event) -> None:
    """Keep the folders that missed (after a training that succeeded: SimpleTuner finished every file)."""
    for item in caches.dirs:
        if item.hit is not None or not item.folder.is_dir() or not any(item.folder.rglob("*.pt")):
            continue
        try:
            with cache.writing(item.kind, item.key, build_s=build_s) as folder:
                item.files = link_tree(item.folder, folder)
        except OSError as exc:
            on_event(LogLine(f"{_noun(item.kind)} not kept in the cache: {exc}", severity="warning"))


def model_identity(name: str, *, parts: re.Pattern[str], settings: Settings, config: dict[str, Any]) -> str | None:
    """What identifies a model's component: a local folder's files (names, sizes, times) under the folders `parts`
    matches (or the whole folder/file when it has none); a Hub id with the commit the local Hugging Face cache
    resolves its revision to. None when unknown."""
    path = Path(name)
    if path.is_absolute() and path.exists():
        if path.is_file():
            stat = path.stat()
            return key_of({"file": str(path), "size": stat.st_size, "mtime": stat.st_mtime_ns})
        chosen = [p for p in path.iterdir() if p.is_dir() and parts.match(p.name)] or [path]
        files = sorted([f.relative_to(path).as_posix(), f.stat().st_size, f.stat().st_mtime_ns]
                       for folder in chosen for f in folder.rglob("*") if f.is_file())
        return key_of({"folder": str(path), "files": files})
    if not is_hub_model_id(name):
        return None
    revision = str(config.get("revision") or "main")
    if re.fullmatch(r"[0-9a-f]{40}", revision):
        return f"hub:{name}@{revision}:{config.get('variant') or ''}"
    hub_cache = Path(settings.hf_home) / "hub" if settings.hf_home else None
    if hub_cache is None:
        from huggingface_hub import constants

        hub_cache = Path(constants.HF_HUB_CACHE)
    ref = hub_cache / f"models--{name.replace('/', '--')}" / "refs" / revision
    try:
        commit = ref.read_text().strip()
    except OSError:
        return None
    return f"hub:{name}@{commit}:{config.get('variant') or ''}" if commit else None


def _matching(config: dict[str, Any], pattern: re.Pattern[str]) -> dict[str, Any]:
    return {k: v for k, v in sorted(config.items())
            if pattern.search(k) and k != "pretrained_model_name_or_path" and not k.startswith("validation")}


def _relative(value: Any, root: Path) -> str:
    try:
        return Path(str(value)).relative_to(root).as_posix() if value else ""
    except ValueError:
        return str(value)


def _noun(kind: str) -> str:
    return "text embeddings" if kind == "text_embeds" else "VAE latents"
