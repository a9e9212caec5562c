"""The UI face through its API: gradio_client against the app launched in this process on a free port.

Each test is something a user does on a page, done through the endpoint that page calls: import/export, upload,
caption edits, a real training of the tiny model with progress and loss (the session's trained app, shared with
test_playground_tab.py), cancel, and a push to the local Hub server. Login, and the warning for a public interface
without one, are tested on the launch options.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from app.__main__ import auth_from_env, launch_options
from app.config_tab import PRESET_FIELDS
from app.job_form import FIELDS
from core.errors import SetupError
from core.generation.demo import write_demo_dataset
from core.settings import Settings
from core.spec.job import parse_job
from tests.conftest import tiny_job
from tests.support.http_server import serve_files
from tests.support.hub_server import running_hub_server
from tests.support.processes import processes_working_in
from tests.support.ui_port import serve_ui

TOKEN = "hf_AppPlantedToken0123456789abcdefXYZ"
CONFIG_FIELDS = PRESET_FIELDS  # what a preset sets, in the order /apply_preset returns them


def launch(data_root: Path, tiny_model: Path, **env: str):
    """The app on a free port with its own data folder, the tiny model already in it (a symlink: no rebuild)."""
    (data_root / "models").mkdir(parents=True, exist_ok=True)
    link = data_root / "models" / "tiny-sdxl"
    if not link.exists():
        link.symlink_to(tiny_model, target_is_directory=True)
    settings = Settings.from_env({**os.environ, **env, "DATA_DIR": str(data_root)})
    inherited = {key: value for key, value in os.environ.items() if key not in ("UI_PASSWORD", "UI_AUTH")}
    return serve_ui(settings=settings, env={**inherited, **env})


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_model: Path) -> Iterator[Any]:
    # ALLOW_PRIVATE_URLS: a dataset URL may name the tests' loopback server (the cancel test's trickling download).
    ui, url = launch(tmp_path_factory.mktemp("app-data"), tiny_model, ALLOW_PRIVATE_URLS="1")
    yield ui, url
    ui.registry.shutdown()
    ui.blocks.close()


@pytest.fixture
def client(app, tmp_path: Path) -> Client:
    return Client(app[1], verbose=False, download_files=str(tmp_path / "downloads"))


def wait_for(check: Callable[[], Any], *, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def form_values(client: Client, job: dict) -> dict[str, Any]:
    """The form as the page holds it after importing `job` (through the app's own import)."""
    *values, status = client.predict(job_text=json.dumps(job), job_file=None, api_name="/import_job")
    assert status.startswith("Imported")
    return dict(zip(FIELDS, values, strict=True))


def tiny_preset_form(client: Client, *, trigger: str = "") -> dict[str, Any]:
    """What a newcomer's page holds after choosing the Tiny demo preset and clicking "Load demo dataset"."""
    note, *config = client.predict("Tiny demo (CPU)", api_name="/apply_preset")
    assert "tiny" in note.lower()
    *_, source, _status, trigger_word = client.predict(trigger, api_name="/load_demo_dataset")
    return {**dict(zip(CONFIG_FIELDS, config, strict=True)), "dataset": source, "trigger_word": trigger_word,
            "repo_id": "", "private": True}


def write_images(folder: Path, count: int, *, captions: bool = True) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for index in range(count):
        image = folder / f"photo_{index:02d}.png"
        Image.new("RGB", (96, 96), (index * 8 % 256, 120, 200)).save(image)
        files.append(image)
        if captions:
            text = folder / f"photo_{index:02d}.txt"
            text.write_text(f"a photo number {index}")
            files.append(text)
    return files


def captions_of(gallery: list[dict]) -> list[str]:
    return [item["caption"] for item in gallery]


# -- config: import and export -----------------------------------------------------------------------------------


def test_export_then_import_then_export_is_exactly_the_workers_input(client: Client, tiny_model: Path,
                                                                    tmp_path: Path):
    job = tiny_job(tiny_model, tmp_path / "ds", config={"lr_scheduler": "cosine", "num_train_epochs": 3,
                                                        "validation_prompt": "sks a cat", "learning_rate": 3e-4},
                   hub={"repo_id": "tester/round-trip", "private": False, "tags": ["demo"]}, timeout_s=3600,
                   dataloader={"minimum_image_size": 64, "repeats": 2})
    worker_input = parse_job(job).to_job_json()

    values = form_values(client, worker_input)
    assert values["learning_rate"] == 3e-4 and values["lora_rank"] == 4 and values["schedule"] == "steps"
    assert values["repo_id"] == "tester/round-trip" and values["private"] is False
    assert json.loads(values["extra_flags"]) == {"lr_scheduler": "cosine", "num_train_epochs": 3}
    exported, curl = client.predict(**values, api_name="/export_job")
    assert json.loads(exported) == worker_input

    again, _ = client.predict(**form_values(client, json.loads(exported)), api_name="/export_job")
    assert again == exported
    assert "https://api.runpod.ai/v2/<ENDPOINT_ID>/run" in curl and "Authorization: Bearer $RUNPOD_API_KEY" in curl
    assert json.loads(curl.split("-d '", 1)[1].rsplit("'", 1)[0]) == worker_input


def test_the_seeds_shorthand_imports_and_exports_as_its_native_equivalent(client: Client):
    seed = {"input": {"dataset_url": "https://example.com/dataset.zip", "trigger_word": "sks",
                      "config": {"model_name": "black-forest-labs/FLUX.1-dev", "resolution": 1024,
                                 "learning_rate": 1e-5, "steps": 500}}}
    values = form_values(client, seed)
    assert values["base_model"] == "black-forest-labs/FLUX.1-dev" and values["model_family"] == "flux"
    assert values["length"] == 500 and json.loads(values["dataset"]) == {"url": "https://example.com/dataset.zip"}
    exported, _ = client.predict(**values, api_name="/export_job")
    assert json.loads(exported) == parse_job(seed).to_job_json()


def test_a_malformed_or_invalid_import_is_refused_with_the_field_named(client: Client):
    with pytest.raises(AppError, match="not valid JSON"):
        client.predict(job_text='{"input": {"config": ', job_file=None, api_name="/import_job")
    bad = {"dataset": {"path": "/data"}, "config": {"model_name": "x/sdxl-thing", "learning_rate": "fast"}}
    with pytest.raises(AppError, match=r"config\.learning_rate"):
        client.predict(job_text=json.dumps(bad), job_file=None, api_name="/import_job")


def test_an_import_from_a_file_wins_over_pasted_text(client: Client, tmp_path: Path):
    job = {"dataset_url": "https://example.com/d.zip", "config": {"model_name": "stabilityai/sdxl-base", "seed": 7}}
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"input": job}))
    *values, _ = client.predict(job_text="not json at all", job_file=handle_file(path), api_name="/import_job")
    assert dict(zip(FIELDS, values, strict=True))["seed"] == 7


