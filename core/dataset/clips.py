"""Video clips of a dataset: what one clip is (container, codec, size, fps, frames, duration), without decoding it.

`probe_clip(path, limits=...)` reads the container's metadata with PyAV (FFmpeg's libraries, in-process), walks the
video stream's packets without decoding them (their count is the true frame count, which WebM and Matroska do not
declare, and a file cut short has fewer than its header says), and decodes the first frame only, to prove the codec
reads it. A clip that cannot train raises ClipRefused with a short reason and the detail. Why PyAV and not ffprobe or
the trainer env: docs/video.md.

The demuxer is chosen by the file's suffix, never guessed from its content: a guessed one could be HLS or FFmpeg's
concat list, which open other files or URLs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from core.spec import ClipLimits

if TYPE_CHECKING:
    from av.container import InputContainer
    from av.video.stream import VideoStream

# The clip containers a dataset may hold, with the FFmpeg demuxer each is read with.
DEMUXERS = {".mp4": "mov", ".mov": "mov", ".m4v": "mov", ".webm": "matroska", ".mkv": "matroska"}
CLIP_SUFFIXES = frozenset(DEMUXERS)
MIN_CLIP_FRAMES = 2
"""Fewer is a still: staged as an image it would train; as a clip it is skipped."""
_ZIP = (b"PK\x03\x04", b"PK\x05\x06")


class Unusable(Exception):
    """A dataset file staging cannot use (an image or a clip): a short reason and the detail, one Skipped entry."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


class ClipRefused(Unusable):
    """A clip that cannot train."""


@dataclass(frozen=True)
class ClipProbe:
    container: str
    codec: str
    width: int
    height: int
    fps: float
    frames: int
    duration_s: float
    size_bytes: int


def probe_clip(path: Path, *, limits: ClipLimits = ClipLimits()) -> ClipProbe:
    """The clip's facts, or ClipRefused saying why it cannot train: empty, a video bomb (file size, duration, frames
    or decoded pixels over `limits`), an archive or audio under a video name, undecodable, cut short, one frame."""
    size = path.stat().st_size
    if size == 0:
        raise ClipRefused("empty file", "0 bytes")
    if size > limits.max_bytes:
        raise ClipRefused("video bomb", f"{size} bytes is over the {limits.max_bytes}-byte limit for one clip")
    with path.open("rb") as handle:
        head = handle.read(4)
    if head in _ZIP:
        raise ClipRefused("not a video", "a zip archive under a video file name")
    import av  # PyAV: imported on first use, so staging images never loads FFmpeg's libraries

    demuxer = DEMUXERS.get(path.suffix.lower())
    if demuxer is None:
        raise ClipRefused("not a video", f"{path.suffix} is not one of {', '.join(sorted(DEMUXERS))}")
    try:
        with av.open(str(path), format=demuxer) as container:
            return _read(container, size=size, limits=limits)
    except ClipRefused:
        raise
    except (av.FFmpegError, OSError, ValueError, EOFError, UnicodeDecodeError) as exc:
        raise ClipRefused("not a decodable video", _short(exc)) from None


def _read(container: InputContainer, *, size: int, limits: ClipLimits) -> ClipProbe:
    video = container.streams.video
    if not video:
        if container.streams.audio:
            raise ClipRefused("audio only", "the file has sound but no video stream")
        raise ClipRefused("not a video", "no video stream")
    stream = video[0]
    codec = stream.codec_context.name or "unknown"
    width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
    if width <= 0 or height <= 0:
        raise ClipRefused("not a decodable video", f"{codec} stream without a frame size")
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    duration = _duration(container, stream)
    declared = int(stream.frames or 0) or (round(duration * fps) if duration and fps else 0)
    _bounds(width=width, height=height, frames=declared, duration=duration, limits=limits)
    frames = _count_packets(container, stream, limit=limits.max_frames)
    _bounds(width=width, height=height, frames=frames, duration=duration, limits=limits)
    if int(stream.frames or 0) > frames:
        raise ClipRefused("truncated video", f"{frames} of the {stream.frames} frames its header lists are in the file")
    if frames < MIN_CLIP_FRAMES:
        raise ClipRefused("one frame", f"{frames} frame: give a still as an image")
    _decode_first(container, stream, max_packets=limits.max_probe_packets)
    if not duration and fps:
        duration = frames / fps
    return ClipProbe(container=container.format.name, codec=codec, width=width, height=height, fps=round(fps, 3),
                     frames=frames, duration_s=round(duration, 3), size_bytes=size)


def _duration(container: InputContainer, stream: VideoStream) -> float:
    """Seconds: the stream's own duration, else the container's (Matroska keeps it there only)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000  # AV_TIME_BASE
    return 0.0


def _bounds(*, width: int, height: int, frames: int, duration: float, limits: ClipLimits) -> None:
    if width * height > limits.max_frame_pixels:
        raise ClipRefused("video bomb", f"{width}x{height} frames are over {limits.max_frame_pixels} pixels")
    if duration > limits.max_seconds:
        raise ClipRefused("video bomb", f"{duration:.0f} s is over the {limits.max_seconds:g} s limit for one clip")
    if frames > limits.max_frames:
        raise ClipRefused("video bomb", f"over {limits.max_frames} frames (the limit for one clip)")
    if width * height * frames > limits.max_decoded_pixels:
        raise ClipRefused("video bomb", f"{frames} frames of {width}x{height} decode to over "
                          f"{limits.max_decoded_pixels} pixels")


def _count_packets(container: InputContainer, stream: VideoStream, *, limit: int) -> int:
    """The video packets in the file (one per frame for every codec a clip has here), read without decoding; stops
    past `limit`. A packet whose data the file does not hold ends the count (a file cut short)."""
    import av

    count = 0
    try:
        for packet in container.demux(stream):
            if packet.size:
                count += 1
                if count > limit:
                    break
    except (av.FFmpegError, OSError, EOFError):
        pass  # the rest of the file is unreadable: the frames before it are what it has
    container.seek(0, stream=stream)
    return count


def _decode_first(container: InputContainer, stream: VideoStream, *, max_packets: int) -> None:
    import av

    try:
        for index, packet in enumerate(container.demux(stream)):
            if packet.size and packet.decode():
                return
            if index >= max_packets:
                break
        if stream.codec_context.decode(None):  # flush: a decoder holding frames back gives them now
            return
    except (av.FFmpegError, ValueError, EOFError) as exc:
        raise ClipRefused("not a decodable video", f"the first frame does not decode: {_short(exc)}") from None
    raise ClipRefused("not a decodable video", f"no frame decoded from the first {max_packets} packets")


def _short(exc: BaseException) -> str:
    """FFmpeg's own words without the file's path (staging's temporary folder means nothing to the user)."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "..."

