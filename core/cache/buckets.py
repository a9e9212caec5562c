"""SimpleTuner's text-embedding and VAE-latent caches, reused through the cache (core/cache/store.py).

SimpleTuner writes its caches into the folders multidatabackend.json names (`cache_dir` of the text_embeds
backend, `cache_dir_vae` of each image or video backend), inside the job's folder, and computes only the files it
does not find there. So a whole cache folder is one entry, keyed by every input of its content:
- text embeddings: the text encoders' identity (a local model: its text_encoder*/tokenizer* files' names, sizes and
  times; a Hub model: repo and commit), every caption of the staged dataset (images and clips), and the settings
  that change an embedding (model family and flavour, precisions, tokenizer and T5 options, the image and video
  backends' caption options);
- VAE latents: the VAE's identity (the same way), the content hash of every staged image (a video backend: every
  staged clip), the backend's settings (resolution, crop, buckets, its video block: everything but its paths) and
  the settings that change a latent;
- aspect buckets: the two files SimpleTuner's bucket scan writes into a local image or video backend's folder
  (aspect_ratio_bucket_indices_<id>.json, aspect_ratio_bucket_metadata_<id>.json: every file's bucket and sizes),
  keyed by the files' content and paths, the backend's settings, the settings that change a bucket and the
  installed SimpleTuner version. They hold absolute paths of the job's files: the entry keeps them with the staged
  folder (images/ or clips/) replaced by a placeholder, and a hit is written back with the new job's folder (parsed
  JSON, never a text replace), so SimpleTuner finds every file already scanned ("No new files discovered").
Before training, a hit is linked into the job's folder (hard links: no copy; SimpleTuner only adds files beside
them). After a training that succeeded, a folder that missed is stored, written whole and renamed into place, so a
crashed or cancelled job never leaves an entry. Not cached: a model whose identity is unknown (a Hub id whose
commit is not in the local Hugging Face cache), and empty folders (on CPU the latents are computed on the fly).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from core.adapters import TrainerEnv, is_hub_model_id
from core.cache.store import Cache, Entry, file_sha256, key_of, link_tree
from core.dataset import Manifest
from core.events import EventSink, LogLine, ignore_event
from core.jobdir import JobDir
from core.settings import Settings
from core.spec import JobSpec

TEXT_SETTINGS = re.compile(r"model_family|model_flavour|precision|text_encoder|tokenizer|t5|caption|prompt_prefix")
VAE_SETTINGS = re.compile(r"model_family|model_flavour|precision|vae|resolution|aspect|crop|image_size|downsample")
BACKEND_PATHS = re.compile(r"dir|path|cache|^id$")
TEXT_PARTS = re.compile(r"^(text_encoder|tokenizer)")
BUCKET_SETTINGS = re.compile(r"model_family|model_flavour|resolution|aspect|crop|image_size|downsample|"
                             r"train_batch_size|bucket|repeats|max_num_samples")
"""Config flags that change SimpleTuner's bucket files (sizes, bucket alignment per family, pruning by batch size)."""
BUCKET_FILES = ("aspect_ratio_bucket_metadata", "aspect_ratio_bucket_indices")
"""Written back metadata first: indices without metadata would make SimpleTuner scan again, never the reverse."""
IMAGES_PLACEHOLDER = "<staged-images>"
"""Stands for the job's staged images folder in a kept bucket file (SimpleTuner writes absolute paths)."""
SCAN_LINE = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \[\w+\] (.*)")


@dataclass
class CacheDir:
    kind: str
    """text_embeds | vae_latents | buckets"""
    key: str
    folder: Path
    """The job's own folder SimpleTuner writes into."""
    hit: Entry | None = None
    files: int = 0
    """Files reused (a hit) or stored (a miss); for buckets: the images they describe."""
    names: tuple[str, ...] = ()
    """buckets: SimpleTuner's file names in `folder`, in BUCKET_FILES' order."""
    images_root: Path | None = None
    """buckets: the staged images folder that IMAGES_PLACEHOLDER stands for."""
    log: Path | None = None
    """buckets: SimpleTuner's log, which times its scan (what a reuse saves)."""
    backend_id: str = ""


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
        return {"text_embeds": self.reused("text_embeds"), "latents": self.reused("vae_latents"),
                "buckets": self.reused("buckets")}


