"""The caption stage (core/generation/captioning.py) with the tiny random Florence-2 (`python -m core
demo-captioner`): its
captions are gibberish, but every one comes out of transformers' real processor and generate() in the trainer env."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from core.errors import JobCancelled, JobError, JobTimeout, SpecError
from core.events import CaptionProgress, LogLine, StageEvent
from core.generation.captioning import SAMPLE_SIZE, CaptionError, generate_captions
from core.generation.demo import build_tiny_captioner, write_demo_dataset
from core.pipeline import check_job, run_job
from core.spec.job import parse_job
from core.status import JobStatus, apply, summary
from tests.conftest import ROOT, tiny_job

TINY_CAPTIONER_DIR = ROOT / ".cache" / "tiny-captioner"


@pytest.fixture(scope="session")
def tiny_captioner(settings) -> Path:
    return build_tiny_captioner(TINY_CAPTIONER_DIR, settings=settings)


def uncaptioned(folder: Path, *, count: int = 6, keep: int = 0) -> Path:
    """The demo dataset with only the first `keep` captions left."""
    write_demo_dataset(folder, count=count)
    for index, caption in enumerate(sorted(folder.glob("*.txt"))):
        if index >= keep:
            caption.unlink()
    return folder


def caption_job(model: Path, dataset: Path, captioner: Path, **captioning) -> dict:
    return tiny_job(model, dataset, captioning={"model": str(captioner), "style": "short", "max_length": 12,
                                                **captioning})


def staged_captions(result) -> dict[str, str]:
    folder = Path(result.job_dir) / "dataset" / "images"
    return {path.stem: path.read_text().strip() for path in sorted(folder.glob("*.txt"))}


def caption_processes(request: Path) -> list[int]:
    """Processes still running the caption script of this job."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(request).encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


# -- the job field --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("captioning", "field"), [
    ({"model": "not a model"}, "captioning.model"),
    ({"mode": "some"}, "captioning.mode"),
    ({"style": "poem"}, "captioning.style"),
    ({"batch_size": 0}, "captioning.batch_size"),
    ({"max_length": 4}, "captioning.max_length"),
    ({"prefix": "two\nlines"}, "captioning.prefix"),
    ({"modle": "florence-2-base"}, "captioning.modle"),
])
def test_a_bad_captioning_value_names_its_field(tmp_path, captioning, field):
    with pytest.raises(SpecError) as caught:
        parse_job(tiny_job(tmp_path, tmp_path, captioning=captioning))
    assert field in [error["field"] for error in caught.value.errors]


def test_names_stand_for_hub_models_and_survive_a_round_trip(tmp_path):
    spec = parse_job(tiny_job(tmp_path, tmp_path, captioning={"model": "florence-2-base", "mode": "all"}))
    assert spec.captioning.model_id == "florence-community/Florence-2-base"
    assert spec.captioning.new_tokens == 256  # detailed, by default
    assert parse_job(spec.to_job_json()).captioning == spec.captioning
    assert parse_job(tiny_job(tmp_path, tmp_path, captioning={"model": "Qwen/Qwen2.5-VL-3B-Instruct"})).captioning


@pytest.mark.trainer_env  # the captioner runs in the trainer env, which is checked first
def test_an_offline_machine_without_the_model_in_its_cache_says_so_before_starting_anything(tmp_path, settings,
                                                                                           demo_dataset):
    offline = replace(settings, online=False, hf_home=tmp_path / "empty-hf-home")
    spec = parse_job(tiny_job(tmp_path, demo_dataset, captioning={"model": "florence-2-large"}))
    with pytest.raises(CaptionError) as caught:
        generate_captions(sorted(demo_dataset.glob("*.png")), spec.captioning, settings=offline)
    assert caught.value.field == "captioning.model"
    assert "florence-community/Florence-2-large is not in the Hugging Face cache" in caught.value.message


def test_the_status_line_shows_images_done_and_the_eta_then_clears_them():
    status = apply(JobStatus(), StageEvent(stage="caption", status="started"))
    assert status.stage == "captioning" and status.message == "captioning the images"
    status = apply(status, CaptionProgress(done=3, total=8, eta_s=12.4, image="a.png"))
    assert (status.images_done, status.images_total, status.eta_s) == (3, 8, 12.4)
    assert summary(status) == "[captioning] captioned 3/8 images eta=12s"
    assert status.to_dict()["images_done"] == 3
    status = apply(status, StageEvent(stage="preflight", status="started"))
    assert status.images_done is None and status.eta_s is None


