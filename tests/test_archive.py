"""Safe extraction against a corpus of hostile and broken archives the tests build themselves."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from core.dataset.archive import IMAGE_SUFFIXES, ExtractLimits, archive_kind, extract_archive
from core.errors import DatasetError, UnsafeArchive

KEEP = IMAGE_SUFFIXES | {".txt"}


def png_bytes(size: tuple[int, int] = (32, 32), color: tuple[int, int, int] = (200, 10, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def make_zip(path: Path, members: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return path


def add_tar_file(bundle: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    bundle.addfile(info, io.BytesIO(data))


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


@pytest.fixture
def area(tmp_path: Path) -> tuple[Path, Path]:
    """(the archive's folder, the extraction target). Everything outside the target is checked untouched."""
    source = tmp_path / "src"
    source.mkdir()
    return source, tmp_path / "job" / "extract"


def test_zip_extracts_images_and_captions_and_counts_the_rest(area):
    source, dest = area
    archive = make_zip(source / "d.zip", {
        "set/a.png": png_bytes(), "set/a.txt": b"a caption", "set/notes.pdf": b"%PDF",
        "set/.hidden.png": png_bytes(), "__MACOSX/set/._a.png": b"\x00\x05\x16\x07", "set/.git/config": b"x",
    })
    out = extract_archive(archive, dest, keep_suffixes=KEEP)
    assert files_under(dest) == {"set/a.png", "set/a.txt"}
    assert sorted(out.skipped) == sorted([
        ("set/notes.pdf", "not an image"), ("set/.hidden.png", "hidden file"),
        ("__MACOSX/set/._a.png", "macOS metadata"), ("set/.git/config", "hidden file"),
    ])


@pytest.mark.parametrize("mode,suffix", [("w", "tar"), ("w:gz", "tar.gz"), ("w:bz2", "tar.bz2"), ("w:xz", "tar.xz")])
def test_every_tar_compression_extracts(area, mode: str, suffix: str):
    source, dest = area
    archive = source / f"d.{suffix}"
    with tarfile.open(archive, mode) as bundle:
        add_tar_file(bundle, "a.png", png_bytes())
        add_tar_file(bundle, "a.txt", b"caption")
    assert archive_kind(archive) == "tar"
    out = extract_archive(archive, dest, keep_suffixes=KEEP)
    assert files_under(dest) == {"a.png", "a.txt"}
    assert (dest / "a.txt").read_text() == "caption"
    assert out.skipped == []


def test_zip_slip_is_refused_and_writes_nothing(area, tmp_path: Path):
    source, dest = area
    archive = make_zip(source / "slip.zip", {"ok.png": png_bytes(), "../../evil.png": png_bytes()})
    with pytest.raises(UnsafeArchive, match=r"evil\.png.*outside"):
        extract_archive(archive, dest, keep_suffixes=KEEP)
    assert not dest.exists()
    assert not list(tmp_path.rglob("evil.png"))


@pytest.mark.parametrize("name", ["/tmp/abs-evil.png", "C:/evil.png", "\\\\server\\evil.png"])  # noqa: S108
def test_absolute_names_are_refused(area, name: str):
    source, dest = area
    archive = make_zip(source / "abs.zip", {name: png_bytes()})
    with pytest.raises(UnsafeArchive, match="absolute path"):
        extract_archive(archive, dest, keep_suffixes=KEEP)
    assert not Path("/tmp/abs-evil.png").exists()  # noqa: S108


def test_tar_with_dotdot_and_absolute_names_is_refused(area):
    source, dest = area
    for name in ("../evil.png", "/etc/evil.png"):
        archive = source / "bad.tar"
        with tarfile.open(archive, "w") as bundle:
            add_tar_file(bundle, "fine.png", png_bytes())
            add_tar_file(bundle, name, png_bytes())
        with pytest.raises(UnsafeArchive):
            extract_archive(archive, dest, keep_suffixes=KEEP)
        assert not dest.exists()


def test_tar_links_and_devices_are_skipped_never_created(area, tmp_path: Path):
    source, dest = area
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read")
    archive = source / "links.tar"
    with tarfile.open(archive, "w") as bundle:
        add_tar_file(bundle, "real.png", png_bytes())
        for name, kind, target in (
            ("sym.png", tarfile.SYMTYPE, str(secret)),
            ("sym.txt", tarfile.SYMTYPE, "../../secret.txt"),
            ("hard.png", tarfile.LNKTYPE, "real.png"),
            ("hard.txt", tarfile.LNKTYPE, "/etc/passwd"),
            ("dev.png", tarfile.CHRTYPE, ""),
            ("blk.png", tarfile.BLKTYPE, ""),
            ("fifo.png", tarfile.FIFOTYPE, ""),
        ):
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = target
            bundle.addfile(info)
    out = extract_archive(archive, dest, keep_suffixes=KEEP)
    assert files_under(dest) == {"real.png"}
    assert not any(p.is_symlink() for p in dest.rglob("*"))
    assert dict(out.skipped) == {
        "sym.png": "symlink", "sym.txt": "symlink", "hard.png": "hard link", "hard.txt": "hard link",
        "dev.png": "device file", "blk.png": "device file", "fifo.png": "fifo",
    }


def test_zip_symlink_entries_are_skipped(area):
    source, dest = area
    archive = source / "zlink.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        link = zipfile.ZipInfo("link.png")
        link.external_attr = (0o120777 << 16)
        bundle.writestr(link, "/etc/passwd")
        bundle.writestr("a.png", png_bytes())
    out = extract_archive(archive, dest, keep_suffixes=KEEP)
    assert files_under(dest) == {"a.png"}
    assert out.skipped == [("link.png", "symlink")]


def test_zip_bomb_is_refused_by_ratio_before_writing(area):
    source, dest = area
    archive = make_zip(source / "bomb.zip", {"zeros.png": bytes(40 * 1024 * 1024)})
    assert archive.stat().st_size < 100_000
    with pytest.raises(UnsafeArchive, match="compression ratio"):
        extract_archive(archive, dest, keep_suffixes=KEEP)
    assert not dest.exists()


def test_tar_gz_bomb_is_refused_while_streaming(area):
    source, dest = area
    archive = source / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz") as bundle:
        add_tar_file(bundle, "zeros.png", bytes(40 * 1024 * 1024))
    with pytest.raises(UnsafeArchive, match="compression ratio"):
        extract_archive(archive, dest, keep_suffixes=KEEP)
    assert not dest.exists()


def test_total_size_and_file_count_limits(area):
    source, dest = area
    members = {f"{i}.png": png_bytes() for i in range(12)}
    archive = make_zip(source / "many.zip", members, compression=zipfile.ZIP_STORED)
    with pytest.raises(UnsafeArchive, match="more than 10 entries"):
        extract_archive(archive, dest, keep_suffixes=KEEP, limits=ExtractLimits(max_files=10))
    with pytest.raises(UnsafeArchive, match="unpacks to more than"):
        extract_archive(archive, dest, keep_suffixes=KEEP, limits=ExtractLimits(max_total_bytes=1000))
    assert not dest.exists()
    out = extract_archive(archive, dest, keep_suffixes=KEEP, limits=ExtractLimits(max_files=12))
    assert len(out.files) == 12


def test_empty_zip_extracts_nothing(area):
    source, dest = area
    archive = make_zip(source / "empty.zip", {})
    out = extract_archive(archive, dest, keep_suffixes=KEEP)
    assert out.files == [] and out.skipped == []


@pytest.mark.filterwarnings("ignore:Duplicate name")  # zipfile's, while the test writes the name twice
def test_a_name_twice_keeps_the_later_member_and_says_so(area):
    """Members are extracted on several threads: the two members of one name must not write one file at once."""
    source, dest = area
    archive = source / "twice.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("set/a.png", png_bytes(color=(1, 2, 3)))
        bundle.writestr("set/b.png", png_bytes())
        bundle.writestr("set/a.png", png_bytes(color=(250, 250, 250)))
    out = extract_archive(archive, dest, keep_suffixes=KEEP)
    assert files_under(dest) == {"set/a.png", "set/b.png"}
    assert (dest / "set" / "a.png").read_bytes() == png_bytes(color=(250, 250, 250))
    assert out.skipped == [("set/a.png", "duplicate name in archive")]
    assert [p.name for p in out.files] == ["a.png", "b.png"]


def test_not_an_archive_and_a_truncated_archive_are_clear_errors(area):
    source, dest = area
    text = source / "d.zip"
    text.write_text("this is not a zip")
    with pytest.raises(DatasetError, match="not a zip or tar"):
        extract_archive(text, dest, keep_suffixes=KEEP)
    whole = make_zip(source / "whole.zip", {f"{i}.png": png_bytes() for i in range(5)})
    cut = source / "cut.zip"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(DatasetError, match=r"cut\.zip: not a readable zip"):
        extract_archive(cut, dest, keep_suffixes=KEEP)
    tgz = source / "cut.tar.gz"
    with tarfile.open(tgz, "w:gz") as bundle:
        for i in range(5):
            add_tar_file(bundle, f"{i}.png", png_bytes((64, 64), (i, i, i)))
    tgz.write_bytes(tgz.read_bytes()[: tgz.stat().st_size // 2])
    with pytest.raises(DatasetError, match="not a readable tar"):
        extract_archive(tgz, dest, keep_suffixes=KEEP)
    assert not dest.exists()


def test_a_member_larger_than_its_header_says_is_stopped(area):
    """A zip whose central directory understates a member's size: extraction stops at the declared size."""
    source, dest = area
    archive = make_zip(source / "liar.zip", {"a.png": bytes(5000)}, compression=zipfile.ZIP_STORED)
    data = bytearray(archive.read_bytes())
    # Patch the uncompressed size in the central directory entry (offset 24 in the record) to 100 bytes.
    central = data.rfind(b"PK\x01\x02")
    data[central + 24: central + 28] = (100).to_bytes(4, "little")
    archive.write_bytes(bytes(data))
    out = extract_archive(archive, dest, keep_suffixes=KEEP)
    assert all(p.stat().st_size <= 100 for p in out.files)
    assert not out.files or out.skipped == []
    assert out.files or out.skipped[0][1].startswith("unreadable in archive")


def test_a_plain_tar_cut_between_members_is_an_error(area):
    """tarfile alone would end quietly at the cut; the missing end-of-archive marker gives it away."""
    source, dest = area
    archive = source / "cut.tar"
    with tarfile.open(archive, "w") as bundle:
        for i in range(3):
            add_tar_file(bundle, f"{i}.png", png_bytes())
    first_member_end = 512 + ((len(png_bytes()) + 511) // 512) * 512
    archive.write_bytes(archive.read_bytes()[:first_member_end])
    with pytest.raises(DatasetError, match="not a readable tar"):
        extract_archive(archive, dest, keep_suffixes=KEEP)