def plan(spec: JobSpec, backends: list[dict[str, Any]], manifest: Manifest, *, images: dict[str, str],
         settings: Settings, clips: dict[str, str] | None = None) -> TrainerCaches:
    """The cache folders of this job's multidatabackend.json, each with its key; a folder whose inputs cannot be
    identified is left out (computed as usual, never stored). `images`, `clips`: the staged files' content hashes
    (the image backends' and the video backends' content)."""
    out = TrainerCaches()
    config = spec.config
    text_model = model_identity(spec.base_model, parts=TEXT_PARTS, settings=settings, config=config)
    vae_name = str(config.get("pretrained_vae_model_name_or_path") or spec.base_model)
    vae_model = model_identity(vae_name, parts=re.compile(r"^vae$"), settings=settings, config=config)
    # A backend never sampled for training (an edit job's samples dataset, probability 0) holds other files than the
    # staged dataset's content says: its caches are computed each time, never stored.
    media = [(b, *_content(b, manifest, images=images, clips=clips or {})) for b in backends
             if b.get("dataset_type", "image") in ("image", "video") and b.get("probability") != 0]
    caption_options = [{k: v for k, v in b.items() if "caption" in k or "instance_prompt" in k} for b, _, _ in media]
    captions = sorted({e.caption for e in manifest.images} | {e.caption for e in manifest.clips})
    for backend in backends:
        if backend.get("dataset_type") == "text_embeds" and backend.get("cache_dir") and text_model:
            key = key_of({"kind": "text_embeds", "model": text_model, "captions": captions,
                          "settings": _matching(config, TEXT_SETTINGS), "backends": caption_options})
            out.dirs.append(CacheDir("text_embeds", key, Path(backend["cache_dir"])))
    for backend, root, content in media:
        if backend.get("cache_dir_vae") and vae_model and content:
            settings_part = {k: v for k, v in backend.items() if not BACKEND_PATHS.search(k)}
            key = key_of({"kind": "vae_latents", "model": vae_model, "images": content, "backend": settings_part,
                          "data_dir": _relative(backend.get("instance_data_dir"), root),
                          "settings": _matching(config, VAE_SETTINGS)})
            out.dirs.append(CacheDir("vae_latents", key, Path(backend["cache_dir_vae"])))
    version = simpletuner_version(settings)
    for backend, root, content in media:
        if content and version and (item := _bucket_dir(backend, root, content=content, config=config,
                                                         version=version)):
            out.dirs.append(item)
    return out


def _content(backend: dict[str, Any], manifest: Manifest, *, images: dict[str, str],
             clips: dict[str, str]) -> tuple[Path, dict[str, str]]:
    """(the staged folder a backend reads, the content hashes of its files): the clips for a video backend, the
    images for an image one."""
    if backend.get("dataset_type") == "video":
        return manifest.clips_root or manifest.root, clips
    subsets, folder = manifest.subsets, backend.get("instance_data_dir")
    for root, files in ((subsets.reg_root, subsets.reg), (subsets.eval_root, subsets.eval)) if subsets else ():
        # The regularisation and held-out backends read their own folder: keyed by its images, not the dataset's.
        if root is not None and folder and os.path.abspath(str(folder)) == os.path.abspath(root):
            return root, {path.name: file_sha256(path) for path in files} if images else {}
    return manifest.root, images


