"""A run's TensorBoard event files, written by the project from SimpleTuner's progress events.

Not by SimpleTuner: in 4.10.1 its `report_to tensorboard` stops the run as it starts ("Could not initialize
trackers"), since accelerate hands TensorBoard's add_hparams the whole config, which refuses its list and dict values.
So each training step's loss and learning rate (TrainingProgress) go to `runs/<project>/events.out.tfevents.*` in the
run's output, as TensorBoard reads them: TFRecord framing (length, masked CRC-32C) around Event protobufs, encoded
here (the app env has no TensorBoard). They are published with the outputs; the Hub shows them in its Metrics tab.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

from core.events import Event, TrainingProgress


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked(data: bytes) -> bytes:
    crc = crc32c(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def record(data: bytes) -> bytes:
    """One TFRecord: length, its masked CRC, the data, its masked CRC."""
    length = struct.pack("<Q", len(data))
    return length + _masked(length) + data + _masked(data)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def event(*, wall_time: float, step: int = 0, file_version: str | None = None,
          scalars: dict[str, float] | None = None) -> bytes:
    """A tensorflow.Event: wall_time (1, double), step (2, int64), file_version (3) or summary (5) of
    Summary.Value{tag (1), simple_value (2, float)}."""
    out = b"\x09" + struct.pack("<d", wall_time) + b"\x10" + _varint(step)
    if file_version is not None:
        out += _field(3, file_version.encode())
    if scalars:
        values = b"".join(_field(1, _field(1, tag.encode()) + b"\x15" + struct.pack("<f", value))
                          for tag, value in scalars.items())
        out += _field(5, values)
    return out


class TensorBoardLog:
    """The event file of one run in `folder`, opened at the first step; safe from the receiver's threads."""

    def __init__(self, folder: Path, *, clock: Callable[[], float] = time.time):
        self.folder, self._clock = folder, clock
        self._lock = threading.Lock()
        self.path: Path | None = None

    def on_event(self, item: Event) -> None:
        if isinstance(item, TrainingProgress):
            values = {"train/loss": item.loss, "train/learning_rate": item.learning_rate}
            self.scalars(item.step, {tag: value for tag, value in values.items() if value is not None})

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not values:
            return
        with self._lock:
            now = self._clock()
            if self.path is None:
                self.folder.mkdir(parents=True, exist_ok=True)
                self.path = self.folder / f"events.out.tfevents.{int(now)}.{socket.gethostname()}.{os.getpid()}.0"
                self.path.write_bytes(record(event(wall_time=now, file_version="brain.Event:2")))
            with self.path.open("ab") as handle:
                handle.write(record(event(wall_time=now, step=step, scalars=values)))
