"""A model's size from its weights' own headers: parameters and bytes per component, without loading a tensor.

A safetensors file starts with an 8-byte little-endian length and a JSON header naming each tensor's dtype and
shape, so the parameter count of a 24 GB transformer is read in a few kilobytes. A diffusers folder has one
subfolder per component (`transformer/`, `unet/`, `text_encoder/`, `vae/`, ...), each with one or more
`.safetensors` files; a single-file model is one component, `model`.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
               "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1}
MAX_HEADER_BYTES = 100 * 1024 * 1024
"""safetensors' own limit on a header: a larger length is a damaged or foreign file."""
SINGLE_FILE = "model"
"""The component name of a model that is one .safetensors file."""


class SizeError(ValueError):
    """A weights file whose header cannot be read (damaged, truncated, not safetensors)."""


@dataclass(frozen=True)
class ComponentSize:
    params: int
    """Parameters (tensor elements) in the component's weights."""
    stored_bytes: int
    """Bytes of those tensors at the dtype they are stored in."""

    @property
    def billions(self) -> float:
        return self.params / 1e9


def header_size(path: Path) -> ComponentSize:
    """Parameters and stored bytes of one .safetensors file, from its header only."""
    try:
        with Path(path).open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) != 8:
                raise SizeError(f"{path}: too short to be a safetensors file")
            (length,) = struct.unpack("<Q", prefix)
            if not 2 <= length <= MAX_HEADER_BYTES:
                raise SizeError(f"{path}: not a safetensors file (header length {length})")
            header = json.loads(handle.read(length))
    except (OSError, ValueError, UnicodeDecodeError) as error:
        if isinstance(error, SizeError):
            raise
        raise SizeError(f"{path}: the safetensors header cannot be read ({error})") from error
    params = stored = 0
    for name, tensor in header.items():
        if name == "__metadata__":
            continue
        try:
            count = math.prod(int(n) for n in tensor["shape"])
            stored += count * DTYPE_BYTES[tensor["dtype"]]
        except (KeyError, TypeError, ValueError) as error:
            raise SizeError(f"{path}: tensor {name!r} has no readable dtype and shape") from error
        params += count
    return ComponentSize(params=params, stored_bytes=stored)


def _weights(folder: Path) -> list[Path]:
    """The component's .safetensors files; a variant (`.fp16.`) only when there is no plain file."""
    files = sorted(folder.glob("*.safetensors"))
    plain = [f for f in files if f.name.count(".") == 1]
    if plain or not files:
        return plain
    variant = files[0].name.split(".")[1].split("-")[0]  # "fp16" of model.fp16.safetensors or model.fp16-00001-of-...
    return [f for f in files if f.name.split(".")[1].split("-")[0] == variant]


def model_sizes(model: Path) -> dict[str, ComponentSize]:
    """component -> its size, for a local diffusers folder (one entry per subfolder holding .safetensors files)
    or a single .safetensors file (`model`). Empty when there are no safetensors weights (a .bin-only model)."""
    model = Path(model)
    if model.is_file():
        return {SINGLE_FILE: header_size(model)}
    sizes: dict[str, ComponentSize] = {}
    for folder in sorted(p for p in model.iterdir() if p.is_dir()) if model.is_dir() else []:
        files = _weights(folder)
        if files:
            parts = [header_size(f) for f in files]
            sizes[folder.name] = ComponentSize(params=sum(p.params for p in parts),
                                               stored_bytes=sum(p.stored_bytes for p in parts))
    return sizes