def test_export_refuses_an_invalid_form_naming_each_field(client: Client):
    values = tiny_preset_form(client)
    values.update(learning_rate=-1, extra_flags='{"lr_schedular": "cosine"}')
    with pytest.raises(AppError) as raised:
        client.predict(**values, api_name="/export_job")
    assert "config.learning_rate" in str(raised.value) and "lr_scheduler" in str(raised.value)


@pytest.mark.parametrize("preset", ["FLUX.1-dev", "SDXL", "SD3.5", "Tiny demo (CPU)"])
def test_every_preset_exports_a_valid_job(client: Client, preset: str):
    _, *config = client.predict(preset, api_name="/apply_preset")
    values = {**dict(zip(CONFIG_FIELDS, config, strict=True)), "dataset": '{"url": "https://example.com/d.zip"}',
              "trigger_word": "sks", "repo_id": "", "private": True}
    exported, _ = client.predict(**values, api_name="/export_job")
    assert json.loads(exported)["input"]["config"]["pretrained_model_name_or_path"] == values["base_model"]


# -- dataset: upload, gallery, captions, check ---------------------------------------------------------------------


def test_uploaded_images_with_captions_make_the_gallery(client: Client, tmp_path: Path):
    files = write_images(tmp_path / "upload", 3)
    gallery, page, info, *_rest, source, status = client.predict([handle_file(f) for f in files],
                                                                 api_name="/upload_dataset")
    assert captions_of(gallery) == ["a photo number 0", "a photo number 1", "a photo number 2"]
    assert page == 1 and "3 images" in info and "Loaded 3 images" in status
    assert Path(json.loads(source)["path"]).is_dir()


def test_a_zip_upload_pages_through_thirty_images(client: Client, tmp_path: Path):
    files = write_images(tmp_path / "zipped", 30)
    archive = tmp_path / "dataset.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for file in files:
            out.write(file, f"set/{file.name}")
    gallery, _, info, *_ = client.predict([handle_file(archive)], api_name="/upload_dataset")
    assert len(gallery) == 24 and "Page 1 of 2 · 30 images" in info
    gallery, page, info = client.predict(2, api_name="/gallery_page")
    assert page == 2 and captions_of(gallery) == [f"a photo number {n}" for n in range(24, 30)]


