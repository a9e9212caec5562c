"""A staged dataset from the cache (core/cache/store.py), or staged and then kept there for the next job.

The key is the source and what identifies its content, plus everything staging does to it:
- a URL (http/https/s3): the URL without the query parameters that only sign it (a presigned URL's signature
  changes at each request), and the server's ETag or Last-Modified with the size; from a server that gives neither,
  the file is downloaded and then keyed by its sha256: the download happens each time, its extraction and image
  checks are reused;
- a Hub dataset repo: the repo and the commit its revision points at now;
- inline files: each file's URL key as above, with its caption;
- a local folder or archive: each file's path, size and modification time;
- and the caption options (trigger word, placement, caption extension, cleaning), the edit pairs' input folders
  (dataset.control_dir), the concepts' repeats (dataset.repeats), the subsets' options where a job sets one
  (dataset.reg_dir, eval_dir, eval_share), the staging limits and STAGING_VERSION (raised when staging changes what
  it makes: 2 reads edit pairs and keeps clips; 3 stages concept folders apart, notes the captions that named the
  trigger and sets reg/, eval/ and masks apart).
The entry holds every folder staging wrote (images/ with its concept sub-folders, clips/, the edit pairs' control/,
control_2/, ..., the subsets' reg/, eval/, masks/), their captions and the manifest (the pairs' input sizes, the
subsets' counts); a hit links them into the job's folder and gives back the same manifest. Every
writer of a caption (auto-captioning, the UI's edits) puts a new file in its place, never writes into the file: an
edit never reaches the cache through a link.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from core.adapters import download, probe
from core.cache.store import Cache, file_sha256, key_of, link_tree
from core.cancel import Cancel
from core.dataset import (
    CLIPS_DIR,
    CONTROL_DIRS,
    DOWNLOAD_DIR,
    IMAGES_DIR,
    SUBSET_DIRS,
    CaptionOptions,
    ClipEntry,
    ImageEntry,
    Manifest,
    PairSet,
    Skipped,
    StagingLimits,
    Subsets,
    describe_source,
    resolve_local_path,
    stage_dataset,
)
from core.events import EventSink, LogLine, ignore_event
from core.settings import Settings
from core.spec import DatasetSpec

STAGING_VERSION = 3
SIGNING_PARAMS = re.compile(r"signature|credential|expires|date|token|security|policy|accesskey|^sig$|^se$|^sp$",
                            re.IGNORECASE)
_WORKERS = min(8, os.cpu_count() or 2)


@dataclass
class DatasetReuse:
    """What the cache did for the dataset stage; the result's `cache.dataset`."""

    status: str = "off"
    """reused | stored | miss (not storable: the source has no validator, or the entry could not be written) | off"""
    saved_s: float = 0.0
    images_id: str | None = None
    """A hash of every staged image's and clip's name and content."""
    images: dict[str, str] = field(default_factory=dict)
    """Staged image file name -> sha256 of its content: what VAE latents and aspect buckets are keyed by."""
    clips: dict[str, str] = field(default_factory=dict)
    """Staged clip file name -> sha256 of its content: the same for the video backend's caches."""

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "saved_s": round(self.saved_s, 2)}


def stage_dataset_cached(dataset: DatasetSpec, dest: Path, *, settings: Settings, cache: Cache | None,
                         captions: CaptionOptions = CaptionOptions(), token: str | None = None,
                         cancel: Cancel | None = None, on_event: EventSink = ignore_event,
                         allow_local_paths: bool = True,
                         limits: StagingLimits = StagingLimits()) -> tuple[Manifest, DatasetReuse]:
    """stage_dataset, through the cache when there is one (cache None: `cache: false`, or none configured)."""
    def stage() -> Manifest:
        return stage_dataset(dataset, dest, settings=settings, captions=captions, token=token, cancel=cancel,
                             on_event=on_event, allow_local_paths=allow_local_paths, limits=limits)

    if cache is None:
        return stage(), DatasetReuse()
    started = time.monotonic()
    identity = source_identity(dataset, settings=settings, token=token, allow_local_paths=allow_local_paths,
                               cancel=cancel)
    if identity is None and dataset.url:
        return _stage_by_content(dataset, dest, settings=settings, cache=cache, captions=captions, cancel=cancel,
                                 on_event=on_event, limits=limits)
    if identity is None:
        on_event(LogLine("the dataset's source gives nothing that identifies its content: staged without the cache"))
        return stage(), DatasetReuse(status="miss")
    key = _dataset_key(identity, captions=captions, limits=limits, dataset=dataset)
    reused = _reuse(cache, key, dest=dest, started=started, on_event=on_event)
    if reused is not None:
        return reused
    manifest = stage()
    return manifest, _store(cache, key, manifest, build_s=time.monotonic() - started,
                            on_event=on_event)


