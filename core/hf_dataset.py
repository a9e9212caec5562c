"""A Hugging Face dataset repo as a dataset source, through huggingface_hub.

Two layouts: image files with captions beside them (`a.png` + `a.txt`), or parquet files with an image column
(HF `Image` feature: {bytes, path}, or raw bytes) and a caption column. The revision is pinned to one commit
first, so every file comes from the same snapshot. The endpoint comes from HF_ENDPOINT at call time.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from core.archive import IMAGE_SUFFIXES
from core.errors import DatasetError, DownloadError
from core.events import DownloadProgress, EventSink, ignore_event
from core.spec import REPO_ID, DatasetSpec

DEFAULT_ENDPOINT = "https://huggingface.co"
IMAGE_COLUMNS = ("image", "img", "images", "jpg", "png", "webp")
CAPTION_COLUMNS = ("text", "caption", "prompt", "captions", "description", "txt")
REPO_METADATA = {".gitattributes"}
_PARQUET_BATCH = 64
_WORKERS = 8


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


def hf_endpoint(env: Mapping[str, str]) -> str:
    return (env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def fetch_hf_dataset(
    dataset: DatasetSpec,
    folder: Path,
    *,
    keep_suffixes: frozenset[str],
    max_bytes: int,
    token: str | None = None,
    on_event: EventSink = ignore_event,
    env: Mapping[str, str] | None = None,
) -> HfFetched:
    """Download the repo's images (+ captions) or parquet rows into `folder`."""
    from huggingface_hub import HfApi, constants

    repo = dataset.hf_repo or ""
    if not REPO_ID.match(repo):
        raise DatasetError(f"'{repo}' is not a dataset repo id ('user-or-org/name')", field="dataset.hf_repo")
    if constants.is_offline_mode():
        raise DatasetError(
            f"cannot fetch {repo}: HF_HUB_OFFLINE is set in this process; unset it to read dataset repos",
            field="dataset.hf_repo",
        )
    endpoint = hf_endpoint(os.environ if env is None else env)
    api = HfApi(endpoint=endpoint, token=token)
    commit = _pin(api, repo, dataset.revision)
    files = _list(api, repo, commit, revision=dataset.revision)
    out = HfFetched(commit=commit)
    images = [f for f in files if PurePosixPath(f.path).suffix.lower() in IMAGE_SUFFIXES]
    parquet = [f for f in files if f.path.lower().endswith(".parquet")]
    image_paths = {f.path for f in images}
    captions = [f for f in files if f.path not in image_paths and PurePosixPath(f.path).suffix.lower() in keep_suffixes]
    chosen = images + captions if images else parquet
    chosen_paths = {f.path for f in chosen}
    if not chosen:
        shown = ", ".join(f.path for f in files[:5]) or "no files"
        raise DatasetError(
            f"{repo}@{dataset.revision} has no image files and no parquet files ({shown})", field="dataset.hf_repo"
        )
    for item in files:
        if item.path not in chosen_paths and item.path not in REPO_METADATA:
            out.skipped.append((item.path, "not an image", ""))
    total = sum(f.size or 0 for f in chosen)
    if total > max_bytes:
        raise DownloadError(f"{repo}: {total} bytes is over the {max_bytes}-byte download limit",
                            field="dataset.hf_repo")
    files_dir = folder / "hf"
    _download_all(api, repo, commit, chosen, files_dir, total=total, on_event=on_event, token=token)
    shutil.rmtree(files_dir / ".cache", ignore_errors=True)  # huggingface_hub's bookkeeping for local_dir
    if images:
        out.folder = files_dir
        return out
    _read_parquet(
        [files_dir / f.path for f in sorted(parquet, key=lambda f: f.path)], folder / "rows", dataset=dataset, out=out
    )
    return out


