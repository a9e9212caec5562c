"""The cache on the volume: what one job fetched or computed, kept for the next job whose inputs are the same.

Entries are content-addressed: `key_of(parts)` hashes every input that changes the content (a dataset's source and
its validator, a text encoder's identity and the captions, ...), so a job whose inputs differ in anything that
matters looks up another key and misses. Layout, under CACHE_DIR (default: `<VOLUME_DIR>/trainer-cache` when a
network volume is mounted, else `DATA_DIR/cache`):

    entries/<kind>/<key>/meta.json   what the entry holds (file sizes, how long it took to make, ...)
    entries/<kind>/<key>/data/       the content
    tmp/                             entries being written or deleted; never read

An entry is written whole in tmp/ and renamed into entries/ (one atomic rename): a job that crashes while writing
leaves only a folder in tmp/, which no job trusts and the next eviction removes. A lookup also checks every file's
size against meta.json. The cache is bounded by CACHE_MAX_GB, and it always leaves CACHE_MIN_FREE_GB free on its
disk (default a tenth of the disk: the jobs on the volume need room for their own outputs): after each write the least
recently used entries go until both hold, and an entry that would leave less free space is not stored.
Everything here is best effort: a cache that cannot be read or written is a miss, never a failed job.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.result import human_size
from core.settings import Settings

KINDS = ("dataset", "text_embeds", "vae_latents", "captions", "buckets", "reg_images")
META = "meta.json"
DATA = "data"
MIN_FREE_SHARE = 0.1
"""Of the cache's disk, left free when CACHE_MIN_FREE_GB is not set."""
STALE_TMP_S = 24 * 3600.0
"""A folder left in tmp/ this long belongs to a crashed job: removed at the next eviction."""


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read a MiB at a time."""
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def key_of(parts: dict[str, Any]) -> str:
    """The key of an entry: a hash of everything that makes its content what it is (JSON, keys sorted)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def cache_root(settings: Settings) -> Path:
    """CACHE_DIR; else the RunPod network volume's folder when one is mounted; else DATA_DIR/cache."""
    if settings.cache_dir is not None:
        return settings.cache_dir
    if settings.volume_dir is not None:
        return settings.volume_dir / "trainer-cache"
    return settings.data_root / "cache"


@dataclass(frozen=True)
class Entry:
    kind: str
    key: str
    path: Path
    meta: dict[str, Any]

    @property
    def data(self) -> Path:
        return self.path / DATA

    @property
    def build_s(self) -> float:
        """How long making the content took the job that stored it (what a reuse saves)."""
        return float(self.meta.get("build_s") or 0.0)


@dataclass(frozen=True)
class Usage:
    entries: int
    bytes: int
    max_bytes: int
    root: Path

    def line(self) -> str:
        """'Cache: 3 entries, 1.2 GB of 100.0 GB (/runpod-volume/trainer-cache)': the UI's line."""
        return (f"Cache: {self.entries} entries, {human_size(self.bytes)} of {human_size(self.max_bytes)} "
                f"({self.root}; CACHE_MAX_GB sets the limit)")