def _stage_by_content(dataset: DatasetSpec, dest: Path, *, settings: Settings, cache: Cache,
                      captions: CaptionOptions, cancel: Cancel | None, on_event: EventSink,
                      limits: StagingLimits) -> tuple[Manifest, DatasetReuse]:
    """A URL whose server names no version: download it, key the entry by the file's sha256, and stage the file
    only when no entry has it."""
    url = dataset.url or ""
    file = download(url, dest.absolute() / DOWNLOAD_DIR, settings=settings, on_event=on_event,
                    max_bytes=limits.max_download_bytes, cancel=cancel)
    started = time.monotonic()
    key = _dataset_key({"url": url_key(url), "sha256": file_sha256(file)}, captions=captions, limits=limits,
                       dataset=dataset)
    reused = _reuse(cache, key, dest=dest, started=started, on_event=on_event)
    if reused is not None:
        shutil.rmtree(dest.absolute() / DOWNLOAD_DIR, ignore_errors=True)
        return reused
    on_event(LogLine("the dataset's server gives no ETag or Last-Modified: kept in the cache by its content hash"))
    # Our own downloaded file, staged as a local one (staging removes its download folder when done).
    manifest = stage_dataset(dataset.model_copy(update={"url": None, "path": str(file)}), dest, settings=settings,
                             captions=captions, cancel=cancel, on_event=on_event, allow_local_paths=True,
                             limits=limits)
    manifest.source = describe_source(dataset)
    return manifest, _store(cache, key, manifest, build_s=time.monotonic() - started,
                            on_event=on_event)


def _dataset_key(identity: dict[str, Any], *, captions: CaptionOptions, limits: StagingLimits,
                 dataset: DatasetSpec) -> str:
    # The subsets' options only where a job sets one: an entry made without them keeps its key.
    subsets = {name: value for name in ("reg_dir", "eval_dir", "eval_share")
               if (value := getattr(dataset, name)) is not None}
    return key_of({"kind": "dataset", "version": STAGING_VERSION, "source": identity, "captions": asdict(captions),
                   "limits": repr(limits), "control_dirs": dataset.control_dirs if dataset.pairs else False,
                   "repeats": dataset.repeats or {}, **({"subsets": subsets} if subsets else {})})


def _reuse(cache: Cache, key: str, *, dest: Path, started: float,
           on_event: EventSink) -> tuple[Manifest, DatasetReuse] | None:
    """The entry under `key` restored into `dest`, or None (no entry, or a damaged one: staged afresh)."""
    entry = cache.lookup("dataset", key)
    if entry is None:
        return None
    try:
        manifest = _restore(entry.data, entry.meta["manifest"], dest=dest)
    except (OSError, KeyError, TypeError, ValueError):
        return None
    took = time.monotonic() - started
    clips = f" and {len(manifest.clips)} clips" if manifest.clips else ""
    on_event(LogLine(f"dataset from the cache: {len(manifest.images)} images{clips} ({took:.1f}s)"))
    return manifest, DatasetReuse(status="reused", saved_s=max(entry.build_s - took, 0.0),
                                  images_id=entry.meta.get("images_id"), images=dict(entry.meta.get("images") or {}),
                                  clips=dict(entry.meta.get("clips") or {}))


def _store(cache: Cache, key: str, manifest: Manifest, *, build_s: float, on_event: EventSink) -> DatasetReuse:
    hashes, clips = image_hashes(manifest), clip_hashes(manifest)
    reuse = DatasetReuse(status="miss", images_id=key_of({"images": hashes, **({"clips": clips} if clips else {})}),
                         images=hashes, clips=clips)
    try:
        with cache.writing("dataset", key, build_s=build_s, manifest=_manifest_record(manifest),
                           images_id=reuse.images_id, images=hashes, clips=clips) as folder:
            for staged in _staged_folders(manifest):
                link_tree(staged, folder / staged.relative_to(manifest.root.parent))
        reuse.status = "stored" if cache.lookup("dataset", key) is not None else "miss"
    except OSError as exc:
        on_event(LogLine(f"the dataset was not kept in the cache: {exc}", severity="warning"))
    return reuse