# -- the stage, with the tiny captioner -----------------------------------------------------------------------------


@pytest.mark.trainer_env
def test_the_demo_captioner_is_a_native_florence2_folder(tiny_captioner):
    config = json.loads((tiny_captioner / "config.json").read_text())
    assert config["model_type"] == "florence2" and config["architectures"] == ["Florence2ForConditionalGeneration"]
    files = {path.name for path in tiny_captioner.iterdir()}
    assert {"tokenizer.json", "processor_config.json", "model.safetensors"} <= files


@pytest.mark.trainer_env
def test_missing_captions_are_generated_the_others_kept_with_progress_and_the_trigger_word(
        tmp_path, tiny_model, tiny_captioner, settings):
    dataset = uncaptioned(tmp_path / "data", count=6, keep=2)
    kept = {path.stem: path.read_text().strip() for path in dataset.glob("*.txt")}
    events: list = []
    result = check_job(parse_job(caption_job(tiny_model, dataset, tiny_captioner, prefix="a drawing of")),
                       tmp_path / "job", events.append, settings=settings)

    captions = staged_captions(result)
    assert len(captions) == 6  # one .txt per image
    for stem, text in kept.items():
        assert captions[stem] == f"sks, {text}"  # a user's caption is kept, with the trigger word as before
    generated = {stem: text for stem, text in captions.items() if stem not in kept}
    assert len(generated) == 4
    for text in generated.values():
        assert text.startswith("sks, a drawing of ") and len(text) > len("sks, a drawing of ")
    report = result.captioning
    assert report["model"] == str(tiny_captioner) and report["device"] == "cpu" and report["mode"] == "missing"
    assert (report["images_total"], report["images_captioned"], report["images_kept"]) == (6, 4, 2)
    assert sorted(report["sources"].values()) == ["file", "file", "generated", "generated", "generated", "generated"]
    assert report["load_s"] > 0 and report["elapsed_s"] >= report["load_s"] and report["images_per_s"] > 0
    assert {s["caption"] for s in report["samples"]} == set(generated.values())
    assert result.preflight["caption_sources"] == {"generated": 4, "file": 2}
    assert result.preflight["caption_coverage"] == 1.0 and result.preflight["trigger_word_coverage"] == 1.0
    assert result.to_output()["captioning"] == report

    progress = [e for e in events if isinstance(e, CaptionProgress)]
    assert [(e.done, e.total) for e in progress] == [(n, 4) for n in range(1, 5)]
    assert progress[-1].eta_s == 0 and all(e.image.endswith(".png") for e in progress)
    stages = [(e.stage, e.status) for e in events if isinstance(e, StageEvent)]
    assert stages.index(("caption", "completed")) < stages.index(("preflight", "started"))
    assert stages.index(("dataset", "completed")) < stages.index(("caption", "started"))
    assert any(isinstance(e, LogLine) and "caption model loaded" in e.message for e in events)


@pytest.mark.trainer_env
def test_mode_all_replaces_every_caption_and_a_dry_run_captions_only_a_sample(tmp_path, tiny_model, tiny_captioner,
                                                                              settings):
    dataset = uncaptioned(tmp_path / "data", count=SAMPLE_SIZE + 2, keep=3)
    result = check_job(parse_job(caption_job(tiny_model, dataset, tiny_captioner, mode="all", batch_size=3)),
                       tmp_path / "job", settings=settings)
    report = result.captioning
    assert report["sampled"] is True and report["images_captioned"] == SAMPLE_SIZE
    assert report["images_kept"] == 2 and len(report["samples"]) == SAMPLE_SIZE
    sources = [report["sources"][name] for name in sorted(report["sources"])]
    assert sources == ["generated"] * SAMPLE_SIZE + ["trigger_word"] * 2  # the first three had files: replaced
    assert result.preflight["caption_sources"] == {"generated": SAMPLE_SIZE, "trigger_word": 2}