def test_a_caption_edit_is_saved_to_disk_and_shown(client: Client, tmp_path: Path):
    files = write_images(tmp_path / "edit", 2)
    *_, source, _ = client.predict([handle_file(f) for f in files], api_name="/upload_dataset")
    images = Path(json.loads(source)["path"])
    gallery, *_, status = client.predict("photo_01.png", "  a photo of sks, edited  ", 1, api_name="/save_caption")
    assert (images / "photo_01.txt").read_text() == "a photo of sks, edited\n"
    assert captions_of(gallery)[1] == "a photo of sks, edited" and "photo_01.png" in status
    gallery, *_ = client.predict(1, api_name="/gallery_page")
    assert captions_of(gallery)[1] == "a photo of sks, edited"
    with pytest.raises(AppError, match="not an image of the current dataset"):
        client.predict("../../secret.txt", "x", 1, api_name="/save_caption")


def test_check_dataset_shows_the_preflight_report(client: Client):
    values = tiny_preset_form(client, trigger="sks")
    report = client.predict(**values, api_name="/check_dataset")
    assert "ready to train" in report and "**8** usable images of 8 found" in report
    assert "trigger word **sks**" in report and "10 steps" in report


# -- training, cancel, publish (really trains the tiny model) -----------------------------------------------------


@pytest.mark.training
def test_a_training_from_the_app_runs_refuses_a_second_and_publishes(trained_app, tmp_path: Path):
    """The session's trained app (tests/conftest.py's trained_app): its one training was started from the Train tab,
    a second start was refused while it ran, and its run is pushed to the local Hub here."""
    client = Client(trained_app.url, verbose=False, download_files=str(tmp_path / "downloads"))
    outputs: list[Any] = [trained_app.started]
    assert trained_app.second_start is not None and re.search("a training is already running",
                                                               trained_app.second_start)

    status = trained_app.status
    assert status["status"] == "succeeded", status.get("error")
    assert [p["step"] for p in status["losses"]] == list(range(1, 11))
    assert status["step"] == status["total_steps"] == 10 and status["percent"] == 100
    assert status["validation"] and all(Path(v["file"]).is_file() for v in status["validation"])
    bar, plot, log, *_ = client.predict(api_name="/poll")
    assert 'aria-valuenow="100"' in bar and "step 10/10" in bar and "Finished" in bar
    assert plot["columns"] == ["step", "loss", "series"]  # the training loss; no held-out images, no evaluation
    assert [(row[0], row[2]) for row in plot["data"]] == [(step, "training") for step in range(1, 11)]
    assert "step 10/10" in log
    outputs += [status, bar, log]

    with running_hub_server(tmp_path, token=TOKEN) as hub:
        pushed = client.predict("tester/tiny-lora", True, TOKEN, "last", api_name="/push_to_hub")
        latest, download = client.predict(api_name="/latest_lora")
        outputs += [pushed, latest, client.predict(api_name="/run_status")]
    assert f"[tester/tiny-lora]({hub.endpoint}/tester/tiny-lora) (private)" in pushed
    repo = hub.repos["tester/tiny-lora"]
    assert repo.private and "pytorch_lora_weights.safetensors" in repo.files
    assert "sks" in repo.files["README.md"].decode()
    assert download["interactive"] is True  # the Download button is enabled, with the file the Hub got
    assert Path(download["value"]).read_bytes() == repo.files["pytorch_lora_weights.safetensors"]
    assert "tester/tiny-lora" in latest
    assert TOKEN not in json.dumps(outputs, default=str)
    assert all(TOKEN.encode() not in data for data in repo.files.values())