class Cache:
    def __init__(self, root: Path, *, max_bytes: int, min_free_bytes: int | None = None):
        """`min_free_bytes`: free space always left on the cache's disk; None: a tenth of the disk."""
        self.root, self.max_bytes, self._min_free = Path(root), int(max_bytes), min_free_bytes

    @classmethod
    def from_settings(cls, settings: Settings) -> Cache:
        floor = settings.cache_min_free_gb
        return cls(cache_root(settings), max_bytes=int(settings.cache_max_gb * 1024**3),
                   min_free_bytes=None if floor is None else int(floor * 1024**3))

    def _free_bytes(self) -> tuple[int, int]:
        """(free bytes on the cache's disk, the floor to keep)."""
        usage = shutil.disk_usage(self.root)
        floor = int(usage.total * MIN_FREE_SHARE) if self._min_free is None else self._min_free
        return usage.free, floor

    def _entry_dir(self, kind: str, key: str) -> Path:
        if kind not in KINDS or not key.isalnum():
            raise ValueError(f"bad cache entry {kind}/{key}")
        return self.root / "entries" / kind / key

    # -- reading ---------------------------------------------------------------------------------------------

    def lookup(self, kind: str, key: str) -> Entry | None:
        """The complete entry for `key`, marked as just used; None when there is none (or it is damaged: then it
        is removed)."""
        folder = self._entry_dir(kind, key)
        try:
            meta = json.loads((folder / META).read_text())
            files = meta.get("files") or {}
            data = str(folder / DATA)
            for rel, size in files.items():
                if os.stat(os.path.join(data, rel)).st_size != size:
                    raise OSError(f"{rel} changed size")
            os.utime(folder / META)  # the LRU clock
        except FileNotFoundError:
            return None
        except (OSError, ValueError, AttributeError):
            self._remove(folder)
            return None
        return Entry(kind=kind, key=key, path=folder, meta=meta)

    def usage(self) -> Usage:
        entries = self._entries()
        return Usage(entries=len(entries), bytes=sum(size for _, size, _ in entries), max_bytes=self.max_bytes,
                     root=self.root)

    def _entries(self) -> list[tuple[Path, int, float]]:
        """(folder, size, last used) of every entry."""
        found = []
        for meta in (self.root / "entries").glob(f"*/*/{META}"):
            try:
                stat = meta.stat()
                size = int(json.loads(meta.read_text()).get("size") or 0)
            except (OSError, ValueError, AttributeError):
                continue
            found.append((meta.parent, size, stat.st_mtime))
        return found

    # -- writing ---------------------------------------------------------------------------------------------

    @contextmanager
    def writing(self, kind: str, key: str, *, build_s: float = 0.0, **meta: Any) -> Iterator[Path]:
        """Yield an empty folder to fill with the entry's content; when the block ends without an error the entry
        appears whole (one rename) and older entries are evicted to keep the size limit. An error, or content over
        the limit on its own, leaves nothing behind."""
        final = self._entry_dir(kind, key)
        tmp = self.root / "tmp" / f"{kind}-{key}-{uuid.uuid4().hex[:8]}"
        (tmp / DATA).mkdir(parents=True)
        try:
            yield tmp / DATA
            files = _file_sizes(tmp / DATA)
            size = sum(files.values())
            if size > self.max_bytes or not self._room_for(tmp):
                raise _TooLarge
            record = {"kind": kind, "key": key, "created": time.time(), "size": size, "build_s": round(build_s, 3),
                      "files": files, **meta}
            (tmp / META).write_text(json.dumps(record))
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(tmp, final)
            except OSError:
                if not (final / META).is_file():  # another job stored the same entry first: keep theirs
                    raise
        except _TooLarge:
            pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.evict(keep=final)

    def _room_for(self, content: Path) -> bool:
        """Whether the disk keeps its free-space floor with `content` (already written: a hard-linked entry takes
        no more room when it moves into place); older entries go first to make room."""
        self.evict(keep=content)
        free, floor = self._free_bytes()
        return free >= floor

    def evict(self, *, keep: Path | None = None) -> list[Path]:
        """Remove the least recently used entries until the cache is within its limit and the disk keeps its free
        space (never `keep`), and what crashed jobs left in tmp/. Returns the entries removed."""
        self._clear_stale_tmp()
        entries = sorted(self._entries(), key=lambda item: item[2])
        total = sum(size for _, size, _ in entries)
        free, floor = self._free_bytes()
        removed = []
        for folder, size, _ in entries:
            if total <= self.max_bytes and free >= floor:
                break
            if keep is not None and folder == keep:
                continue
            self._remove(folder)
            removed.append(folder)
            total -= size
            free += size
        return removed

    def _remove(self, folder: Path) -> None:
        """Out of entries/ in one rename (a reader never sees half an entry), then deleted."""
        trash = self.root / "tmp" / f"trash-{uuid.uuid4().hex[:8]}"
        try:
            trash.parent.mkdir(parents=True, exist_ok=True)
            os.rename(folder, trash)
        except OSError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def _clear_stale_tmp(self) -> None:
        now = time.time()
        for folder in (self.root / "tmp").glob("*") if (self.root / "tmp").is_dir() else ():
            try:
                if folder.name.startswith("trash-") or now - folder.stat().st_mtime > STALE_TMP_S:
                    shutil.rmtree(folder, ignore_errors=True)
            except OSError:
                continue


class _TooLarge(Exception):
    """Content over the cache's whole limit: not stored."""


def link_tree(source: Path, dest: Path) -> int:
    """Recreate `source`'s files under `dest` as hard links (instant, no space), copies where the file system cannot
    link. Returns the number of files."""
    made: set[str] = set()
    count = 0
    for relative, path in _files(source):
        target = os.path.join(dest, relative)
        folder = os.path.dirname(target)
        if folder not in made:
            os.makedirs(folder, exist_ok=True)
            made.add(folder)
        try:
            os.link(path, target)
        except FileExistsError:
            os.unlink(target)
            os.link(path, target)
        except OSError:
            shutil.copyfile(path, target)
        count += 1
    return count


def _file_sizes(folder: Path) -> dict[str, int]:
    return {relative: os.stat(path).st_size for relative, path in _files(folder)}


def _files(folder: Path) -> Iterator[tuple[str, str]]:
    """('sub/name', full path) of every file under `folder`: os.walk and plain strings, as a dataset's thousands of
    files take milliseconds this way and a good part of a second through pathlib."""
    for current, _, files in os.walk(folder):
        relative = os.path.relpath(current, folder)
        for name in files:
            path = os.path.join(current, name)
            if os.path.isfile(path):
                yield (name if relative == "." else f"{relative}/{name}"), path