@pytest.mark.trainer_env
def test_a_second_run_of_the_same_job_takes_its_captions_from_the_cache(tmp_path, tiny_model, tiny_captioner,
                                                                        settings):
    dataset = uncaptioned(tmp_path / "data", count=3)

    def run(name: str, **captioning) -> tuple[object, list]:
        events: list = []
        job = caption_job(tiny_model, dataset, tiny_captioner, max_length=10, **captioning)
        return check_job(parse_job(job), tmp_path / name, events.append, settings=settings), events

    def model_ran(events: list) -> bool:
        return any(isinstance(e, LogLine) and "caption model loaded" in e.message for e in events)

    first, events1 = run("job1")
    second, events2 = run("job2", prefix="a photo of")  # the prefix is applied after: it does not miss
    assert model_ran(events1) and not model_ran(events2)
    assert (first.captioning["from_cache"], second.captioning["from_cache"]) == (False, True)
    assert not [e for e in events2 if isinstance(e, CaptionProgress)]
    assert second.captioning["images_captioned"] == 3 and set(second.captioning["sources"].values()) == {"generated"}
    raw = {stem: text.removeprefix("sks, ") for stem, text in staged_captions(first).items()}
    assert staged_captions(second) == {stem: f"sks, a photo of {text}" for stem, text in raw.items()}

    third, events3 = run("job3", style="detailed")  # a setting that changes the text: the model runs again
    assert model_ran(events3) and third.captioning["from_cache"] is False


@pytest.mark.trainer_env
def test_a_cancel_stops_the_caption_process_within_seconds(tmp_path, tiny_model, tiny_captioner, settings):
    dataset = uncaptioned(tmp_path / "data", count=6)
    cancel = threading.Event()
    events: list = []

    def on_event(event) -> None:
        events.append(event)
        if isinstance(event, LogLine) and event.message.startswith("captioning 6 images"):
            threading.Timer(1.0, cancel.set).start()  # the caption process is starting: stop it mid-load

    spec = parse_job(caption_job(tiny_model, dataset, tiny_captioner))
    with pytest.raises(JobCancelled) as caught:
        check_job(spec, tmp_path / "job", on_event, settings=settings, cancel=cancel)
    stopped = time.monotonic()
    assert caught.value.stage == "caption"
    assert time.monotonic() - stopped < 1
    assert not caption_processes(tmp_path / "job" / "caption-request.json")
    assert ("caption", "failed") in [(e.stage, e.status) for e in events if isinstance(e, StageEvent)]


@pytest.mark.trainer_env
def test_the_job_deadline_stops_captioning(tmp_path, tiny_model, tiny_captioner, settings):
    dataset = uncaptioned(tmp_path / "data", count=6)
    spec = parse_job(caption_job(tiny_model, dataset, tiny_captioner, batch_size=1) | {"timeout_s": 4})
    started = time.monotonic()
    with pytest.raises(JobTimeout) as caught:
        check_job(spec, tmp_path / "job", settings=settings)
    assert caught.value.stage == "caption" and time.monotonic() - started < 15
    assert not caption_processes(tmp_path / "job" / "caption-request.json")


@pytest.mark.trainer_env
def test_a_worker_dry_run_answers_with_the_generated_captions(tmp_path, tiny_model, tiny_captioner):
    import asyncio

    from core.settings import Settings
    from worker.handler import run_pipeline
    from worker.output import job_output

    dataset = uncaptioned(tmp_path / "sets" / "mine", count=3)
    settings = Settings.from_env({"DATA_DIR": str(tmp_path / "data"), "DATASET_ROOT": str(tmp_path / "sets"),
                                  "TRAINER_DEVICE": "cpu", "MODELS_ROOT": str(tiny_model.parent)})
    spec = parse_job(caption_job(tiny_model, dataset, tiny_captioner) | {"dry_run": True})
    output = job_output(asyncio.run(run_pipeline(spec, tmp_path / "job", lambda event: None, settings=settings)))
    assert output["status"] == "dry_run"
    samples = output["captioning"]["samples"]
    assert [s["image"] for s in samples] == ["demo_000.png", "demo_001.png", "demo_002.png"]
    assert all(s["caption"].startswith("sks, ") and len(s["caption"]) > 5 for s in samples)


