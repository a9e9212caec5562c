"""Tiny synthetic video clips (PyAV, the app env's), and files that only look like clips."""

from __future__ import annotations

import zipfile
from pathlib import Path

import av
import numpy as np


def write_clip(path: Path, *, frames: int, size: int = 64, codec: str = "libx264", fps: int = 8,
               caption: str | None = None, faststart: bool = False) -> Path:
    """A clip of a white bar moving across black; `caption`: its .txt beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        for index in range(frames):
            image = np.zeros((size, size, 3), np.uint8)
            image[:, (index * 6) % size:(index * 6) % size + 8] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    if caption is not None:
        path.with_suffix(".txt").write_text(caption)
    return path


def write_audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        for _ in range(8):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 8000
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_hostile_clips(folder: Path) -> dict[str, str]:
    """One file per way a clip cannot train -> the skip reason staging gives it."""
    folder.mkdir(parents=True, exist_ok=True)
    whole = write_clip(folder / "whole.mp4", frames=120, faststart=True).read_bytes()
    (folder / "whole.mp4").unlink()
    (folder / "cut_short.mp4").write_bytes(whole[: len(whole) // 2])
    write_clip(folder / "one_frame.mp4", frames=1)
    (folder / "zero.mp4").write_bytes(b"")
    with zipfile.ZipFile(folder / "archive.mp4", "w") as bundle:
        bundle.writestr("a.png", b"not really")
    write_audio_only(folder / "sound.mp4")
    with (folder / "huge.mkv").open("wb") as handle:
        handle.truncate(5 * 1024**3)  # sparse: 5 GB declared, nothing on disk
    (folder / "noise.webm").write_bytes(bytes(range(256)) * 20)
    return {"cut_short.mp4": "truncated video", "one_frame.mp4": "one frame", "zero.mp4": "empty file",
            "archive.mp4": "not a video", "sound.mp4": "audio only", "huge.mkv": "video bomb",
            "noise.webm": "not a decodable video"}
