"""A zip extracted while it downloads: each member is written and checked as soon as its bytes have arrived.

    follower = ZipFollower(dest, keep_suffixes=..., limits=..., label=..., on_file=decoder.check_now, cancel=cancel)
    file = download(url, folder, ..., on_written=follower.written)   # reads what is already on disk
    extracted = follower.finish(file)    # checked against the central directory; None: extract_archive(file)

A zip's central directory, the list every reader trusts, is at its end; but each member's data is preceded by a
local header with its name and sizes. The follower reads those headers in order as the bytes arrive and extracts
each member on a few threads once all of its bytes are on disk, so the download, the extraction and the image checks
overlap: `on_file(path, data)` is called on the extracting thread with the member's bytes (None for a very large
member), to check it there.
When the download has ended the result stands only if it is exactly what extract_archive makes from the central
directory: the same members (offset, name, sizes, CRC of the bytes written), the same skips. Anything else — sizes
only after the data (a data descriptor), an encrypted, zip64 or unusual member, a name seen twice, a download that
started the file again, a header that disagrees with the directory, a limit passed, a cancel — and the follower
stops and removes what it wrote; the caller extracts the whole file as usual (so every error about the archive is
the usual one, and nothing the directory does not list stays).
"""

from __future__ import annotations

import os
import shutil
import struct
import threading
import zipfile
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from core.cancel import Cancel
from core.dataset.archive import (
    CHUNK,
    ZIP_WORKERS,
    Budget,
    Extracted,
    ExtractLimits,
    member_reason,
    member_target,
    plan_zip,
    relative_parts,
)

_LOCAL = b"PK\x03\x04"
_DIRECTORY = (b"PK\x01\x02", b"PK\x05\x06")
_HEADER = struct.Struct("<4s5H3L2H")  # signature, version, flags, method, time, date, crc, sizes, name/extra lengths
_ENCRYPTED, _DESCRIPTOR, _UTF8 = 0x1, 0x8, 0x800
_STORED, _DEFLATED = 0, 8
_WAIT_S = 0.2
_KEPT_BYTES = 64 * 1024 * 1024
"""A member up to this size is handed to `on_file` with its bytes; a larger one without (`on_file` reads it)."""


class _GiveUp(Exception):
    """This zip cannot be followed: it is extracted whole once downloaded."""


@dataclass
class _Member:
    offset: int
    """Of its local header: the central directory's header_offset."""
    parts: tuple[str, ...]
    method: int
    flags: int
    crc: int
    compressed: int
    size: int
    data_start: int
    target: Path | None = None
    """Set once its bytes are written and match its size and CRC."""

    @property
    def end(self) -> int:
        return self.data_start + self.compressed


