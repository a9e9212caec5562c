"""The UI under misuse, through gradio_client against the app launched in this process: a failed load keeps the
dataset and its edited captions, a signed URL's credentials never come back (not in the job's dataset, the exported
JSON, a message, or a file), and uploads have a size limit.

The app here may fetch from the tests' loopback file server (ALLOW_PRIVATE_URLS=1, as on a LAN) and takes uploads
of at most 1 MB (UI_MAX_UPLOAD_MB=1).
"""

from __future__ import annotations

import json
import os
import random
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from app.__main__ import launch_options, max_upload_bytes
from core.errors import SetupError
from core.settings import Settings
from tests.support.http_server import serve_files
from tests.support.ui_port import serve_ui
from tests.test_app_api import CONFIG_FIELDS, captions_of, write_images

SIGNATURE = "0f1e2d3c4b5a69788796a5b4c3d2e1f0SignedPart"
SESSION_TOKEN = "FwoGZXIvYXdzSessionToken0123456789"
PASSWORD = "pa55w0rd-in-the-url"
SECRETS = (SIGNATURE, SESSION_TOKEN, PASSWORD, "AKIAIOSFODNN7EXAMPLE")


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Iterator[Any]:
    data_root = tmp_path_factory.mktemp("app-data")
    settings = Settings.from_env({**os.environ, "DATA_DIR": str(data_root), "ALLOW_PRIVATE_URLS": "1"})
    inherited = {key: value for key, value in os.environ.items() if key not in ("UI_PASSWORD", "UI_AUTH")}
    ui, url = serve_ui(settings=settings, env={**inherited, "UI_MAX_UPLOAD_MB": "1"})
    yield ui, url
    ui.registry.shutdown()
    ui.blocks.close()


@pytest.fixture
def client(app, tmp_path: Path) -> Client:
    return Client(app[1], verbose=False, download_files=str(tmp_path / "downloads"))


def upload(client: Client, files: list[Path]) -> list[Any]:
    return client.predict([handle_file(f) for f in files], api_name="/upload_dataset")


def shown(client: Client) -> tuple[list[str], str]:
    """What a user sees of the dataset: the gallery's captions and the page info."""
    gallery, _, info = client.predict(1, api_name="/gallery_page")
    return captions_of(gallery), info


def signed_url(base: str, name: str) -> str:
    """A presigned-S3-style URL with a user:password too, on the loopback server at `base`."""
    query = (f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20250101%2Fus-east-1"
             f"&X-Amz-Signature={SIGNATURE}&X-Amz-Security-Token={SESSION_TOKEN}&token={SESSION_TOKEN}")
    return f"{base.replace('://', f'://alice:{PASSWORD}@')}/{name}?{query}"


def test_a_refused_url_or_a_bad_archive_leaves_the_dataset_and_its_edited_caption(client: Client, app,
                                                                                 tmp_path: Path):
    *_, source, _ = upload(client, write_images(tmp_path / "good", 3))
    client.predict("photo_01.png", "sks, edited before the bad load", 1, api_name="/save_caption")
    before = shown(client)
    assert before[0][1] == "sks, edited before the bad load" and "3 images" in before[1]
    source_file = app[0].store.root / "source.json"
    recorded = source_file.read_text()

    with pytest.raises(AppError, match=r"dataset\.url: .*169\.254\.169\.254.*cloud metadata"):
        client.predict("http://169.254.169.254/latest/dataset.zip", api_name="/load_dataset_url")
    assert shown(client) == before and source_file.read_text() == recorded

    slip = tmp_path / "slip.zip"
    with zipfile.ZipFile(slip, "w") as out:
        out.write(tmp_path / "good" / "photo_00.png", "photo_00.png")
        out.writestr("../../escaped.txt", "written outside")
    with pytest.raises(AppError, match=r"upload: slip\.zip: entry '\.\./\.\./escaped\.txt' points outside"):
        upload(client, [slip])
    assert shown(client) == before and source_file.read_text() == recorded
    assert json.loads(source) == json.loads(recorded)
    assert not list(app[0].store.settings.data_root.parent.rglob("escaped.txt"))