def image_hashes(manifest: Manifest) -> dict[str, str]:
    """Staged file name -> sha256 of the image (hashed while staging, else now, a few at a time)."""
    def digest(entry: ImageEntry) -> tuple[str, str]:
        return entry.path.name, entry.sha256 or file_sha256(entry.path)

    with ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="hash") as pool:
        return dict(sorted(pool.map(digest, manifest.images)))


def clip_hashes(manifest: Manifest) -> dict[str, str]:
    """Staged clip name -> sha256 of the clip, a few at a time."""
    with ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="hash") as pool:
        return dict(sorted(pool.map(lambda entry: (entry.path.name, file_sha256(entry.path)), manifest.clips)))


# -- what identifies a source ---------------------------------------------------------------------------------


def source_identity(dataset: DatasetSpec, *, settings: Settings, token: str | None,
                    allow_local_paths: bool, cancel: Cancel | None = None) -> dict[str, Any] | None:
    """What identifies the source's content now, cheaply (no download); None when nothing does. A probe that does
    not answer within its budget is a miss; the job's cancel or deadline ends it (JobCancelled, JobTimeout)."""
    if dataset.url:
        validator = probe(dataset.url, settings=settings, cancel=cancel)
        return {"url": url_key(dataset.url), "validator": validator} if validator else None
    if dataset.files:
        urls = [item.url for item in dataset.files]
        with ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="probe") as pool:
            validators = list(pool.map(
                lambda pair: probe(pair[1], settings=settings, field=f"dataset.files.{pair[0]}.url", cancel=cancel),
                enumerate(urls)))
        if not all(validators):
            return None
        return {"files": [[url_key(item.url), item.caption, validator]
                          for item, validator in zip(dataset.files, validators, strict=True)]}
    if dataset.hf_repo:
        commit = _hub_commit(dataset, token=token)
        return {"hf_repo": dataset.hf_repo, "commit": commit, "image_column": dataset.image_column,
                "caption_column": dataset.caption_column} if commit else None
    try:
        path = resolve_local_path(dataset.path or "", settings=settings, allow_local_paths=allow_local_paths)
    except Exception:  # any failure: staging reports the path's error itself, naming the field
        return None
    return {"path": str(path), "files": _fingerprint(path)}


def url_key(url: str) -> str:
    """The URL without user info and without the query parameters that only sign it."""
    parts = urlsplit(url)
    query = [(name, value) for name, value in parse_qsl(parts.query, keep_blank_values=True)
             if not SIGNING_PARAMS.search(name)]
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(sorted(query)), ""))


def _hub_commit(dataset: DatasetSpec, *, token: str | None) -> str | None:
    """The commit the job's revision is at, asked of the Hub with the job's token, even for a pinned 40-hex revision:
    an entry staged by a job whose token could read a private dataset is reused only by a job whose token can too."""
    from core.adapters import hub_endpoint, is_offline

    if is_offline():
        return None
    try:
        from huggingface_hub import HfApi

        info = HfApi(endpoint=hub_endpoint(), token=token).dataset_info(dataset.hf_repo or "",
                                                                        revision=dataset.revision)
    except Exception:  # any failure: staging asks again and reports the Hub's error with its field
        return None
    return info.sha


def _fingerprint(path: Path) -> list[list[Any]]:
    if path.is_file():
        stat = path.stat()
        return [[path.name, stat.st_size, stat.st_mtime_ns]]
    found = []
    for current, _, files in os.walk(path):
        for name in files:
            file = Path(current) / name
            try:
                stat = file.stat()
            except OSError:
                continue
            found.append([file.relative_to(path).as_posix(), stat.st_size, stat.st_mtime_ns])
    return sorted(found)


# -- the manifest in an entry ----------------------------------------------------------------------------------


def _manifest_record(manifest: Manifest) -> dict[str, Any]:
    return {
        "source": manifest.source,
        "images": [{"name": entry.path.relative_to(manifest.root).as_posix(), "caption": entry.caption,
                    "width": entry.width, "height": entry.height, "caption_source": entry.caption_source,
                    "trigger_in_caption": entry.trigger_in_caption}
                   for entry in manifest.images],
        "skipped": [asdict(item) for item in manifest.skipped],
        "clips": [{"name": entry.path.name, **{k: v for k, v in asdict(entry).items() if k != "path"}}
                  for entry in manifest.clips],
        "pairs": _pairs_record(manifest.pairs, dest=manifest.root.parent) if manifest.pairs else None,
        "subsets": _subsets_record(manifest.subsets, dest=manifest.root.parent) if manifest.subsets else None,
    }