def _pin(api: Any, repo: str, revision: str) -> str:
    """The commit sha the revision points to (one snapshot for every file)."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        info = api.dataset_info(repo, revision=revision)
    except GatedRepoError:
        raise DatasetError(f"{repo} is gated: accept its terms and give a token with access",
                           field="dataset.hf_repo") from None
    except RepositoryNotFoundError:
        raise DatasetError(
            f"dataset repo {repo} not found (or private: give a token with access)", field="dataset.hf_repo"
        ) from None
    except RevisionNotFoundError:
        raise DatasetError(f"{repo} has no revision '{revision}'", field="dataset.revision") from None
    except HfHubHTTPError as exc:
        raise DownloadError(f"{repo}: Hub error {_status(exc)}", field="dataset.hf_repo") from None
    except OSError as exc:
        raise DownloadError(f"{repo}: cannot reach the Hub ({type(exc).__name__})", field="dataset.hf_repo") from None
    return info.sha or revision


def _status(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    return str(getattr(response, "status_code", "")) or type(exc).__name__


def _list(api: Any, repo: str, commit: str, *, revision: str) -> list[Any]:
    from huggingface_hub.errors import HfHubHTTPError

    try:
        entries = api.list_repo_tree(repo, repo_type="dataset", revision=commit, recursive=True, expand=False)
        return sorted((e for e in entries if hasattr(e, "size")), key=lambda e: e.path)
    except HfHubHTTPError as exc:
        raise DownloadError(f"{repo}@{revision}: cannot list files ({_status(exc)})", field="dataset.hf_repo") from None


def _download_all(
    api: Any, repo: str, commit: str, files: list[Any], target: Path, *, total: int, on_event: EventSink,
    token: str | None,
) -> None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    source = f"hf://datasets/{repo}"
    done = 0
    on_event(DownloadProgress(source=source, bytes_done=0, bytes_total=total))

    def one(item: Any) -> int:
        hf_hub_download(
            repo, item.path, repo_type="dataset", revision=commit, local_dir=target, endpoint=api.endpoint,
            token=token,
        )
        return item.size or 0

    try:
        with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
            for size in pool.map(one, files):
                done += size
                on_event(DownloadProgress(source=source, bytes_done=done, bytes_total=total))
    except HfHubHTTPError as exc:
        raise DownloadError(f"{repo}: download failed ({_status(exc)})", field="dataset.hf_repo") from None
    except OSError as exc:
        raise DownloadError(f"{repo}: download failed ({type(exc).__name__})", field="dataset.hf_repo") from None


def _pick(columns: list[str], wanted: str | None, defaults: tuple[str, ...], *, what: str, field: str) -> str | None:
    if wanted:
        if wanted not in columns:
            raise DatasetError(f"no column '{wanted}' (columns: {', '.join(columns)})", field=field)
        return wanted
    lowered = {c.lower(): c for c in columns}
    for name in defaults:
        if name in lowered:
            return lowered[name]
    if what == "image":
        raise DatasetError(
            f"no image column found (columns: {', '.join(columns)}); set dataset.image_column", field=field
        )
    return None


def _read_parquet(paths: list[Path], rows_dir: Path, *, dataset: DatasetSpec, out: HfFetched) -> None:
    """Stream each parquet file in batches: image bytes to files, captions kept in memory (small)."""
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
        image_col = _pick(columns, dataset.image_column, IMAGE_COLUMNS, what="image", field="dataset.image_column")
        caption_col = _pick(columns, dataset.caption_column, CAPTION_COLUMNS, what="caption",
                            field="dataset.caption_column")
        wanted = [image_col] + ([caption_col] if caption_col else [])
        for batch in table.iter_batches(batch_size=_PARQUET_BATCH, columns=wanted):
            images = batch.column(image_col).to_pylist()
            captions = batch.column(caption_col).to_pylist() if caption_col else [None] * len(images)
            for value, caption in zip(images, captions, strict=True):
                index += 1
                _write_row(value, caption, index=index, rows_dir=rows_dir, source=path.name, out=out)


def _write_row(value: Any, caption: Any, *, index: int, rows_dir: Path, source: str, out: HfFetched) -> None:
    data, name = _image_bytes(value)
    label = f"{source}#{index}"
    if data is None:
        out.skipped.append((label, "no image bytes", "the image cell is empty or only a path"))
        return
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", PurePosixPath(name).stem if name else "").strip("._")
    file = rows_dir / f"{index:06d}{'_' + stem if stem else ''}{PurePosixPath(name or '').suffix.lower()}"
    file.write_bytes(data)
    out.rows.append(HfRow(name=file.name, image=file, caption=_caption_text(caption)))


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