@pytest.mark.training
def test_a_dataset_without_captions_is_captioned_then_trains_from_the_fetched_hub_model(
        tmp_path, tiny_model, tiny_captioner, settings):
    """One real job does both pre-training stages a pod runs (test_base_model.py's real job merged here): its
    uncaptioned images are captioned, and its base model is the tiny SDXL model served as a Hub repo: the model stage
    fetches it with progress, and SimpleTuner trains from that cache. SimpleTuner's process inherits HF_HUB_OFFLINE=1
    from this test process (conftest), so it can only load what the stage put there, through refs/main, as it would
    on a pod with the network volume's cache."""
    from pydantic import SecretStr

    from core.events import DownloadProgress
    from tests.support.hub_server import running_hub_server
    from tests.test_base_model import TOKEN, cached_file, downloads

    repo = "tester/tiny-sdxl"
    files = {p.relative_to(tiny_model).as_posix(): p.read_bytes() for p in tiny_model.rglob("*") if p.is_file()}
    decoys = {"tiny_sdxl.safetensors": files["unet/diffusion_pytorch_model.safetensors"] + b"single-file",
              "unet/diffusion_pytorch_model.fp16.safetensors": files["unet/diffusion_pytorch_model.safetensors"][:1000]}
    online = replace(settings, online=True, hf_home=tmp_path / "hf-home", hf_token=SecretStr(TOKEN))
    dataset = uncaptioned(tmp_path / "data", count=4)
    job = caption_job(tiny_model, dataset, tiny_captioner)
    job["config"] |= {"model_name": repo, "vae": repo, "max_train_steps": 2, "checkpointing_steps": 2}
    events: list = []
    with running_hub_server(tmp_path, token=TOKEN) as hub:
        hub.add_repo(repo, files={**files, **decoys})
        result = run_job(parse_job({"input": job}), tmp_path / "job", events.append, settings=online)
        fetched = downloads(hub)
    assert result.status == "succeeded" and result.lora_path.is_file()
    assert result.captioning["images_captioned"] == 4
    captions = staged_captions(result)
    assert len(captions) == 4 and all(text.startswith("sks, ") and text != "sks" for text in captions.values())
    assert result.preflight["caption_sources"] == {"generated": 4}

    assert ("model", "completed") in [(e.stage, e.status) for e in events if isinstance(e, StageEvent)]
    progress = [e for e in events if isinstance(e, DownloadProgress) and e.source == repo]
    assert progress and progress[-1].bytes_done == progress[-1].bytes_total == sum(
        len(data) for path, data in files.items() if path != "model_index.json")
    assert fetched == sorted(set(fetched)) and set(fetched) <= set(files)  # once each (identical files share a blob)
    assert all(cached_file(repo, path, online).read_bytes() == data for path, data in files.items())
    assert not set(decoys) & set(fetched)


# -- the UI's Dataset tab, through its API ------------------------------------------------------------------------


