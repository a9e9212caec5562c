"""core/dataset/zip_follow.py: a zip extracted while it downloads, exactly as the whole file would be, or not at all."""

from __future__ import annotations

import hashlib
import io
import os
import random
import stat
import threading
import time
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from core.adapters.fetch import download
from core.cache.datasets import image_hashes
from core.cancel import Cancel
from core.dataset.archive import IMAGE_SUFFIXES, Extracted, ExtractLimits, extract_archive
from core.dataset.stage import caption_options, stage_dataset
from core.dataset.zip_follow import ZipFollower
from core.errors import JobCancelled, UnsafeArchive
from core.settings import Settings
from core.spec.job import parse_job
from tests.support.http_server import serve_files

KEEP = IMAGE_SUFFIXES | {".txt"}
SETTINGS = Settings.from_env({"ALLOW_PRIVATE_URLS": "1"})


def noise_jpeg(seed: int, side: int = 96) -> bytes:
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), random.Random(seed).randbytes(side * side * 3)).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_zip(path: Path, members: list[tuple[str, bytes]], *, stream: bool = False) -> Path:
    """A zip of `members`; `stream`: written to a pipe-like file, so every member's sizes come after its data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as raw:
        target = _Unseekable(raw) if stream else raw
        with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as bundle:  # type: ignore[arg-type]
            for index, (name, data) in enumerate(members):
                if name.startswith("@link:"):
                    info = zipfile.ZipInfo(name.removeprefix("@link:"))
                    info.external_attr = (stat.S_IFLNK | 0o777) << 16
                    bundle.writestr(info, data)
                else:
                    bundle.writestr(name, data, compress_type=zipfile.ZIP_STORED if index % 2 else None)
    return path


class _Unseekable(io.RawIOBase):
    def __init__(self, raw):
        self.raw = raw

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        return self.raw.write(data)

    def flush(self) -> None:
        self.raw.flush()


def follow(url: str, tmp: Path, *, cancel: Cancel | None = None) -> tuple[Extracted | None, list, float, Path]:
    """Download `url` with a follower; (its result, [(time, file) checked], when the download ended, the file)."""
    checked: list[tuple[float, Path]] = []
    follower = ZipFollower(tmp / "followed", keep_suffixes=KEEP, limits=ExtractLimits(), label="data.zip",
                           on_file=lambda path, data: checked.append((time.monotonic(), path)),
                           cancel=cancel or Cancel.of(None))
    try:
        file = download(url, tmp / "download", settings=SETTINGS, max_bytes=1 << 30, cancel=cancel,
                        on_written=follower.written)
    except BaseException:
        follower.abandon()
        raise
    ended = time.monotonic()
    return follower.finish(file), checked, ended, file


def listing(extracted: Extracted) -> tuple[list[tuple[str, bytes]], list[tuple[str, str]]]:
    return ([(p.relative_to(extracted.root).as_posix(), p.read_bytes()) for p in extracted.files],
            sorted(extracted.skipped))


MIXED = [
    ("set/a.jpg", noise_jpeg(1)), ("set/a.txt", b"a caption"), ("set/sub/b.jpg", noise_jpeg(2)),
    ("set/sub/", b""), ("set/.hidden.jpg", noise_jpeg(3)), ("__MACOSX/set/._a.jpg", b"x"),
    ("set/readme.md", b"hello"), ("set/caf\u00e9.jpg", noise_jpeg(4)), ("set/c.txt", b"a caption without image"),
]


def test_a_zip_is_extracted_and_checked_while_it_downloads(tmp_path: Path):
    served = tmp_path / "served"
    members = [(f"set/img_{i:02d}.jpg", noise_jpeg(i, side=160)) for i in range(12)]
    archive = write_zip(served / "data.zip", members)
    with serve_files(served) as server:
        server.trickle["data.zip"] = archive.stat().st_size / 2.0  # two seconds
        result, checked, ended, _ = follow(server.url("data.zip"), tmp_path)
    assert result is not None
    assert len(checked) == 12
    assert checked[0][0] < ended - 1.0  # the first image was out and being checked a second before the end
    assert [p.read_bytes() for p in result.files] == [data for _, data in members]


def test_what_it_extracts_is_what_the_whole_file_gives(tmp_path: Path):
    served = tmp_path / "served"
    archive = write_zip(served / "data.zip", MIXED)
    with serve_files(served) as server:
        result, _, _, _ = follow(server.url("data.zip"), tmp_path)
    assert result is not None
    whole = extract_archive(archive, tmp_path / "whole", keep_suffixes=KEEP)
    assert listing(result) == listing(whole)
    assert sorted(p.relative_to(result.root).as_posix() for p in result.root.rglob("*") if p.is_file()) == \
           sorted(p.relative_to(whole.root).as_posix() for p in whole.root.rglob("*") if p.is_file())


def test_a_link_the_directory_lists_is_skipped_as_in_the_whole_file(tmp_path: Path):
    """The local header cannot say a member is a link; the central directory can: the file written goes."""
    archive = write_zip(tmp_path / "served" / "data.zip",
                        [("set/a.jpg", noise_jpeg(1)), ("@link:set/b.jpg", b"/etc/passwd")])
    with serve_files(archive.parent) as server:
        result, _, _, _ = follow(server.url("data.zip"), tmp_path)
    assert result is not None
    assert listing(result) == listing(extract_archive(archive, tmp_path / "whole", keep_suffixes=KEEP))
    assert not (result.root / "set" / "b.jpg").exists() and ("set/b.jpg", "symlink") in result.skipped


@pytest.mark.filterwarnings("ignore:Duplicate name")  # zipfile's, while the test writes the name twice
@pytest.mark.parametrize("case", ["sizes after the data", "a name twice", "an unsafe name", "restarted"])
def test_a_zip_it_cannot_follow_is_left_to_the_usual_extraction(tmp_path: Path, case: str):
    served = tmp_path / "served"
    members = [("set/a.jpg", noise_jpeg(1)), ("set/b.jpg", noise_jpeg(2))]
    if case == "a name twice":
        members.append(("set/a.jpg", noise_jpeg(3)))
    if case == "an unsafe name":
        members.append(("../escape.jpg", noise_jpeg(3)))
    archive = write_zip(served / "data.zip", members, stream=case == "sizes after the data")
    with serve_files(served, ranges=case != "restarted") as server:
        if case == "restarted":
            server.drop_halfway["data.zip"] = 1  # no Range support: the download starts the file again
        result, _, _, file = follow(server.url("data.zip"), tmp_path)
    assert result is None and not (tmp_path / "followed").exists()  # nothing it wrote stays
    assert file.read_bytes() == archive.read_bytes()
    if case == "an unsafe name":
        with pytest.raises(UnsafeArchive, match=r"'\.\.'"):
            extract_archive(file, tmp_path / "whole", keep_suffixes=KEEP)


def _central_entry(data: bytes, name: bytes) -> int:
    """The offset of `name`'s entry in a zip's central directory (46 fixed bytes, then the name)."""
    at = data.index(b"PK\x01\x02")
    while data[at + 46:at + 46 + len(name)] != name:
        at = data.index(b"PK\x01\x02", at + 4)
    return at


@pytest.mark.parametrize("field", ["method", "flags"])
def test_a_member_whose_directory_entry_disagrees_with_its_local_header_is_not_kept(tmp_path: Path, field: str):
    """The whole-file extraction reads the method and flags of the central directory: where the local header says
    otherwise, the followed result gives way to the usual extraction, which reads the member as the directory says."""
    served = tmp_path / "served"
    archive = write_zip(served / "data.zip", [("set/a.jpg", noise_jpeg(1)), ("set/b.jpg", noise_jpeg(2))])
    data = bytearray(archive.read_bytes())
    entry = _central_entry(bytes(data), b"set/b.jpg")  # stored (method 0) in both headers as written
    if field == "method":
        data[entry + 10:entry + 12] = (8).to_bytes(2, "little")  # the directory says deflated
    else:
        data[entry + 8:entry + 10] = (int.from_bytes(data[entry + 8:entry + 10], "little") | 0x800).to_bytes(
            2, "little")  # the directory says the name is UTF-8
    archive.write_bytes(bytes(data))
    with serve_files(served) as server:
        result, _, _, file = follow(server.url("data.zip"), tmp_path)
    assert result is None and not (tmp_path / "followed").exists()
    whole = extract_archive(file, tmp_path / "whole", keep_suffixes=KEEP)
    if field == "method":  # read as deflated, the stored bytes do not inflate: skipped with its reason
        assert [p.name for p in whole.files] == ["a.jpg"]
        assert [(name, reason.split(" (")[0]) for name, reason in whole.skipped] == [
            ("set/b.jpg", "unreadable in archive")]
    else:
        assert [p.name for p in whole.files] == ["a.jpg", "b.jpg"]


def test_a_cancelled_download_leaves_nothing_it_wrote(tmp_path: Path):
    members = [(f"set/img_{i:02d}.jpg", noise_jpeg(i, side=160)) for i in range(12)]
    archive = write_zip(tmp_path / "served" / "data.zip", members)
    cancel = Cancel.of(None)
    with serve_files(archive.parent) as server:
        server.trickle["data.zip"] = archive.stat().st_size / 3.0
        threading.Timer(1.2, cancel.set).start()
        with pytest.raises(JobCancelled):
            follow(server.url("data.zip"), tmp_path, cancel=cancel)
    assert not (tmp_path / "followed").exists()


def test_staging_a_url_gives_the_same_dataset_followed_or_not(tmp_path: Path):
    served = tmp_path / "served"
    write_zip(served / "data.zip", MIXED)
    write_zip(served / "streamed.zip", MIXED, stream=True)  # not followed: extracted once downloaded
    manifests = []
    with serve_files(served) as server:
        for name in ("data.zip", "streamed.zip"):
            spec = parse_job({"dataset_url": server.url(name), "trigger_word": "sks",
                              "config": {"model_family": "sdxl", "model_name": "org/model"}})
            manifest = stage_dataset(spec.dataset, tmp_path / name, captions=caption_options(spec), settings=SETTINGS)
            manifests.append(manifest)
    followed, whole = manifests
    assert [(e.path.name, e.caption, e.width) for e in followed.images] == \
           [(e.path.name, e.caption, e.width) for e in whole.images]
    assert sorted((s.name, s.reason) for s in followed.skipped) == sorted((s.name, s.reason) for s in whole.skipped)
    assert sorted(os.listdir(tmp_path / "data.zip")) == ["images"]  # the download and extraction folders went
    # The followed images were hashed while their bytes were in hand, and the hashes are the files'.
    assert all(e.sha256 == hashlib.sha256(e.path.read_bytes()).hexdigest() for e in followed.images)
    assert image_hashes(followed) == image_hashes(whole) and all(e.sha256 is None for e in whole.images)
