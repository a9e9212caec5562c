"""An input image for a render: the first frame of an image-to-video clip (and, next, an edit model's reference).

A face or a job gives it as an upload on this machine (a `Path`), an http(s) or s3 URL (fetched under the address
policy, as dataset downloads are), or base64 / a `data:image/...;base64,` URI. Whatever the form, it is bounded
(bytes, then pixels read from the header before decoding), decoded whole by Pillow, turned upright (EXIF) and RGB,
and saved as a PNG inside the job's folder; anything else is an `InputImageError` naming the field. A text that is
none of these forms (a path on the server, say) is refused: the API never reads this machine's files.

`clip_first_frame` gives the image SimpleTuner's own I2V validation starts from when it takes its inputs from the
datasets (`validation_using_datasets`: frame 0 of a training clip, `_coerce_validation_image_input`).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from pathlib import Path

from core.cancel import Cancel
from core.dataset.clips import DEMUXERS
from core.errors import ErrorCode, JobError
from core.settings import Settings
from core.spec import InputImageLimits

LIMITS = InputImageLimits()
MAX_INPUT_IMAGE_BYTES = LIMITS.max_bytes
MAX_INPUT_IMAGE_PIXELS = LIMITS.max_pixels
MAX_INPUT_IMAGE_TEXT = LIMITS.max_text
INPUT_IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")
INPUT_IMAGE_FILE = "input_image.png"
DATA_URI = re.compile(r"^data:image/[a-z0-9.+-]+;base64,", re.IGNORECASE)
URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


class InputImageError(JobError):
    """An input image that cannot be used: too large, not an image, or a form the field does not take."""

    code = ErrorCode.INVALID_INPUT
    stage = "validate"


def input_image_file(source: str | Path, folder: Path, *, settings: Settings, field: str = "input_image",
                     name: str = INPUT_IMAGE_FILE, cancel: Cancel | None = None) -> Path:
    """`source` checked and saved as `folder/name` (an RGB PNG); raises InputImageError (or the download's error)
    naming `field`. A `Path` is an upload on this machine; a text is a URL, a data: URI or base64."""
    if isinstance(source, Path):
        data = _read_upload(source, field=field)
    else:
        data = _fetched(source.strip(), folder, settings=settings, field=field, cancel=cancel)
    return save_image(decode_image(data, field=field), folder / name)


def _read_upload(path: Path, *, field: str) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_INPUT_IMAGE_BYTES:
            raise InputImageError(f"{path.name} is {size / 2**20:.1f} MB, over the {_mb(MAX_INPUT_IMAGE_BYTES)} "
                                  "limit", field=field)
        return path.read_bytes()
    except OSError as exc:
        raise InputImageError(f"cannot read the uploaded image: {exc.strerror or exc}", field=field) from None


def _fetched(text: str, folder: Path, *, settings: Settings, field: str, cancel: Cancel | None) -> bytes:
    if not text:
        raise InputImageError("is empty", field=field)
    if URL.match(text):
        from core.adapters import download

        path = download(text, folder / "download", settings=settings, max_bytes=MAX_INPUT_IMAGE_BYTES, field=field,
                        cancel=cancel)
        try:
            return path.read_bytes()
        finally:
            path.unlink(missing_ok=True)
    encoded = DATA_URI.sub("", text, count=1)
    if len(encoded) > MAX_INPUT_IMAGE_TEXT:
        raise InputImageError(f"is over the {_mb(MAX_INPUT_IMAGE_BYTES)} limit", field=field)
    try:
        data = base64.b64decode("".join(encoded.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InputImageError("must be an http(s) or s3:// URL of an image, a data:image/...;base64, URI or base64 "
                              "of the image's bytes", field=field) from None
    if len(data) > MAX_INPUT_IMAGE_BYTES:
        raise InputImageError(f"is {len(data) / 2**20:.1f} MB, over the {_mb(MAX_INPUT_IMAGE_BYTES)} limit",
                              field=field)
    return data


def decode_image(data: bytes, *, field: str = "input_image"):
    """The bytes as an upright RGB Pillow image, decoded whole; InputImageError naming `field` otherwise."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    formats = "/".join(INPUT_IMAGE_FORMATS)
    try:
        with Image.open(io.BytesIO(data), formats=INPUT_IMAGE_FORMATS) as image:
            width, height = image.size
            if width * height > MAX_INPUT_IMAGE_PIXELS:
                raise InputImageError(f"is {width}x{height}, over the {MAX_INPUT_IMAGE_PIXELS / 1e6:.1f} megapixel "
                                      "limit", field=field)
            image.load()
            return ImageOps.exif_transpose(image).convert("RGB")
    except UnidentifiedImageError:
        raise InputImageError(f"is not an image ({formats})", field=field) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InputImageError(f"does not decode as an image: {exc}"[:300], field=field) from None


def save_image(image, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(target, format="PNG")
    return target


def clip_first_frame(clip: Path, target: Path) -> Path:
    """A staged clip's first frame saved as a PNG at `target`. The clip is opened with the demuxer its suffix names,
    never one guessed from its content (staging's rule), and at most 64 packets are read."""
    import av  # PyAV: loaded only when there are clips

    with av.open(str(clip), format=DEMUXERS[clip.suffix.lower()]) as container:
        stream = container.streams.video[0]
        for index, packet in enumerate(container.demux(stream)):
            for frame in packet.decode():
                return save_image(frame.to_image().convert("RGB"), target)
            if index >= 64:
                break
    raise ValueError(f"no frame decoded from {clip.name}")


def _mb(size: int) -> str:
    return f"{size // 2**20} MB"