def _staged_folders(manifest: Manifest) -> list[Path]:
    """Every folder staging wrote for the manifest, beside each other in the job's dataset folder: images/, clips/,
    the edit pairs' control/, control_2/, ... and the subsets' reg/, eval/, masks/."""
    folders = [manifest.root, manifest.clips_root, *(manifest.pairs.folders if manifest.pairs else [])]
    if manifest.subsets is not None:
        folders += [manifest.subsets.reg_root, manifest.subsets.eval_root, manifest.subsets.masks_root]
    return [folder for folder in folders if folder is not None and folder.is_dir()]


def _pairs_record(pairs: PairSet, *, dest: Path) -> dict[str, Any]:
    return {"layout": pairs.layout, "folders": [folder.relative_to(dest).as_posix() for folder in pairs.folders],
            "sizes": pairs.sizes, "looked_for": pairs.looked_for}


def _subsets_record(subsets: Subsets, *, dest: Path) -> dict[str, Any]:
    def relative(folder: Path | None) -> str | None:
        return folder.relative_to(dest).as_posix() if folder is not None else None

    return {"reg_root": relative(subsets.reg_root), "reg": [path.relative_to(dest).as_posix() for path in subsets.reg],
            "eval_root": relative(subsets.eval_root),
            "eval": [path.relative_to(dest).as_posix() for path in subsets.eval], "held_out": subsets.held_out,
            "masks_root": relative(subsets.masks_root), "masks": subsets.masks, "masks_filled": subsets.masks_filled,
            "masks_resized": list(subsets.masks_resized)}


def _restore_pairs(data: Path, record: dict[str, Any] | None, *, dest: Path) -> PairSet | None:
    if not record:
        return None
    folders = [dest / name for name in record["folders"]]
    for name, folder in zip(record["folders"], folders, strict=True):
        link_tree(data / name, folder)
    return PairSet(layout=record["layout"], folders=folders, looked_for=record.get("looked_for") or "",
                   sizes={name: [(int(w), int(h)) for w, h in sizes] for name, sizes in record["sizes"].items()})


def _restore_subsets(data: Path, record: dict[str, Any] | None, *, dest: Path) -> Subsets | None:
    if not record:
        return None
    roots: dict[str, Path | None] = {}
    for field_name in ("reg_root", "eval_root", "masks_root"):
        name = record.get(field_name)
        roots[field_name] = dest / name if name else None
        if name:
            link_tree(data / name, dest / name)
    return Subsets(reg_root=roots["reg_root"], eval_root=roots["eval_root"], masks_root=roots["masks_root"],
                   reg=[dest / name for name in record["reg"]], eval=[dest / name for name in record["eval"]],
                   held_out=int(record["held_out"]), masks=int(record["masks"]),
                   masks_filled=int(record["masks_filled"]), masks_resized=list(record["masks_resized"]))


def _restore(data: Path, record: dict[str, Any], *, dest: Path) -> Manifest:
    dest = dest.absolute()
    root = dest / IMAGES_DIR
    for name in (IMAGES_DIR, *CONTROL_DIRS, *SUBSET_DIRS):
        if (dest / name).exists():
            shutil.rmtree(dest / name)  # a re-run of the same job starts clean, as staging does
    root.mkdir(parents=True)
    link_tree(data / IMAGES_DIR, root)
    images = [ImageEntry(path=root / item["name"], caption=item["caption"], width=int(item["width"]),
                         height=int(item["height"]), caption_source=item["caption_source"],
                         trigger_in_caption=item.get("trigger_in_caption"))
              for item in record["images"]]
    clips_root = dest.absolute() / CLIPS_DIR
    if clips_root.exists():
        shutil.rmtree(clips_root)
    clips = [ClipEntry(path=clips_root / item["name"], **{k: v for k, v in item.items() if k != "name"})
             for item in record.get("clips") or []]
    if clips:
        link_tree(data / CLIPS_DIR, clips_root)
    pairs = _restore_pairs(data, record.get("pairs"), dest=dest)
    subsets = _restore_subsets(data, record.get("subsets"), dest=dest)
    paths = [entry.path for entry in images] + [entry.path for entry in clips]
    paths += [folder / entry.path.name for folder in (pairs.folders if pairs else []) for entry in images]
    paths += [*subsets.reg, *subsets.eval] if subsets else []
    if not all(os.path.isfile(path) for path in paths):  # an eviction took the entry meanwhile
        raise OSError("a file of the entry is missing")
    return Manifest(root=root, images=images, skipped=[Skipped(**item) for item in record["skipped"]],
                    source=str(record["source"]), clips=clips, clips_root=clips_root if clips else None,
                    pairs=pairs, subsets=subsets)