class ZipFollower:
    def __init__(self, dest: Path, *, keep_suffixes: frozenset[str], limits: ExtractLimits, label: str,
                 on_file: Callable[[Path, bytes | None], None], cancel: Cancel):
        self.dest, self.keep_suffixes, self.limits, self.label = dest, keep_suffixes, limits, label
        self.on_file, self.cancel = on_file, cancel
        self._budget = Budget(limits=limits, archive_size=1, label=label, cancel=cancel)
        self._changed = threading.Condition()
        self._fd: int | None = None
        self._size = 0
        self._complete = False
        self._stopped = False
        self._reached_directory = False
        self._members: list[_Member] = []
        self._futures: list[Future[None]] = []
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(ZIP_WORKERS, thread_name_prefix="unzip-follow")  # threads start on use

    # -- the download's side ---------------------------------------------------------------------------------

    def written(self, path: Path, size: int) -> None:
        """The download's callback: `path` holds `size` bytes now (fewer than before: it started again)."""
        with self._changed:
            if self._stopped:
                return
            if size < self._size:
                self._stopped = True
            elif self._fd is None and size > 0:
                try:
                    self._fd = os.open(path, os.O_RDONLY)
                except OSError:  # the download goes on; the file is extracted once it is there
                    self._stopped = True
                    return
                self._thread = threading.Thread(target=self._follow, name="zip-follow", daemon=True)
                self._thread.start()
            self._size = size
            self._changed.notify_all()

    def finish(self, archive: Path) -> Extracted | None:
        """After the download: what was extracted while it ran, when it is exactly what the archive's central
        directory lists; None when the follower stopped or never started (its files are removed)."""
        with self._changed:
            self._complete = True
            self._changed.notify_all()
        self._wait_for_work()
        if self._stopped or not self._reached_directory:
            self._discard()
            return None
        extracted = self._checked(archive)
        if extracted is None:
            self._discard()
        return extracted

    def abandon(self) -> None:
        """The download failed or was cancelled: stop, and remove what was written."""
        with self._changed:
            self._stopped = self._complete = True
            self._changed.notify_all()
        self._wait_for_work()
        self._discard()

    # -- the following thread --------------------------------------------------------------------------------

    def _follow(self) -> None:
        try:
            offset = 0
            seen: set[tuple[str, ...]] = set()
            while True:
                head = self._read(offset, _HEADER.size)
                if head[:4] in _DIRECTORY:
                    self._reached_directory = True
                    return
                member, extract = self._member(head, offset, seen=seen)
                if extract:
                    self._wait_for(member.end)
                    self._budget.archive_size = max(self._size, 1)  # the ratio limit, on what has arrived
                    self._members.append(member)
                    self._futures.append(self._pool.submit(self._extract, member))
                offset = member.end
        except Exception:  # anything unusual: the whole file is extracted as usual, with the usual errors
            self._stop()

    def _member(self, head: bytes, offset: int, *, seen: set[tuple[str, ...]]) -> tuple[_Member, bool]:
        """The member whose local header starts at `offset`, and whether it is extracted."""
        signature, _, flags, method, _, _, crc, compressed, size, name_length, extra_length = _HEADER.unpack(head)
        if signature != _LOCAL or flags & (_ENCRYPTED | _DESCRIPTOR) or method not in (_STORED, _DEFLATED):
            raise _GiveUp
        if 0xFFFFFFFF in (compressed, size) or (method == _STORED and compressed != size):
            raise _GiveUp
        name = self._read(offset + _HEADER.size, name_length).decode("utf-8" if flags & _UTF8 else "cp437")
        parts = relative_parts(name, label=self.label)
        self._budget.member(size)
        member = _Member(offset=offset, parts=parts, method=method, flags=flags, crc=crc, compressed=compressed,
                         size=size, data_start=offset + _HEADER.size + name_length + extra_length)
        if name.endswith("/") or not parts or member_reason(parts, size, keep_suffixes=self.keep_suffixes,
                                                             limits=self.limits):
            return member, False
        if parts in seen:
            raise _GiveUp  # the same name twice: the directory says which one counts
        seen.add(parts)
        return member, True

    def _extract(self, member: _Member) -> None:
        target = member_target(self.dest.resolve(), member.parts, label=self.label)
        target.parent.mkdir(parents=True, exist_ok=True)
        inflate = zlib.decompressobj(-15) if member.method == _DEFLATED else None
        crc = written = 0
        kept: list[bytes] | None = [] if member.size <= _KEPT_BYTES else None
        with target.open("wb") as sink:
            for position in range(member.data_start, member.end, CHUNK):
                if self._stopped:
                    raise _GiveUp
                data = os.pread(self._descriptor(), min(CHUNK, member.end - position), position)
                while data:
                    out = inflate.decompress(data, CHUNK) if inflate is not None else data
                    data = inflate.unconsumed_tail if inflate is not None else b""
                    written += len(out)
                    if written > member.size:
                        raise _GiveUp
                    self._budget.wrote(len(out))
                    crc = zlib.crc32(out, crc)
                    sink.write(out)
                    if kept is not None:
                        kept.append(out)
        if written != member.size or crc != member.crc or (inflate is not None and not inflate.eof):
            raise _GiveUp
        member.target = target
        self.on_file(target, b"".join(kept) if kept is not None else None)

    # -- waiting ---------------------------------------------------------------------------------------------

    def _read(self, offset: int, count: int) -> bytes:
        self._wait_for(offset + count)
        data = os.pread(self._descriptor(), count, offset)
        if len(data) != count:
            raise _GiveUp
        return data

    def _wait_for(self, size: int) -> None:
        """Until the file holds `size` bytes; _GiveUp when it never will (the download ended, stopped, restarted)."""
        with self._changed:
            while self._size < size:
                if self._stopped or self._complete or self.cancel.is_set():
                    raise _GiveUp
                self._changed.wait(_WAIT_S)
            if self._stopped:
                raise _GiveUp

    def _descriptor(self) -> int:
        if self._fd is None:
            raise _GiveUp
        return self._fd

    def _stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify_all()

    def _wait_for_work(self) -> None:
        if self._thread is not None:
            self._thread.join()
        for future in self._futures:
            if future.exception() is not None:
                self._stopped = True
        self._pool.shutdown(wait=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _discard(self) -> None:
        shutil.rmtree(self.dest, ignore_errors=True)

    # -- the check against the central directory -------------------------------------------------------------

    def _checked(self, archive: Path) -> Extracted | None:
        """The extraction as extract_archive would report it, or None when the directory tells another story."""
        out = Extracted(root=self.dest)
        try:
            with zipfile.ZipFile(archive) as bundle:
                budget = Budget(limits=self.limits, archive_size=archive.stat().st_size, label=self.label,
                                cancel=self.cancel)
                planned = plan_zip(bundle, out, keep_suffixes=self.keep_suffixes, budget=budget, label=self.label)
        except Exception:  # the usual extraction reports it
            return None
        extracted = {member.offset: member for member in self._members}
        for info, parts in planned:
            member = extracted.pop(info.header_offset, None)
            # Every field the whole-file extraction reads from the directory: a member whose local header tells
            # another story (its compression method, its flags) is read differently there.
            if (member is None or member.target is None or member.parts != parts or member.crc != info.CRC
                    or member.size != info.file_size or member.compressed != info.compress_size
                    or member.method != info.compress_type or member.flags != info.flag_bits):
                return None
            out.files.append(member.target)
        for member in extracted.values():  # not in the directory's list (a link, a stale entry): not extracted
            if member.target is not None:
                member.target.unlink(missing_ok=True)
        return out