def test_a_signed_urls_credentials_never_come_back(client: Client, app, tmp_path: Path):
    served = tmp_path / "served"
    files = write_images(served / "src", 2)
    with zipfile.ZipFile(served / "dataset.zip", "w") as out:
        for file in files:
            out.write(file, file.name)
    outputs: list[Any] = []
    with serve_files(served) as server:
        loaded = client.predict(signed_url(server.base, "dataset.zip"), api_name="/load_dataset_url")
        assert server.requests[-1][:2] == ("GET", "dataset.zip")  # the full URL was used for the download
        for name in ("missing.zip", "src/photo_00.txt"):  # a 404; a file that is no image
            with pytest.raises(AppError) as raised:
                client.predict(signed_url(server.base, name), api_name="/load_dataset_url")
            outputs.append(str(raised.value))
    gallery, *_, source, status = loaded
    assert captions_of(gallery) == ["a photo number 0", "a photo number 1"]
    assert f"{server.base}/dataset.zip" in status and "credentials are not kept" in status
    assert json.loads(source) == {"path": str(app[0].store.images_dir)}  # the job trains from the staged copy
    assert "HTTP 404" in outputs[0] and "no usable image" in outputs[1]

    _, *config = client.predict("SDXL", api_name="/apply_preset")
    values = {**dict(zip(CONFIG_FIELDS, config, strict=True)), "dataset": source, "trigger_word": "sks",
              "repo_id": "", "private": True}
    exported, curl = client.predict(**values, api_name="/export_job")
    assert json.loads(exported)["input"]["dataset"] == {"path": str(app[0].store.images_dir)}

    outputs += [loaded, exported, curl, client.predict(1, api_name="/gallery_page")]
    written = [p.read_bytes().decode(errors="replace") for p in app[0].store.settings.data_root.rglob("*")
               if p.is_file() and p.suffix in (".json", ".txt", ".log")]
    for secret in SECRETS:
        assert secret not in json.dumps(outputs, default=str), secret
        assert not any(secret in text for text in written), secret


def noise_png(path: Path, *, side: int) -> Path:
    """A PNG that does not compress: about 3 * side**2 bytes."""
    pixels = random.Random(side).randbytes(side * side * 3)
    Image.frombytes("RGB", (side, side), pixels).save(path)
    return path


def test_an_oversized_upload_is_refused_with_a_clear_error(client: Client, app, tmp_path: Path):
    upload(client, write_images(tmp_path / "good", 2))
    before = shown(client)

    big = noise_png(tmp_path / "big.png", side=700)  # about 1.4 MB: one file over the limit
    response = requests.post(f"{app[1]}gradio_api/upload", files={"files": big.open("rb")}, timeout=30)
    assert response.status_code == 413 and "maximum allowed size of 1048576 bytes" in response.text
    assert client.config["max_file_size"] == 1024**2  # what the page's upload box checks before sending

    halves = [noise_png(tmp_path / f"half_{n}.png", side=450) for n in range(2)]  # 0.6 MB each, 1.2 MB together
    with pytest.raises(AppError, match=r"upload: the upload is 1\.2 MB, over the 1\.0 MB limit \(UI_MAX_UPLOAD_MB\)"):
        upload(client, halves)
    assert shown(client) == before


def test_the_upload_limit_setting_is_checked(tmp_path: Path):
    settings = Settings.from_env({"DATA_DIR": str(tmp_path / "data")})
    assert launch_options(settings=settings, env={})["max_file_size"] == 2048 * 1024**2
    assert max_upload_bytes({"UI_MAX_UPLOAD_MB": "0"}) is None and max_upload_bytes({"UI_MAX_UPLOAD_MB": " 5 "}) \
        == 5 * 1024**2
    with pytest.raises(SetupError, match="UI_MAX_UPLOAD_MB: must be a whole number of megabytes"):
        launch_options(settings=settings, env={"UI_MAX_UPLOAD_MB": "1.5GB"})
