"""Safe extraction of dataset archives (zip, tar, tar.gz, tar.bz2, tar.xz).

Nothing is written outside the destination folder: absolute names and `..` refuse the whole archive; links,
devices, hidden files, macOS metadata and files that are neither images nor captions are skipped and counted.
Limits on total size, file count and compression ratio stop zip bombs, checked from the headers before any
byte is written and again while bytes are written (headers can lie).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import re
import shutil
import stat
import tarfile
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from core.cancel import Cancel
from core.dataset.clips import CLIP_SUFFIXES
from core.errors import DatasetError, UnsafeArchive
from core.result import human_size
from core.spec import ClipLimits

# Every suffix Pillow opens that a dataset plausibly holds; anything else is skipped before decoding.
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".tga", ".ppm", ".avif"}
)
MACOS_METADATA = "__MACOSX"
CHUNK = 1024 * 1024
# Ratio is only judged past this size: a tiny archive of captions compresses well and is harmless.
_RATIO_FLOOR_BYTES = 16 * 1024 * 1024
# Zip members are extracted a few at a time: zlib, crc32 and file writes release the GIL, so each core inflates.
ZIP_WORKERS = min(8, os.cpu_count() or 2)


@dataclass(frozen=True)
class ExtractLimits:
    max_total_bytes: int = 20 * 1024**3
    max_files: int = 100_000
    max_ratio: float = 100.0
    max_clip_bytes: int = ClipLimits().max_bytes
    """One video clip's bound (ClipLimits.max_bytes): a clip member its header says is larger is never written."""


@dataclass
class Extracted:
    root: Path
    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(member name, reason) for every member not written."""
    on_file: Callable[[Path], None] | None = field(default=None, repr=False)

    def add(self, path: Path) -> None:
        self.files.append(path)
        if self.on_file is not None:
            self.on_file(path)

    def skip(self, name: str, reason: str) -> None:
        self.skipped.append((name, reason))


def archive_kind(path: Path) -> str | None:
    """'zip' or 'tar' from the file's first bytes (names lie), or None for anything else."""
    with path.open("rb") as handle:
        head = handle.read(262)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00" or head[257:262] == b"ustar":
        return "tar"
    return None


def skip_reason(parts: tuple[str, ...], *, keep_suffixes: frozenset[str]) -> str | None:
    """Why a file at this relative path is not staged, or None when it is kept."""
    if any(part == MACOS_METADATA for part in parts):
        return "macOS metadata"
    if any(part.startswith(".") for part in parts):
        return "hidden file"
    if Path(parts[-1]).suffix.lower() not in keep_suffixes:
        return "not an image"
    return None


def member_reason(parts: tuple[str, ...], size: int, *, keep_suffixes: frozenset[str],
                  limits: ExtractLimits) -> str | None:
    """skip_reason, and a clip whose header declares more bytes than one clip may have (written as the probe would
    refuse it, before any of it is written: the member's bytes are then bounded by that header)."""
    reason = skip_reason(parts, keep_suffixes=keep_suffixes)
    if reason is None and size > limits.max_clip_bytes and Path(parts[-1]).suffix.lower() in CLIP_SUFFIXES:
        return f"video bomb (the archive lists {size} bytes, over the {limits.max_clip_bytes}-byte limit for one clip)"
    return reason


def extract_archive(
    archive: Path,
    dest: Path,
    *,
    keep_suffixes: frozenset[str],
    limits: ExtractLimits = ExtractLimits(),
    label: str | None = None,
    on_file: Callable[[Path], None] | None = None,
    cancel: Cancel | None = None,
) -> Extracted:
    """Extract the images and captions of `archive` into `dest` (created; emptied on failure).

    `on_file` is called with each file as soon as it is complete (the caller can start decoding it while the
    rest of the archive is still being extracted). `cancel` is checked at every member and every megabyte."""
    label = label or archive.name
    cancel = Cancel.of(cancel)
    kind = archive_kind(archive)
    if kind is None:
        raise DatasetError(f"{label}: not a zip or tar archive (gz, bz2, xz)", field="dataset")
    dest.mkdir(parents=True, exist_ok=True)
    out = Extracted(root=dest, on_file=on_file)
    try:
        if kind == "zip":
            _extract_zip(archive, out, keep_suffixes=keep_suffixes, limits=limits, label=label, cancel=cancel)
        else:
            _extract_tar(archive, out, keep_suffixes=keep_suffixes, limits=limits, label=label, cancel=cancel)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return out