def test_cancel_really_stops_the_run(client: Client, tmp_path: Path):
    """The Train tab's Cancel reaches the run: here one whose dataset trickles from a loopback server (2 kB/s), so
    no training is needed to have a run to stop (test_trainer.py cancels a real training in core)."""
    served = tmp_path / "served"
    served.mkdir()
    shutil.make_archive(str(served / "slow"), "zip", write_demo_dataset(tmp_path / "demo", count=6))
    with serve_files(served) as server:
        server.trickle["slow.zip"] = 2000
        form = {**tiny_preset_form(client), "dataset": json.dumps({"url": server.url("slow.zip")})}
        client.predict(**form, api_name="/start_training")
        status = wait_for(lambda: any(name == "slow.zip" for _, name, _ in server.requests)
                          and (s := client.predict(api_name="/run_status"))["status"] == "running" and s,
                          timeout_s=60, what="the dataset download")
        job_dir = status["job_dir"]
        # While it runs, the Playground leaves the GPU to it.
        with pytest.raises(AppError, match="a training is running"):
            client.predict("sks a red circle", "", 3, 2, 5.0, 1.0, "final LoRA", False,
                           api_name="/playground_generate")
        # Still downloading: SimpleTuner takes "checkpoint now" only once its steps run.
        assert client.predict(api_name="/checkpoint_now").startswith("Not asked: SimpleTuner is not training now")
        assert client.predict(api_name="/cancel_training") == "Cancelling…"
        asked = time.monotonic()
        status = wait_for(lambda: (s := client.predict(api_name="/run_status"))["status"] != "running" and s,
                          timeout_s=60, what="the cancel")
        stopped_after = time.monotonic() - asked
    assert status["status"] == "cancelled" and status["error"]["code"] == "cancelled"
    assert status["error"]["stage"] == "dataset"  # stopped mid-download, not after it
    assert stopped_after < 5, stopped_after
    assert processes_working_in(job_dir) == []
    assert client.predict(api_name="/cancel_training") == "No training is running."
    assert client.predict(api_name="/samples_now") == "Not asked: no training is running."


# -- access --------------------------------------------------------------------------------------------------------


def test_a_wrong_password_is_refused(tmp_path: Path, tiny_model: Path):
    ui, url = launch(tmp_path / "data", tiny_model, UI_PASSWORD="correct horse")
    try:
        with pytest.raises(ValueError, match="Could not login"):
            Client(url, auth=("anyone", "wrong"), verbose=False)
        assert requests.post(f"{url}login", data={"username": "me", "password": "wrong"}, timeout=10).status_code \
            == 400
        assert requests.get(f"{url}config", timeout=10).status_code == 401
        client = Client(url, auth=("anyone", "correct horse"), verbose=False, download_files=False)
        assert "/start_training" in client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    finally:
        ui.blocks.close()


def test_ui_auth_pairs_check_user_and_password():
    check = auth_from_env({"UI_AUTH": "ann:pw1, bob:p:w2"})
    assert check("ann", "pw1") and check("bob", "p:w2")
    assert not check("ann", "pw2") and not check("eve", "pw1") and not check("eve", "")
    with pytest.raises(SetupError, match="entry 2"):
        auth_from_env({"UI_AUTH": "ann:pw1,bob"})
    assert auth_from_env({}) is None


def test_a_public_interface_without_a_password_logs_a_warning(tmp_path: Path, caplog):
    settings = Settings.from_env({"DATA_DIR": str(tmp_path / "data")})
    with caplog.at_level(logging.WARNING, logger="app"):
        options = launch_options(settings=settings, env={"GRADIO_SERVER_NAME": "0.0.0.0"})
    assert options["auth"] is None and "without a password" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="app"):
        options = launch_options(settings=settings, env={"GRADIO_SERVER_NAME": "0.0.0.0", "UI_PASSWORD": "pw"})
    assert options["auth"] is not None and caplog.text == ""
    assert options["allowed_paths"] == [str(settings.data_root)] and options["server_port"] == 7860


def test_check_lists_the_doctors_findings_and_removes_the_flagged_images(client: Client, tmp_path: Path):
    """A dataset with a near-duplicate, a tiny and a blurry image: the check names them under the goal's plan, and
    'Remove flagged images' takes them out of the curated dataset."""
    from tests.test_doctor import sick_dataset

    form = tiny_preset_form(client, trigger="sks")  # then the user's own dataset replaces the demo
    folder = sick_dataset(tmp_path / "sick")
    *_, source, _ = client.predict([handle_file(f) for f in sorted(folder.iterdir())], api_name="/upload_dataset")
    values = {**form, "dataset": source, "goal": "likeness"}
    report = client.predict(**values, api_name="/check_dataset")
    assert "- Goal **likeness**:" in report and "#### Dataset doctor" in report
    assert "near-duplicates" in report and "Files: copy_of_3.jpg, good_3.png" in report
    assert "blurry" in report and "blurry.png" in report and "tiny.png (40x40)" in report
    status, gallery, *_ = client.predict(1, api_name="/remove_flagged")
    assert status.startswith("Removed 4 flagged images")
    names = [item["caption"] for item in gallery]
    assert len(names) == 8
    again = client.predict(**values, api_name="/check_dataset")
    assert "near-duplicates" not in again and "tiny.png" not in again
