"""A Hugging Face dataset repo as a dataset source, through huggingface_hub.

Two layouts: image or clip files with captions beside them (`a.png` + `a.txt`, `b.mp4` + `b.txt`), or parquet files
with an image or video column (the `datasets` library's `Image` or `Video` feature: {bytes, path}, or raw bytes) and a
caption column. A video row's bytes become a clip file, its suffix from the row's path or, without one, from the
container its first bytes name (MP4/MOV or Matroska/WebM): staging probes it as any clip. The revision is pinned to
one commit first, so every file comes from the same snapshot. The endpoint, retries and error codes are
core/adapters/hub.py's. A cancel (or the job's deadline) stops the files not yet started and, through the download's
progress bar (core/adapters/hub_bar.py), the ones being downloaded at their next chunk.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from core.adapters import (
    ByteBar,
    CancelFlag,
    HubTarget,
    call_hub,
    check_repo_id,
    hub_endpoint,
    is_offline,
    offline_error,
)
from core.dataset.archive import IMAGE_SUFFIXES
from core.dataset.clips import CLIP_SUFFIXES
from core.errors import DatasetError, DownloadError
from core.events import DownloadProgress, EventSink, ignore_event
from core.spec import DatasetSpec

FIELD = "dataset.hf_repo"
IMAGE_COLUMNS = ("image", "img", "images", "jpg", "png", "webp")
VIDEO_COLUMNS = ("video", "videos", "clip", "mp4", "webm")
MEDIA_FEATURES = ("Image", "Video")
"""The `datasets` feature types (`_type` in the parquet's `huggingface` schema metadata) of a column with files."""
CAPTION_COLUMNS = ("text", "caption", "prompt", "captions", "description", "txt")
REPO_METADATA = {".gitattributes"}
_PARQUET_BATCH = 64
_VIDEO_BATCH = 4
"""Rows read at once from a video column: each cell holds a whole clip."""
_WORKERS = 8
_PROGRESS_S = 0.5


@dataclass
class HfRow:
    """One parquet row: its image written to a file, its caption (None when the row has none)."""

    name: str
    image: Path
    caption: str | None


@dataclass
class HfFetched:
    folder: Path | None = None
    """Image-files layout: the downloaded repo files (images and captions)."""
    rows: list[HfRow] = field(default_factory=list)
    """Parquet layout: one entry per row."""
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    """(name, reason, detail) for every repo file or row not used."""
    commit: str | None = None


def fetch_hf_dataset(
    dataset: DatasetSpec,
    folder: Path,
    *,
    keep_suffixes: frozenset[str],
    max_bytes: int,
    max_clip_bytes: int | None = None,
    token: str | None = None,
    on_event: EventSink = ignore_event,
    cancel: CancelFlag | None = None,
) -> HfFetched:
    """Download the repo's images (+ captions) or parquet rows into `folder`. Hub failures are DownloadErrors with
    core/adapters/hub.py's codes; a set `cancel` stops the downloads (between chunks) and the retries. A clip file
    the listing says is over `max_clip_bytes` is skipped without downloading it."""
    from huggingface_hub import HfApi

    repo = check_repo_id(dataset.hf_repo or "", family=DatasetError, field=FIELD, kind="dataset")
    endpoint = hub_endpoint()
    target = HubTarget(repo, family=DownloadError, field=FIELD, endpoint=endpoint, repo_type="dataset", token=token,
                       revision=dataset.revision, revision_field="dataset.revision")
    if is_offline():
        raise offline_error(target, f"reading {repo}")
    api = HfApi(endpoint=endpoint, token=token)
    info = call_hub(lambda: api.dataset_info(repo, revision=dataset.revision), target=target,
                    what=f"reading {repo}@{dataset.revision}", cancel=cancel, on_event=on_event)
    commit = info.sha or dataset.revision  # one snapshot for every file
    entries = call_hub(lambda: list(api.list_repo_tree(repo, repo_type="dataset", revision=commit, recursive=True,
                                                       expand=False)),
                       target=target, what=f"listing the files of {repo}@{dataset.revision}", cancel=cancel,
                       on_event=on_event)
    files = sorted((e for e in entries if hasattr(e, "size")), key=lambda e: e.path)
    out = HfFetched(commit=commit)
    images = [f for f in files if PurePosixPath(f.path).suffix.lower() in IMAGE_SUFFIXES | CLIP_SUFFIXES]
    too_big = {f.path for f in images if max_clip_bytes is not None and (f.size or 0) > max_clip_bytes
               and PurePosixPath(f.path).suffix.lower() in CLIP_SUFFIXES}
    parquet = [f for f in files if f.path.lower().endswith(".parquet")]
    image_paths = {f.path for f in images}
    captions = [f for f in files if f.path not in image_paths and PurePosixPath(f.path).suffix.lower() in keep_suffixes]
    chosen = images + captions if images else parquet
    chosen_paths = {f.path for f in chosen}
    if not chosen:
        shown = ", ".join(f.path for f in files[:5]) or "no files"
        raise DatasetError(
            f"{repo}@{dataset.revision} has no image files and no parquet files ({shown})", field=FIELD
        )
    for item in files:
        if item.path in too_big:
            out.skipped.append((item.path, "video bomb", f"the repo lists {item.size} bytes, over the "
                                f"{max_clip_bytes}-byte limit for one clip"))
        elif item.path not in chosen_paths and item.path not in REPO_METADATA:
            out.skipped.append((item.path, "not an image", ""))
    chosen = [f for f in chosen if f.path not in too_big]
    total = sum(f.size or 0 for f in chosen)
    if total > max_bytes:
        raise DownloadError(f"{repo}: {total} bytes is over the {max_bytes}-byte download limit", field=FIELD)
    files_dir = folder / "hf"
    _download_all(api, target, commit, chosen, files_dir, total=total, on_event=on_event, cancel=cancel)
    shutil.rmtree(files_dir / ".cache", ignore_errors=True)  # huggingface_hub's bookkeeping for local_dir
    if images:
        out.folder = files_dir
        return out
    _read_parquet(
        [files_dir / f.path for f in sorted(parquet, key=lambda f: f.path)], folder / "rows", dataset=dataset, out=out
    )
    return out


def _download_all(
    api: Any, target: HubTarget, commit: str, files: list[Any], dest: Path, *, total: int, on_event: EventSink,
    cancel: CancelFlag | None,
) -> None:
    from huggingface_hub import hf_hub_download

    repo = target.repo_id
    source = f"hf://datasets/{repo}"
    bar = ByteBar(cancel, doing=f"downloading {source}", stage=DownloadError.stage)
    on_event(DownloadProgress(source=source, bytes_done=0, bytes_total=total))

    def one(item: Any) -> None:
        # On a pool thread: retries say nothing (events belong to the caller's thread).
        call_hub(lambda: hf_hub_download(repo, item.path, repo_type="dataset", revision=commit, local_dir=dest,
                                         endpoint=api.endpoint, token=target.token, tqdm_class=bar.bar_class()),
                 target=target, what=f"downloading {item.path}", cancel=cancel)

    pool = ThreadPoolExecutor(max_workers=_WORKERS)
    try:
        pending = {pool.submit(one, item) for item in files}
        said = 0
        while pending:
            finished, pending = wait(pending, timeout=_PROGRESS_S, return_when=FIRST_COMPLETED)
            for future in finished:
                future.result()  # the first failure ends the download
            bar.check()
            if bar.done != said:
                said = bar.done
                on_event(DownloadProgress(source=source, bytes_done=min(said, total), bytes_total=total))
    finally:
        # Files not started are dropped; those downloading stop at their next chunk once cancelled.
        pool.shutdown(wait=True, cancel_futures=True)
    on_event(DownloadProgress(source=source, bytes_done=total, bytes_total=total))


def _pick(columns: list[str], wanted: str | None, defaults: tuple[str, ...], *, field: str) -> str | None:
    """The column the job names (refused when there is none of that name), else the first of `defaults` present."""
    if wanted:
        if wanted not in columns:
            raise DatasetError(f"no column '{wanted}' (columns: {', '.join(columns)})", field=field)
        return wanted
    lowered = {c.lower(): c for c in columns}
    return next((lowered[name] for name in defaults if name in lowered), None)


def _features(schema: Any) -> dict[str, str]:
    """Column -> its `datasets` feature type ('Image', 'Video', 'Value', ...), from the schema metadata the
    `datasets` library writes into its parquet files; {} for a parquet file written without it."""
    try:
        info = json.loads((schema.metadata or {}).get(b"huggingface", b"{}"))
        features = info.get("info", {}).get("features", {})
        return {str(name): str(kind.get("_type", "")) for name, kind in features.items() if isinstance(kind, dict)}
    except (ValueError, AttributeError):
        return {}


def _media_column(columns: list[str], features: dict[str, str], dataset: DatasetSpec) -> tuple[str, bool]:
    """(the column holding the files, whether it holds video): the job's image_column, else the first column the
    `datasets` metadata calls an Image (then a Video), else one named like one (image names first)."""
    typed = [(kind, name) for name in columns for kind in MEDIA_FEATURES if features.get(name) == kind]
    if dataset.image_column is None and typed:
        kind, name = min(typed, key=lambda item: MEDIA_FEATURES.index(item[0]))
        return name, kind == "Video"
    column = _pick(columns, dataset.image_column, IMAGE_COLUMNS + VIDEO_COLUMNS, field="dataset.image_column")
    if column is None:
        raise DatasetError(f"no image or video column found (columns: {', '.join(columns)}); set "
                           "dataset.image_column", field="dataset.image_column")
    return column, features.get(column) == "Video" or column.lower() in VIDEO_COLUMNS


def _read_parquet(paths: list[Path], rows_dir: Path, *, dataset: DatasetSpec, out: HfFetched) -> None:
    """Stream each parquet file in batches: image or clip bytes to files, captions kept in memory (small)."""
    import pyarrow.parquet as pq

    rows_dir.mkdir(parents=True, exist_ok=True)
    index = 0
    for path in paths:
        try:
            table = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises ArrowInvalid and friends, not one base class we can name
            out.skipped.append((path.name, "unreadable parquet", str(exc)[:200]))
            continue
        columns = table.schema_arrow.names
        media_col, video = _media_column(columns, _features(table.schema_arrow), dataset)
        caption_col = _pick(columns, dataset.caption_column, CAPTION_COLUMNS, field="dataset.caption_column")
        wanted = [media_col] + ([caption_col] if caption_col else [])
        for batch in table.iter_batches(batch_size=_VIDEO_BATCH if video else _PARQUET_BATCH, columns=wanted):
            cells = batch.column(media_col).to_pylist()
            captions = batch.column(caption_col).to_pylist() if caption_col else [None] * len(cells)
            for value, caption in zip(cells, captions, strict=True):
                index += 1
                _write_row(value, caption, index=index, rows_dir=rows_dir, source=path.name, out=out, video=video)


def _write_row(value: Any, caption: Any, *, index: int, rows_dir: Path, source: str, out: HfFetched,
               video: bool) -> None:
    data, name = _image_bytes(value)
    label = f"{source}#{index}"
    if data is None:
        what = "video" if video else "image"
        out.skipped.append((label, f"no {what} bytes", f"the {what} cell is empty or only a path"))
        return
    suffix = PurePosixPath(name or "").suffix.lower()
    if video and suffix not in CLIP_SUFFIXES:
        suffix = _container_suffix(data) or ""
        if not suffix:
            out.skipped.append((label, "not a video", "neither an MP4/MOV nor a Matroska/WebM file, and its path "
                                "names no clip suffix"))
            return
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", PurePosixPath(name).stem if name else "").strip("._")
    file = rows_dir / f"{index:06d}{'_' + stem if stem else ''}{suffix}"
    file.write_bytes(data)
    out.rows.append(HfRow(name=file.name, image=file, caption=_caption_text(caption)))


def _container_suffix(data: bytes) -> str | None:
    """The clip suffix of a video cell without a path, from its first bytes: an ISO media file (its `ftyp` box) or
    an EBML one (Matroska, WebM when its doctype says so). Only names which safe demuxer reads it (docs/video.md)."""
    if data[4:8] == b"ftyp":
        return ".mp4"
    if data[:4] == b"\x1aE\xdf\xa3":
        return ".webm" if b"webm" in data[:64] else ".mkv"
    return None


def _image_bytes(value: Any) -> tuple[bytes | None, str | None]:
    if isinstance(value, Mapping):
        return value.get("bytes"), value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), None
    return None, None


def _caption_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):
        return str(value[0]) if value else None
    return str(value)