def _bucket_dir(backend: dict[str, Any], staged: Path, *, content: dict[str, str], config: dict[str, Any],
                version: str) -> CacheDir | None:
    """The bucket files of a local image or video backend whose folder is in the staged dataset's folder `staged`
    (SimpleTuner's default discovery metadata: other metadata backends keep theirs elsewhere)."""
    folder = backend.get("instance_data_dir")
    root = Path(os.path.abspath(staged))
    if (backend.get("type", "local") != "local" or backend.get("metadata_backend", "discovery") != "discovery"
            or not folder or not Path(os.path.abspath(str(folder))).is_relative_to(root)):
        return None
    suffix = str(backend.get("cache_file_suffix") or backend.get("id") or "")
    settings_part = {k: v for k, v in backend.items() if not BACKEND_PATHS.search(k)}
    key = key_of({"kind": "buckets", "images": content, "simpletuner": version, "backend": settings_part,
                  "files": sorted(content), "data_dir": _relative(folder, root),
                  "settings": _matching(config, BUCKET_SETTINGS)})
    return CacheDir("buckets", key, Path(os.path.abspath(str(folder))), names=tuple(f"{name}_{suffix}.json"
                                                                                    for name in BUCKET_FILES),
                    images_root=root, log=JobDir(root.parent.parent).log, backend_id=str(backend.get("id") or ""))


def simpletuner_version(settings: Settings) -> str | None:
    """The SimpleTuner version installed in the trainer env (its package metadata folder's name); None if absent."""
    try:
        found = [p.name for p in TrainerEnv(settings).installed("*.dist-info")
                 if p.name.lower().startswith("simpletuner-")]
    except OSError:
        return None
    return max(found).split("-", 1)[1].removesuffix(".dist-info") if found else None


def restore(caches: TrainerCaches, cache: Cache, *, on_event: EventSink = ignore_event) -> TrainerCaches:
    """Link every hit into the job's folder; a hit that cannot be linked counts as a miss."""
    for item in caches.dirs:
        entry = cache.lookup(item.kind, item.key)
        if entry is None:
            continue
        try:
            item.files = _write_buckets(entry.data, item) if item.kind == "buckets" else link_tree(entry.data,
                                                                                                     item.folder)
        except (OSError, ValueError) as exc:
            on_event(LogLine(f"cached {item.kind} not reused: {exc}", severity="warning"))
            continue
        item.hit = entry
        on_event(LogLine(f"{item.files} {_noun(item.kind)} from the cache"))
    return caches


def store(caches: TrainerCaches, cache: Cache, *, build_s: float, on_event: EventSink = ignore_event) -> None:
    """Keep the folders that missed (after a training that succeeded: SimpleTuner finished every file)."""
    for item in caches.dirs:
        if item.kind == "buckets" and item.hit is None:
            _store_buckets(item, cache, build_s=build_s, on_event=on_event)
            continue
        if item.hit is not None or not item.folder.is_dir() or not any(item.folder.rglob("*.pt")):
            continue
        try:
            with cache.writing(item.kind, item.key, build_s=build_s) as folder:
                item.files = link_tree(item.folder, folder)
        except OSError as exc:
            on_event(LogLine(f"{_noun(item.kind)} not kept in the cache: {exc}", severity="warning"))


def _store_buckets(item: CacheDir, cache: Cache, *, build_s: float, on_event: EventSink) -> None:
    """Keep SimpleTuner's bucket files with the images folder as a placeholder; a file that is missing, not JSON, or
    names a path outside the staged images is not kept (a miss for the next job, never a failed one)."""
    try:
        kept = {name: portable(json.loads((item.folder / file).read_text()), root=item.images_root or item.folder)
                for name, file in zip(BUCKET_FILES, item.names, strict=True)}
        images = _bucketed(kept["aspect_ratio_bucket_indices"])
        if not images:
            return
        scan_s = scan_seconds(item.log, backend_id=item.backend_id) if item.log else 0.0
        with cache.writing(item.kind, item.key, build_s=max(build_s, scan_s), images=images) as folder:
            for name, content in kept.items():
                (folder / f"{name}.json").write_text(json.dumps(content))
        item.files = images
    except FileNotFoundError:
        return  # SimpleTuner scanned nothing here (a backend it skipped)
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        on_event(LogLine(f"aspect buckets not kept in the cache: {exc}", severity="warning"))


