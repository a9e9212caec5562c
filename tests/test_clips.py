"""A clip probed without decoding it whole: its facts from real tiny clips (PyAV writes them), and each way a file
under a clip's name cannot train refused with its reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.dataset.clips import CLIP_SUFFIXES, ClipRefused, probe_clip
from core.spec import ClipLimits
from tests.support.clips import write_clip, write_hostile_clips


@pytest.mark.parametrize(("name", "codec", "container"), [
    ("a.mp4", "libx264", "mov"), ("a.mov", "libx264", "mov"), ("a.webm", "libvpx-vp9", "matroska"),
    ("a.mkv", "mpeg4", "matroska"),
])
def test_a_clip_is_described_from_its_container(tmp_path: Path, name: str, codec: str, container: str):
    probe = probe_clip(write_clip(tmp_path / name, frames=13, size=48, codec=codec, fps=8))
    assert (probe.width, probe.height, probe.frames, probe.fps) == (48, 48, 13, 8.0)
    assert probe.container == container
    assert probe.duration_s == pytest.approx(13 / 8, abs=0.2)
    assert probe.size_bytes == (tmp_path / name).stat().st_size


def test_the_suffixes_are_the_containers_a_dataset_may_hold():
    assert {".mp4", ".webm", ".mov", ".mkv"} <= CLIP_SUFFIXES


def test_every_hostile_file_is_refused_with_its_reason(tmp_path: Path):
    expected = write_hostile_clips(tmp_path)
    for name, reason in expected.items():
        with pytest.raises(ClipRefused) as refused:
            probe_clip(tmp_path / name)
        assert refused.value.reason == reason, (name, refused.value.detail)
        assert refused.value.detail and str(tmp_path) not in refused.value.detail


def test_a_clip_cut_short_says_how_many_frames_it_still_has(tmp_path: Path):
    write_hostile_clips(tmp_path)
    with pytest.raises(ClipRefused, match="truncated") as refused:
        probe_clip(tmp_path / "cut_short.mp4")
    assert "of the 120 frames" in refused.value.detail


def test_a_playlist_under_a_clip_name_is_not_followed(tmp_path: Path):
    """The demuxer comes from the suffix: an HLS playlist would open the URLs it lists."""
    playlist = tmp_path / "list.mp4"
    playlist.write_text("#EXTM3U\n#EXTINF:1,\nhttp://127.0.0.1:9/segment.ts\n")
    with pytest.raises(ClipRefused, match="not a decodable video"):
        probe_clip(playlist)


@pytest.mark.parametrize(("limits", "words"), [
    (ClipLimits(max_frame_pixels=32 * 32), "pixels"),
    (ClipLimits(max_frames=10), "frames"),
    (ClipLimits(max_seconds=1.0), "s is over"),
    (ClipLimits(max_decoded_pixels=64 * 64 * 10), "decode to over"),
    (ClipLimits(max_bytes=100), "bytes"),
])
def test_each_bound_makes_a_video_bomb(tmp_path: Path, limits: ClipLimits, words: str):
    clip = write_clip(tmp_path / "a.mp4", frames=17)
    with pytest.raises(ClipRefused) as refused:
        probe_clip(clip, limits=limits)
    assert refused.value.reason == "video bomb" and words in refused.value.detail


def test_a_long_clip_is_counted_without_decoding_it(tmp_path: Path):
    """The frame count of a WebM (which declares none) comes from its packets, read without decoding them."""
    probe = probe_clip(write_clip(tmp_path / "long.webm", frames=400, codec="libvpx-vp9"))
    assert probe.frames == 400