@pytest.mark.trainer_env
def test_the_ui_auto_captions_keeps_hand_edits_and_has_bulk_tools(tmp_path, tiny_model, tiny_captioner):
    from gradio_client import Client, handle_file

    from tests.test_app_api import captions_of, launch, wait_for, write_images

    ui, url = launch(tmp_path / "app-data", tiny_model)
    try:
        client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
        files = write_images(tmp_path / "upload", 4, captions=False)
        gallery, *_ = client.predict([handle_file(f) for f in files], api_name="/upload_dataset")
        assert captions_of(gallery) == [f"photo {n:02d}" for n in range(4)]  # no caption: the file name
        client.predict("photo_01.png", "my own words", 1, api_name="/save_caption")

        def finished() -> list | None:
            status, gallery, *_ = client.predict(1, "photo_02.png", api_name="/caption_status")
            return [status, gallery] if status.startswith(("Captioned", "Auto-caption failed")) else None

        status, _ = client.predict(str(tiny_captioner), "missing", "short", "a drawing of", api_name="/auto_caption")
        assert "3 images" in status
        status, gallery = wait_for(finished, timeout_s=120, what="auto-caption to finish")
        assert status == f"Captioned 3 images with {tiny_captioner}."
        captions = captions_of(gallery)
        assert captions[1] == "my own words"  # edited by hand: kept
        assert all(text.startswith("a drawing of ") and len(text) > 13 for i, text in enumerate(captions) if i != 1)
        images = Path(ui.store.images_dir)
        assert (images / "photo_00.txt").read_text().strip() == captions[0]

        # Mode all still keeps the hand-edited caption; a second missing run has nothing left to do.
        with pytest.raises(Exception, match="no image or clip to caption"):
            client.predict(str(tiny_captioner), "missing", "short", "", api_name="/auto_caption")
        status, *_ = client.predict("a drawing of", "a sketch of", 1, api_name="/replace_in_captions")
        assert status == "Replaced: 3 captions changed."
        status, gallery, *_ = client.predict("sks", 1, api_name="/add_tag")
        assert status == "Added 'sks': 4 captions changed." and captions_of(gallery)[1] == "my own words, sks"
        status, gallery, *_ = client.predict("SKS", 1, api_name="/remove_tag")
        assert captions_of(gallery)[1] == "my own words" and status.endswith("4 captions changed.")

        # Regenerate one image, the hand-edited one included: the user asked for it.
        client.predict("photo_01.png", str(tiny_captioner), "short", "", api_name="/regenerate_caption")
        wait_for(finished, timeout_s=120, what="the regenerated caption")
        assert ui.store.caption("photo_01.png") not in ("my own words", "")
        assert ui.store.origins()["photo_01.png"] == "generated"
    finally:
        ui.registry.shutdown()
        ui.blocks.close()


@pytest.mark.trainer_env
def test_the_ui_refuses_to_start_a_training_while_auto_caption_writes_captions(tmp_path, tiny_model, tiny_captioner):
    from app.dataset_store import DatasetStore
    from app.state import RunRegistry
    from core.settings import Settings
    from core.spec.captioning import CaptioningSpec
    from core.spec.job import DatasetSpec

    settings = Settings.from_env({"DATA_DIR": str(tmp_path / "data")})
    store = DatasetStore(settings=settings)
    registry = RunRegistry(settings=settings, env={}, before_training=store.refuse_training_while_captioning)
    store.load(DatasetSpec(path=str(uncaptioned(tmp_path / "set", count=4))))
    run = store.start_captioning(CaptioningSpec(model=str(tiny_captioner), style="short"))
    try:
        assert run.running  # the caption process is starting: the model loads for a few seconds
        with pytest.raises(JobError) as caught:
            registry.start_training(parse_job(tiny_job(tiny_model, store.images_dir)))
        assert caught.value.code == "busy" and caught.value.field == "captioning"
        assert "auto-caption is still writing captions" in caught.value.message
        assert registry.training() is None  # nothing started
    finally:
        store.stop_captioning()
    wait_until = time.monotonic() + 30
    while run.running and time.monotonic() < wait_until:
        time.sleep(0.1)
    assert not run.running
    store.refuse_training_while_captioning()  # stopped: a training may start again


@pytest.mark.trainer_env
def test_the_demo_button_builds_the_tiny_captioner_and_picks_it(tmp_path, tiny_model, settings):
    from gradio_client import Client, handle_file

    from tests.test_app_api import captions_of, launch, wait_for, write_images

    data = tmp_path / "app-data"
    ui, url = launch(data, tiny_model)
    try:
        client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
        client.predict([handle_file(f) for f in write_images(tmp_path / "upload", 2, captions=False)],
                       api_name="/upload_dataset")
        model, status = client.predict(api_name="/use_demo_captioner")
        assert model == str(data / "models" / "tiny-captioner") and (Path(model) / "config.json").is_file()
        assert "tiny demo captioner" in status and "Press Auto-caption" in status
        client.predict(model, "missing", "short", "", api_name="/auto_caption")

        def finished() -> list | None:
            status, gallery, *_ = client.predict(1, "", api_name="/caption_status")
            return [status, gallery] if status.startswith(("Captioned", "Auto-caption failed")) else None

        status, gallery = wait_for(finished, timeout_s=120, what="auto-caption to finish")
        assert status.startswith("Captioned 2 images")
        assert all(caption != name for caption, name in zip(captions_of(gallery), ["photo 00", "photo 01"],
                                                             strict=True))
    finally:
        ui.registry.shutdown()
        ui.blocks.close()