class Budget:
    """Counts members and bytes against the limits; raises UnsafeArchive the moment one is passed. Safe to share
    between the threads extracting members."""

    def __init__(self, *, limits: ExtractLimits, archive_size: int, label: str, cancel: Cancel):
        self.limits, self.archive_size, self.label, self.cancel = limits, max(archive_size, 1), label, cancel
        self.files = 0
        self.declared = 0
        self.written = 0
        self._lock = threading.Lock()

    def member(self, size: int) -> None:
        self.files += 1
        self.declared += max(size, 0)
        if self.files > self.limits.max_files:
            raise UnsafeArchive(f"{self.label}: more than {self.limits.max_files} entries", field="dataset")
        self.check_bytes(self.declared)

    def wrote(self, count: int) -> None:
        with self._lock:
            self.written += count
            total = self.written
        self.check_bytes(total)

    def check_bytes(self, total: int) -> None:
        self.cancel.check(f"while extracting {self.label}")
        if total > self.limits.max_total_bytes:
            raise UnsafeArchive(
                f"{self.label}: unpacks to more than {human_size(self.limits.max_total_bytes)}", field="dataset"
            )
        ratio = total / self.archive_size
        if total > _RATIO_FLOOR_BYTES and ratio > self.limits.max_ratio:
            raise UnsafeArchive(
                f"{self.label}: compression ratio over {self.limits.max_ratio:g}:1 (a zip bomb?)", field="dataset"
            )


def relative_parts(name: str, *, label: str) -> tuple[str, ...]:
    """The member's path as safe parts; absolute names and '..' refuse the archive."""
    clean = name.replace("\\", "/")
    if clean.startswith("/") or re.match(r"^[A-Za-z]:", clean):
        raise UnsafeArchive(f"{label}: entry '{name}' has an absolute path", field="dataset")
    parts = tuple(part for part in clean.split("/") if part not in ("", "."))
    if ".." in parts:
        raise UnsafeArchive(f"{label}: entry '{name}' points outside the archive ('..')", field="dataset")
    if any("\x00" in part for part in parts):
        raise UnsafeArchive(f"{label}: entry '{name}' has a NUL byte in its name", field="dataset")
    return parts


def member_target(root: Path, parts: tuple[str, ...], *, label: str) -> Path:
    """`root` (resolved) joined with the member's parts, refused when a link already there leads outside it."""
    target = root.joinpath(*parts)
    if not target.resolve().is_relative_to(root):
        raise UnsafeArchive(f"{label}: entry '{'/'.join(parts)}' resolves outside the dataset folder", field="dataset")
    return target


def _copy_limited(source: IO[bytes], target: Path, *, budget: Budget, declared: int) -> None:
    """Stream one member to disk; stop when it exceeds its declared size or the archive's budget."""
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with target.open("wb") as sink:
        while chunk := source.read(CHUNK):
            written += len(chunk)
            if written > declared:
                raise UnsafeArchive(f"{budget.label}: '{target.name}' is larger than its header says", field="dataset")
            budget.wrote(len(chunk))
            sink.write(chunk)
    if written < declared:
        raise DatasetError(
            f"{budget.label}: '{target.name}' ends after {written} of {declared} bytes (a truncated archive?)",
            field="dataset",
        )


def _extract_zip(
    archive: Path, out: Extracted, *, keep_suffixes: frozenset[str], limits: ExtractLimits, label: str,
    cancel: Cancel,
) -> None:
    try:
        bundle = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise DatasetError(f"{label}: not a readable zip ({exc})", field="dataset") from None
    with bundle:
        budget = Budget(limits=limits, archive_size=archive.stat().st_size, label=label, cancel=cancel)
        planned = plan_zip(bundle, out, keep_suffixes=keep_suffixes, budget=budget, label=label)
    root = out.root.resolve()
    with _zip_per_thread(archive) as opened, ThreadPoolExecutor(ZIP_WORKERS, thread_name_prefix="unzip") as pool:
        def extract(member: tuple[zipfile.ZipInfo, tuple[str, ...]]) -> tuple[Path, str | None]:
            info, parts = member
            target = member_target(root, parts, label=label)
            try:
                with opened().open(info) as source:
                    _copy_limited(source, target, budget=budget, declared=info.file_size)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as exc:
                # One damaged, undecodable or encrypted member: skip it, keep the rest.
                target.unlink(missing_ok=True)
                return target, f"unreadable in archive ({exc})"
            out.add(target)
            return target, None

        try:
            done = list(pool.map(extract, planned))
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # the first error (a limit, a cancel) stops the rest
            raise
    out.files = [target for target, problem in done if problem is None]  # the archive's order, not the threads'
    out.skipped += [("/".join(parts), problem) for (_, parts), (_, problem) in zip(planned, done, strict=True)
                    if problem is not None]


