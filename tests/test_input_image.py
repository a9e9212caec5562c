"""An input image (core/dataset/input_image.py): every form a face or a job gives it in, its bounds, its refusals
(each naming the field), and a clip's first frame; the families table that says which models take one."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

from core.dataset import InputImageError, clip_first_frame, input_image_file
from core.errors import AddressRefused
from core.settings import Settings
from core.simpletuner import takes_input_image
from tests.support.clips import write_clip
from tests.support.http_server import serve_files

OPEN = Settings.from_env({"ALLOW_PRIVATE_URLS": "1"})
CLOSED = Settings.from_env({})


def png(size: tuple[int, int] = (48, 32), colour: tuple[int, int, int] = (200, 30, 30), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def saved(path: Path) -> tuple[str, tuple[int, int], tuple[int, int, int]]:
    with Image.open(path) as image:
        return image.format or "", image.size, image.getpixel((0, 0))


def test_base64_a_data_uri_and_an_upload_become_the_same_rgb_png(tmp_path: Path):
    data = png(mode="RGBA", colour=(200, 30, 30))  # an alpha channel is dropped: the pipelines take RGB
    forms = {"b64": base64.b64encode(data).decode(), "uri": "data:image/png;base64," + base64.b64encode(data).decode(),
             "upload": tmp_path / "upload.png"}
    Path(forms["upload"]).write_bytes(data)
    for name, source in forms.items():
        path = input_image_file(source, tmp_path / "out", settings=CLOSED, name=f"{name}.png")
        assert path.parent == tmp_path / "out"
        assert saved(path) == ("PNG", (48, 32), (200, 30, 30)), name


def test_a_url_is_fetched_under_the_address_policy(tmp_path: Path):
    served = tmp_path / "served"
    served.mkdir()
    (served / "first.jpg").write_bytes(png())
    with serve_files(served) as server:
        path = input_image_file(server.url("first.jpg"), tmp_path / "job", settings=OPEN)
        with pytest.raises(AddressRefused) as refused:  # loopback is open only with the tests' switch
            input_image_file(server.url("first.jpg"), tmp_path / "job2", settings=CLOSED)
    assert saved(path)[:2] == ("PNG", (48, 32))
    assert refused.value.field == "input_image"
    assert not (tmp_path / "job" / "download" / "first.jpg").exists()  # the download is not kept beside the PNG


@pytest.mark.parametrize(("source", "says"), [
    ("/etc/passwd", "must be an http(s) or s3:// URL"),  # a path on the server is never read
    ("file:///etc/passwd", "not allowed"),
    (base64.b64encode(b"GIF89a not really").decode(), "is not an image"),
    ("", "is empty"),
])
def test_what_is_not_an_image_is_refused_naming_the_field(tmp_path: Path, source: str, says: str):
    with pytest.raises((InputImageError, AddressRefused)) as caught:
        input_image_file(source, tmp_path, settings=OPEN, field="samples.input_image")
    assert caught.value.field == "samples.input_image"
    assert says in caught.value.message
    assert list(tmp_path.iterdir()) in ([], [tmp_path / "download"])


def test_the_bounds_are_checked_before_decoding(tmp_path: Path):
    huge = png(size=(4097, 4096))  # a few KB of PNG, 16.8 megapixels once decoded
    with pytest.raises(InputImageError) as pixels:
        input_image_file(base64.b64encode(huge).decode(), tmp_path, settings=CLOSED)
    assert "4097x4096" in pixels.value.message and pixels.value.field == "input_image"
    big = tmp_path / "big.png"
    big.write_bytes(png() + b"\0" * (20 * 1024**2))
    with pytest.raises(InputImageError) as size:
        input_image_file(big, tmp_path / "out", settings=CLOSED)
    assert "over the 20 MB limit" in size.value.message
    with pytest.raises(InputImageError) as text:
        input_image_file("A" * (28 * 1024**2), tmp_path / "out", settings=CLOSED)
    assert "over the 20 MB limit" in text.value.message


def test_a_clips_first_frame_is_saved_as_a_png(tmp_path: Path):
    clip = write_clip(tmp_path / "walk.mp4", frames=9, size=64)
    path = clip_first_frame(clip, tmp_path / "first.png")
    with Image.open(path) as image:
        assert image.size == (64, 64)
        pixels = image.convert("L").load()
        # write_clip draws frame 0's white bar at columns 0-7 on black
        assert pixels[3, 30] > 200 and pixels[40, 30] < 50


@pytest.mark.parametrize(("family", "flavour", "takes"), [
    ("wan", "i2v-14b-2.1", True), ("wan", "i2v-14b-2.2-low", True), ("wan", "ti2v-5b-2.2", True),
    ("wan", "flf2v-14b-2.1", True), ("wan", "t2v-480p-1.3b-2.1", False), ("flux", "dev", False),
    ("sdxl", None, False),
])
def test_the_families_table_says_which_flavours_take_an_input_image(family: str, flavour: str | None, takes: bool):
    assert takes_input_image(family, flavour) is takes


def test_a_model_index_says_it_too(tmp_path: Path):
    index = tmp_path / "model_index.json"
    for content, takes in (('{"_class_name": "WanImageToVideoPipeline"}', True),
                           ('{"_class_name": "WanPipeline", "expand_timesteps": true}', True),
                           ('{"_class_name": "WanPipeline", "expand_timesteps": false}', False), ("not json", False)):
        index.write_text(content)
        assert takes_input_image("wan", None, model_index=index) is takes, content