def portable(content: Any, *, root: Path) -> dict[str, Any]:
    """A bucket file's JSON with every path in the staged images folder `root` written as IMAGES_PLACEHOLDER. The
    indices file's `config` block is left out: SimpleTuner would put its values back over the next job's settings
    where they differ (the key already says the settings are the same), and it writes the current block itself.
    ValueError for anything else that looks like a path (outside the job's images) or not a JSON object."""
    if not isinstance(content, dict):
        raise ValueError("not a JSON object")
    prefix = os.path.abspath(root)

    def convert(value: Any) -> Any:
        if isinstance(value, dict):
            return {convert(k): convert(v) for k, v in value.items()}
        if isinstance(value, list):
            return [convert(v) for v in value]
        if isinstance(value, str):
            if value == prefix or value.startswith(prefix + os.sep):
                return IMAGES_PLACEHOLDER + value[len(prefix):]
            if value.startswith((os.sep, IMAGES_PLACEHOLDER)):
                raise ValueError(f"a path outside the job's images folder: {value[:200]}")
        return value

    return convert({k: v for k, v in content.items() if k != "config"})


def placed(content: Any, *, root: Path) -> Any:
    """The inverse of portable: IMAGES_PLACEHOLDER back to this job's staged images folder."""
    if isinstance(content, dict):
        return {placed(k, root=root): placed(v, root=root) for k, v in content.items()}
    if isinstance(content, list):
        return [placed(v, root=root) for v in content]
    if isinstance(content, str) and content.startswith(IMAGES_PLACEHOLDER):
        return os.path.abspath(root) + content[len(IMAGES_PLACEHOLDER):]
    return content


def _write_buckets(data: Path, item: CacheDir) -> int:
    """Write a kept entry's bucket files into the job's folder (new files, renamed into place: SimpleTuner rewrites
    them, and nothing may write into a cache file). Returns the images they describe."""
    written: list[Path] = []
    indices: dict[str, Any] = {}
    try:
        for name, file in zip(BUCKET_FILES, item.names, strict=True):
            content = placed(json.loads((data / f"{name}.json").read_text()), root=item.images_root or item.folder)
            if not isinstance(content, dict):
                raise ValueError(f"{name}.json is not a JSON object")
            target = item.folder / file
            tmp = target.with_name(f".{file}.tmp")
            tmp.write_text(json.dumps(content))
            os.replace(tmp, target)
            written.append(target)
            indices = content
    except (OSError, ValueError):
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return _bucketed(indices)  # the last file written: the indices


def _bucketed(indices: dict[str, Any]) -> int:
    """The images an indices file puts in a bucket."""
    return len({path for paths in (indices.get("aspect_ratio_bucket_indices") or {}).values() for path in paths})


def scan_seconds(log: Path, *, backend_id: str) -> float:
    """How long SimpleTuner's bucket scan of `backend_id` took, from its log's timestamps ("(id=X) Refreshing aspect
    buckets", then "Discovering new files..." to "Completed aspect bucket update."); 0.0 when it did not say."""
    total, scanning, start = 0.0, False, None
    try:
        with log.open(errors="replace") as lines:
            for line in lines:
                match = SCAN_LINE.search(line)
                if not match:
                    continue
                message = match.group(2)
                when = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                if refreshing := re.match(r"\(id=(.+?)\) Refreshing aspect buckets", message):
                    scanning = refreshing.group(1) == backend_id
                elif scanning and message.startswith("Discovering new files"):
                    start = when
                elif start is not None and message.startswith(("Completed aspect bucket update",
                                                               "No new files discovered")):
                    total, start = total + max(when - start, 0.0), None
    except (OSError, ValueError):
        return 0.0
    return total


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
    ref = settings.hub_cache / f"models--{name.replace('/', '--')}" / "refs" / revision
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
    return {"text_embeds": "text embeddings", "buckets": "images' aspect buckets"}.get(kind, "VAE latents")