def plan_zip(bundle: zipfile.ZipFile, out: Extracted, *, keep_suffixes: frozenset[str], budget: Budget,
              label: str) -> list[tuple[zipfile.ZipInfo, tuple[str, ...]]]:
    """The members to extract, every header checked first: one unsafe name or a declared size over the limits
    refuses the archive before a byte is written."""
    planned: dict[tuple[str, ...], zipfile.ZipInfo] = {}
    for info in bundle.infolist():
        parts = relative_parts(info.filename, label=label)
        budget.member(info.file_size)
        if info.is_dir() or not parts:
            continue
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            out.skip("/".join(parts), "symlink")
            continue
        reason = member_reason(parts, info.file_size, keep_suffixes=keep_suffixes, limits=budget.limits)
        if reason:
            out.skip("/".join(parts), reason)
            continue
        if parts in planned:  # the same name twice: the later one wins, as when extracted one after the other
            out.skip("/".join(parts), "duplicate name in archive")
        planned[parts] = info
    return [(info, parts) for parts, info in planned.items()]


@contextmanager
def _zip_per_thread(archive: Path) -> Iterator[Callable[[], zipfile.ZipFile]]:
    """`opened()`: this thread's own handle on the archive (no file position shared between threads)."""
    local = threading.local()
    handles: list[zipfile.ZipFile] = []
    lock = threading.Lock()

    def opened() -> zipfile.ZipFile:
        handle = getattr(local, "bundle", None)
        if handle is None:
            handle = local.bundle = zipfile.ZipFile(archive)
            with lock:
                handles.append(handle)
        return handle

    try:
        yield opened
    finally:
        for handle in handles:
            handle.close()


_TAR_SPECIAL = {
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hard link",
    tarfile.CHRTYPE: "device file",
    tarfile.BLKTYPE: "device file",
    tarfile.FIFOTYPE: "fifo",
}


def _open_stream(archive: Path) -> io.BufferedIOBase:
    """The tar bytes, decompressed by the gzip/bz2/lzma modules: they raise EOFError on a truncated stream
    (tarfile's own stream mode would end silently at the cut) and gzip checks the CRC."""
    with archive.open("rb") as handle:
        head = handle.read(6)
    if head[:2] == b"\x1f\x8b":
        return gzip.open(archive, "rb")
    if head[:3] == b"BZh":
        return bz2.open(archive, "rb")
    if head == b"\xfd7zXZ\x00":
        return lzma.open(archive, "rb")
    return archive.open("rb")


def _extract_tar(
    archive: Path, out: Extracted, *, keep_suffixes: frozenset[str], limits: ExtractLimits, label: str,
    cancel: Cancel,
) -> None:
    budget = Budget(limits=limits, archive_size=archive.stat().st_size, label=label, cancel=cancel)
    root = out.root.resolve()
    try:
        # Stream mode ("r|"): one pass over a compressed tar, never the whole archive in memory.
        with _open_stream(archive) as stream, tarfile.open(fileobj=stream, mode="r|", bufsize=CHUNK) as bundle:
            for member in bundle:
                parts = relative_parts(member.name, label=label)
                budget.member(member.size if member.isreg() else 0)
                if member.isdir() or not parts:
                    continue
                name = "/".join(parts)
                special = _TAR_SPECIAL.get(member.type)
                if special or not member.isreg():
                    out.skip(name, special or "special file")
                    continue
                reason = member_reason(parts, member.size, keep_suffixes=keep_suffixes, limits=limits)
                if reason:
                    out.skip(name, reason)
                    continue
                target = member_target(root, parts, label=label)
                source = bundle.extractfile(member)
                if source is None:
                    out.skip(name, "special file")
                    continue
                _copy_limited(source, target, budget=budget, declared=member.size)
                out.add(target)
            # tarfile ends quietly at a missing end-of-archive marker; drain the stream so a cut compressed
            # stream raises EOFError, and check a plain tar still has its two zero blocks.
            while stream.read(CHUNK):
                pass
            if isinstance(stream, io.BufferedReader) and archive.stat().st_size < bundle.offset + 2 * tarfile.BLOCKSIZE:
                raise EOFError("no end-of-archive marker")
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
        raise DatasetError(f"{label}: not a readable tar archive ({exc})", field="dataset") from None



