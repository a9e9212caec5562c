"""The worker face: its parts (status, answers, job checks) and the real worker process through runpod's local API,
`python -m worker --rp_serve_api`, with datasets from a loopback file server and publishing to the local Hub server.

runpod's production loop (progress, cancel, next job) is in tests/test_worker_loop.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import requests

from core.endpoint import job_defaults, with_defaults
from core.errors import (
    DatasetError,
    JobCancelled,
    JobTimeout,
    SetupError,
    SpecError,
    TrainingError,
)
from core.events import CheckpointSaved, DownloadProgress, StageEvent, TrainingProgress
from core.generation.demo import write_demo_dataset
from core.publishing import require_destination
from core.settings import Settings
from core.spec.job import parse_job
from tests.conftest import ROOT, tiny_job
from tests.support.announced import UVICORN, announced_url
from tests.support.http_server import serve_files
from tests.support.hub_server import running_hub_server
from tests.support.processes import stop_process_group
from worker.handler import SAMPLES_DIR, job_directory, worker_settings
from worker.output import error_as_text, error_output, job_output
from worker.progress import ProgressReporter

HUB_TOKEN = "hf_WorkerTestToken0123456789abcdefXYZ"
BUCKET_ENV = {"BUCKET_ENDPOINT_URL": "http://127.0.0.1:9", "BUCKET_ACCESS_KEY_ID": "key-id-123",
              "BUCKET_SECRET_ACCESS_KEY": "secret-key-456"}
# The seed's example request (the README's first API example), unchanged but for the dataset's address.
SEED_INPUT = {
    "config": {"model_name": "black-forest-labs/FLUX.1-dev", "resolution": 1024, "train_batch_size": 1,
               "num_train_epochs": 10, "checkpointing_steps": 500, "learning_rate": 1e-5},
    "dataloader": {"caption_extension": ".txt", "shuffle_tags": True, "keep_tokens": 1},
}


# -- status (worker/progress.py) ---------------------------------------------------------------------------------


def test_the_status_keeps_the_latest_state_and_sends_only_changes():
    sent: list[dict] = []
    reporter = ProgressReporter(send=sent.append)
    reporter.on_event(DownloadProgress(source="https://x/d.zip", bytes_done=10, bytes_total=100))
    reporter.on_event(DownloadProgress(source="https://x/d.zip", bytes_done=100, bytes_total=100))
    assert reporter.flush() and not reporter.flush()  # nothing changed since
    assert sent[-1]["bytes_done"] == 100 and sent[-1]["stage"] == "downloading"
    for step in range(1, 51):
        reporter.on_event(TrainingProgress(step=step, total_steps=50, loss=1.0 / step))
    reporter.on_event(CheckpointSaved(path="/o/checkpoint-50", step=50))
    assert reporter.flush()
    assert len(sent) == 2
    last = sent[-1]
    assert last["step"] == 50 and last["loss"] == 0.02 and last["message"] == "saved checkpoint-50"
    assert "bytes_done" not in last  # a download's fields leave with its stage


def test_the_status_is_sent_at_most_once_per_interval_while_events_pour_in():
    sent: list[dict] = []
    reporter = ProgressReporter(send=sent.append, interval_s=0.1)

    def pour() -> None:
        for step in range(1, 2001):
            reporter.on_event(TrainingProgress(step=step, total_steps=2000))
            time.sleep(0.0002)

    async def watch() -> None:
        task = asyncio.create_task(reporter.run())
        await asyncio.to_thread(pour)
        await asyncio.sleep(0.25)
        task.cancel()

    started = time.monotonic()
    asyncio.run(watch())
    elapsed = time.monotonic() - started
    assert 2 <= len(sent) <= elapsed / 0.1 + 1
    steps = [s["step"] for s in sent]
    assert steps == sorted(steps) and steps[-1] == 2000


# -- answers (worker/output.py) ------------------------------------------------------------------------------------


def test_a_bad_job_answers_the_one_error_shape():
    answer = error_output(SpecError("must be a whole number, got 'ten'", field="config.max_train_steps"))
    assert set(answer) == {"error"}
    assert answer["error"]["code"] == "invalid_input" and answer["error"]["stage"] == "validate"
    assert answer["error"]["field"] == "config.max_train_steps" and "'ten'" in answer["error"]["message"]


def test_a_trainer_crash_asks_for_a_fresh_worker_and_keeps_the_log_tail_without_secrets():
    crash = TrainingError("Training failed: OSError: no such model", exit_code=1,
                          log_tail="\n".join([f"line {i}" for i in range(100)] + [f"token={HUB_TOKEN}"]))
    answer = error_output(crash, secrets=[HUB_TOKEN])
    assert answer["refresh_worker"] is True
    assert answer["error"]["code"] == "training_failed" and answer["error"]["stage"] == "train"
    tail = answer["error"]["log_tail"].splitlines()
    assert len(tail) == 20 and tail[0] == "line 81"
    assert HUB_TOKEN not in json.dumps(answer)


def test_runpods_local_api_gets_the_same_error_payload_as_text():
    answer = error_output(SpecError("unknown field", field="datset_url"))
    text = error_as_text(answer)
    assert json.loads(text["error"]) == answer["error"]
    ok = {"status": "dry_run"}
    assert error_as_text(ok) is ok


def test_cancel_timeout_and_a_bug_are_answered_as_such():
    for stopped in (JobCancelled("cancelled during training at step 3"), JobTimeout("time limit (timeout_s=5)")):
        stopped.salvaged = {"status": "partial", "hub": {"url": "http://hub/u/r"}}
        answer = error_output(stopped)
        assert "refresh_worker" not in answer and "log_tail" not in answer["error"]
        assert answer["error"]["salvaged"]["status"] == "partial"
    bug = error_output(KeyError(f"missing {HUB_TOKEN}"), secrets=[HUB_TOKEN])
    assert bug["refresh_worker"] is True and bug["error"]["code"] == "internal_error"
    assert "KeyError" in bug["error"]["message"] and HUB_TOKEN not in bug["error"]["message"]
    assert "refresh_worker" not in error_output(DatasetError("no images", field="dataset"))


# -- job checks (core/endpoint.py) -------------------------------------------------------------------------------


def test_endpoint_defaults_fill_what_the_job_leaves_out():
    defaults = job_defaults(Settings.from_env({"JOB_DEFAULT_MODEL": "stabilityai/stable-diffusion-xl-base-1.0",
                                               "JOB_DEFAULT_RESOLUTION": "1024",
                                               "JOB_DEFAULT_MAX_TRAIN_STEPS": "1500"}))
    job = parse_job(with_defaults({"dataset_url": "https://x/d.zip", "config": {"steps": 300}}, defaults))
    assert job.model_family == "sdxl" and job.config["resolution"] == 1024
    assert job.config["max_train_steps"] == 300  # the job's shorthand beats the default
    by_epochs = parse_job(with_defaults({"dataset_url": "https://x/d.zip", "config": {"epochs": 5}}, defaults))
    assert "max_train_steps" not in by_epochs.config  # one of steps or epochs leads, never both
    native = {"--pretrained_model_name_or_path": "black-forest-labs/FLUX.1-dev"}
    mine = parse_job(with_defaults({"input": {"dataset_url": "https://x/d.zip", "config": native}}, defaults))
    assert mine.model_family == "flux"
    with pytest.raises(SetupError) as caught:
        job_defaults(Settings.from_env({"JOB_DEFAULT_LORA_RANK": "sixteen"}))
    assert caught.value.field == "JOB_DEFAULT_LORA_RANK" and "sixteen" in caught.value.message


def test_a_training_job_must_say_where_its_lora_goes():
    settings, bucket = Settings.from_env({}), Settings.from_env({**BUCKET_ENV, "BUCKET_NAME": "loras"})
    training = parse_job({"dataset_url": "https://x/d.zip", "config": {"model_name": "black-forest-labs/FLUX.1-dev"}})
    with pytest.raises(SpecError) as caught:
        require_destination(training, settings)
    assert caught.value.field == "hub" and "deletes" in caught.value.message
    spec, warnings = require_destination(training, bucket)
    assert spec.storage is not None and warnings == []  # the endpoint's bucket is the default destination
    to_hub = training.model_copy(update={"hub": parse_job({"dataset_url": "https://x/d.zip", "config": {
        "model_name": "black-forest-labs/FLUX.1-dev"}, "hub": {"repo_id": "me/lora"}}).hub})
    with pytest.raises(SpecError) as caught:
        require_destination(to_hub, settings)
    assert caught.value.field == "hub.token"
    _, warnings = require_destination(to_hub.model_copy(update={"dry_run": True}), settings)
    assert warnings and warnings[0].startswith("hub.token:")  # a dry run trains nothing: a warning, not an error


def test_job_folders_and_the_sample_root():
    settings = worker_settings({"DATA_DIR": "/srv/data"})
    assert settings.dataset_root == SAMPLES_DIR and (SAMPLES_DIR / "demo").is_dir()
    assert worker_settings({"DATASET_ROOT": "/mnt/sets"}).dataset_root == Path("/mnt/sets")
    assert job_directory(settings, "abc-123") == Path("/srv/data/jobs/abc-123")
    assert job_directory(settings, "../../etc/passwd").parent == Path("/srv/data/jobs")
    assert job_directory(settings, "").name  # RunPod always sends an id; a missing one still gets a folder


def test_a_finished_job_keeps_its_own_and_the_workers_warnings(tmp_path):
    from core.result import JobResult

    result = JobResult(status="dry_run", job_dir=tmp_path, warnings=["dataloader.keep_tokens: no effect"])
    output = job_output(result, warnings=["hub.token: a warning", "dataloader.keep_tokens: no effect"])
    assert output["status"] == "dry_run"
    assert output["warnings"] == ["dataloader.keep_tokens: no effect", "hub.token: a warning"]


def test_a_cancel_while_the_dataset_downloads_stops_the_job_before_training(tmp_path, tiny_model):
    """A cancel that arrives while the dataset downloads stops the job there: it never goes on to train."""
    from worker.handler import run_pipeline

    served = tmp_path / "served"
    served.mkdir()
    zip_folder(write_demo_dataset(tmp_path / "demo", count=6), served / "demo.zip")
    settings = Settings.from_env({"ALLOW_PRIVATE_URLS": "1", "DATA_DIR": str(tmp_path / "data"),
                                  "TRAINER_DEVICE": "cpu", "MODELS_ROOT": str(tiny_model.parent)})
    events: list = []
    with serve_files(served) as files:
        files.fail_status["demo.zip"] = [503, 503, 503]  # three retries with backoff: about 3.5 s of downloading
        spec = parse_job({"dataset_url": files.url("demo.zip"), "config": _model(tiny_model),
                          "dataloader": {"minimum_image_size": 64}})

        async def cancel_early() -> None:
            task = asyncio.create_task(run_pipeline(spec, tmp_path / "job", events.append, settings=settings))
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        started = time.monotonic()
        asyncio.run(cancel_early())
    assert time.monotonic() - started < 20
    assert ("dataset", "failed") in [(e.stage, e.status) for e in events if isinstance(e, StageEvent)]
    assert not [e for e in events if isinstance(e, StageEvent) and e.stage == "train"]


# -- the worker process, through runpod's local API -------------------------------------------------------------


def png_bytes(size: int = 64) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def zip_folder(folder: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w") as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, f"{folder.name}/{path.name}")
    return target


def worker_env(**extra: str) -> dict[str, str]:
    """The test process's environment for a worker process: no HF_HUB_OFFLINE (publishing needs the Hub API; the
    trainer gets its offline variables from the core) and no token but the one given."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("HF_HUB_OFFLINE", "HF_TOKEN", "DATASET_ROOT", "ALLOW_PRIVATE_URLS")
           and not key.startswith(("RUNPOD_", "BUCKET_", "WEBHOOK_", "WANDB_"))}
    env.update({"TRAINER_DEVICE": "cpu", "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
                "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


class ApiWorker:
    def __init__(self, *, base: str, process: subprocess.Popen, log: Path, data_dir: Path, hub, files, area: Path):
        self.base, self.process, self.log, self.data_dir = base, process, log, data_dir
        self.hub, self.files, self.area = hub, files, area

    def runsync(self, job_input: dict, *, timeout_s: float = 60) -> dict:
        response = requests.post(f"{self.base}/runsync", json={"input": job_input}, timeout=timeout_s)
        response.raise_for_status()
        return response.json()

    def jobs_left(self) -> list[str]:
        jobs = self.data_dir / "jobs"
        return sorted(p.name for p in jobs.iterdir()) if jobs.exists() else []


@pytest.fixture(scope="module")
def api(tmp_path_factory, tiny_model) -> ApiWorker:
    """One worker process for the whole module (bad jobs first, then good ones), with its datasets on a loopback
    file server (ALLOW_PRIVATE_URLS=1) and the local Hub server as its Hub."""
    area = tmp_path_factory.mktemp("api-worker")
    served = area / "served"
    served.mkdir()
    zip_folder(write_demo_dataset(area / "demo", count=6, size=128), served / "demo.zip")
    zip_folder(write_demo_dataset(area / "seed", count=6, size=512), served / "seed.zip")
    with zipfile.ZipFile(served / "checkpoint-10.zip", "w") as archive:
        archive.writestr("checkpoint-10/training_state.json", json.dumps({"global_step": 10}))
        archive.writestr("checkpoint-10/pytorch_lora_weights.safetensors", b"weights")
    with zipfile.ZipFile(served / "slip.zip", "w") as archive:
        archive.writestr("ok/a.png", png_bytes())
        archive.writestr("../../escaped.png", png_bytes())
    data_dir = area / "data"
    log = area / "worker.log"
    with running_hub_server(area, token=HUB_TOKEN, connect=False) as hub, serve_files(served) as files, \
            log.open("wb") as log_file:
        env = worker_env(DATA_DIR=str(data_dir), ALLOW_PRIVATE_URLS="1", HF_ENDPOINT=hub.endpoint,
                         HF_TOKEN=HUB_TOKEN, HF_HOME=str(area / "hf-home"))
        process = subprocess.Popen(
            [sys.executable, "-m", "worker", "--rp_serve_api", "--rp_api_host", "127.0.0.1", "--rp_api_port",
             "0"], cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            # Port 0: uvicorn binds a port the OS picks and logs it.
            base = announced_url(process, log, UVICORN, timeout_s=60, name="the worker's API")
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, log.read_text()[-3000:]
                try:
                    if requests.get(f"{base}/docs", timeout=2).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass  # not listening yet
                assert time.monotonic() < deadline, "the worker's API did not come up"
                time.sleep(0.2)
            yield ApiWorker(base=base, process=process, log=log, data_dir=data_dir, hub=hub, files=files, area=area)
        finally:
            stop_process_group(process, grace_s=15)


def _model(tiny_model: Path) -> dict:
    return {"model_family": "sdxl", "model_name": str(tiny_model)}


BAD_JOBS = {
    "a number that is a word": (
        lambda w, m: {"dataset_url": w.files.url("demo.zip"), "config": {**m, "max_train_steps": "ten"}},
        "invalid_input", "config.max_train_steps", "whole number"),
    "a flag that is a list": (
        lambda w, m: {"dataset_url": w.files.url("demo.zip"), "config": {**m, "lora_rank": [4]}, "dry_run": True},
        "invalid_input", "config.lora_rank", "whole number"),
    "a time limit that is text": (
        lambda w, m: {"dataset_url": w.files.url("demo.zip"), "config": m, "timeout_s": "soon"},
        "invalid_input", "timeout_s", "integer"),
    "an unknown key": (
        lambda w, m: {"datset_url": w.files.url("demo.zip"), "config": m},
        "invalid_input", "datset_url", "did you mean 'dataset_url'"),
    "an unknown SimpleTuner option": (
        lambda w, m: {"dataset_url": w.files.url("demo.zip"), "config": {**m, "learning_rat": 1e-4}},
        "invalid_input", "config.learning_rat", "learning_rate"),
    "no dataset at all": (
        lambda w, m: {"config": m}, "invalid_input", "dataset", "needs a dataset"),
    "a zip-slip archive": (
        lambda w, m: {"dataset_url": w.files.url("slip.zip"), "config": m, "dry_run": True},
        "unsafe_archive", "dataset", "slip.zip"),
    "a dataset URL that is not there": (
        lambda w, m: {"dataset_url": w.files.url("gone.zip"), "config": m, "dry_run": True},
        "download_failed", "dataset.url", "404"),
    "a dataset folder that is not there": (
        lambda w, m: {"dataset": {"path": "no-such-set"}, "config": m, "dry_run": True},
        "dataset_error", "dataset.path", "does not exist"),
    "a dataset folder outside the dataset root": (
        lambda w, m: {"dataset": {"path": "../../etc"}, "config": m, "dry_run": True},
        "dataset_error", "dataset.path", "outside"),
    "a cloud metadata address": (
        lambda w, m: {"dataset_url": "http://169.254.169.254/latest/meta-data/x.zip", "config": m, "dry_run": True},
        "address_refused", "dataset.url", "metadata"),
    "a bad repo id": (
        lambda w, m: {"dataset_url": w.files.url("demo.zip"), "config": m, "hub": {"repo_id": "not a repo"}},
        "invalid_input", "hub.repo_id", "user-or-org/name"),
    "a training job with nowhere to put its LoRA": (
        lambda w, m: {"dataset_url": w.files.url("demo.zip"), "config": m},
        "invalid_input", "hub", "where the LoRA goes"),
}


@pytest.mark.parametrize("name", list(BAD_JOBS))
def test_a_bad_job_gets_a_clear_error_and_leaves_nothing_behind(api, tiny_model, name):
    build, code, field, words = BAD_JOBS[name]
    answer = api.runsync(build(api, _model(tiny_model)))
    assert answer["status"] == "FAILED", answer
    error = json.loads(answer["error"])  # runpod's local API carries the error payload as JSON text
    assert (error["code"], error["field"]) == (code, field), error
    assert words in error["message"], error
    assert set(error) >= {"code", "stage", "message", "field"}
    assert api.jobs_left() == []
    assert not list(api.area.rglob("escaped.png"))
    assert api.process.poll() is None


@pytest.mark.training
def test_runsync_trains_publishes_and_answers_with_urls_and_metrics(api, tiny_model):
    """After the bad jobs above, the same worker process trains a job end to end."""
    pid = api.process.pid
    # 2 steps: enough to train, save and publish a LoRA through the worker (the faces' longer runs are elsewhere)
    job = tiny_job(tiny_model, Path("unused"), config={"max_train_steps": 2, "checkpointing_steps": 2},
                   hub={"repo_id": "tester/worker-lora"})
    del job["dataset"]
    job["dataset_url"] = api.files.url("demo.zip")
    answer = api.runsync(job, timeout_s=600)
    assert answer["status"] == "COMPLETED", answer
    output = answer["output"]
    repo_url = f"{api.hub.endpoint}/tester/worker-lora"
    assert output["status"] == "succeeded" and output["hub"]["url"] == repo_url and output["hub"]["private"] is True
    assert output["model_checkpoint"].startswith(f"{repo_url}/resolve/")
    assert output["model_checkpoint"].endswith("pytorch_lora_weights.safetensors")
    assert output["training_logs"].startswith(f"{repo_url}/resolve/")
    lora = next(f for f in output["files"] if f["path"] == "pytorch_lora_weights.safetensors")
    assert lora["url"] == output["model_checkpoint"]
    metrics = output["metrics"]
    assert metrics["steps"] == 2 and math.isfinite(metrics["loss"]) and metrics["elapsed_s"] > 0
    assert isinstance(metrics["elapsed_time"], str)
    files = api.hub.repos["tester/worker-lora"].files
    assert files["pytorch_lora_weights.safetensors"] and lora["size"] == len(files["pytorch_lora_weights.safetensors"])
    card = files["README.md"].decode()
    # The local base model by its folder's name: a path of the worker's machine means nothing to a reader.
    assert "sks" in card and f"<your copy of {tiny_model.name}>" in card and str(tiny_model) not in card
    assert api.process.pid == pid and api.process.poll() is None
    assert api.jobs_left() == []  # published first, then the job's folder removed
    assert HUB_TOKEN not in json.dumps(answer) and HUB_TOKEN not in api.log.read_text(errors="replace")
    maps = Path(f"/proc/{pid}/maps").read_text()
    assert "torch" not in maps and "simpletuner" not in maps  # SimpleTuner ran only in its own process


def test_the_seed_request_passes_a_dry_run_without_the_model(api):
    answer = api.runsync({"dataset_url": api.files.url("seed.zip"), **SEED_INPUT, "dry_run": True})
    assert answer["status"] == "COMPLETED", answer
    output = answer["output"]
    assert output["status"] == "dry_run" and output["preflight"]["images_usable"] == 6
    config = output["trainer_files"]["config.json"]
    assert config["--pretrained_model_name_or_path"] == "black-forest-labs/FLUX.1-dev"
    assert config["--model_family"] == "flux" and config["--num_train_epochs"] == 10
    assert config["--checkpoint_step_interval"] == 500 and config["--learning_rate"] == 1e-5
    image_backend = output["trainer_files"]["multidatabackend.json"][0]
    assert image_backend["caption_shuffle"]["position_start"] == 1  # keep_tokens
    hf_home = api.area / "hf-home"
    assert not hf_home.exists() or not any(p.is_file() for p in hf_home.rglob("*"))
    assert not [r for r in api.hub.requests if "FLUX" in r.path]
    assert api.jobs_left() == []


def test_a_dry_run_with_resume_from_fetches_the_checkpoint_and_says_so(api, tiny_model):
    answer = api.runsync({"dataset_url": api.files.url("demo.zip"), "config": {**_model(tiny_model), "resolution": 128},
                          "dataloader": {"minimum_image_size": 64}, "resume_from": api.files.url("checkpoint-10.zip"),
                          "dry_run": True})
    assert answer["status"] == "COMPLETED", answer
    output = answer["output"]
    assert output["trainer_files"]["config.json"]["--resume_from_checkpoint"] == "latest"
    assert any(w.startswith("resume_from: resuming from step 10") for w in output["warnings"]), output["warnings"]
    assert api.jobs_left() == []


def test_the_runpod_hub_tests_pass_as_dry_runs(api):
    tests = json.loads((ROOT / ".runpod" / "tests.json").read_text())
    assert tests["tests"]
    for case in tests["tests"]:
        answer = api.runsync(case["input"])
        assert answer["status"] == "COMPLETED", (case["name"], answer)
        assert answer["output"]["status"] == "dry_run" and answer["output"]["preflight"]["images_usable"] > 0


def run_worker_locally(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worker", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=worker_env(DATA_DIR=str(data_dir), HF_HUB_OFFLINE="1"))


def test_test_input_json_passes_as_runpod_runs_it(tmp_path):
    from_file = run_worker_locally(data_dir=tmp_path)  # no flag: runpod reads ./test_input.json
    assert from_file.returncode == 0, from_file.stdout[-3000:] + from_file.stderr[-3000:]
    assert "completed successfully" in from_file.stdout + from_file.stderr
    given = run_worker_locally("--test_input", (ROOT / "test_input.json").read_text(), "--rp_log_level", "WARN",
                               data_dir=tmp_path)
    assert given.returncode == 0, given.stdout[-3000:] + given.stderr[-3000:]
    assert not list((tmp_path / "jobs").iterdir())


def test_an_error_result_fails_a_local_test_run(tmp_path):
    failed = run_worker_locally("--test_input", json.dumps({"input": {"dataset": {"path": "demo"}}}),
                                data_dir=tmp_path)
    assert failed.returncode == 1
    assert "config.model_name" in failed.stdout + failed.stderr


def test_the_worker_process_imports_no_torch_gradio_or_simpletuner():
    probe = ("import sys, runpod, worker.__main__, worker.handler, core.pipeline, core.training.resume\n"
             "heavy = {'torch', 'gradio', 'simpletuner', 'diffusers', 'transformers', 'accelerate'}\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=worker_env())
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_runpod_hub_listing_is_complete():
    hub = json.loads((ROOT / ".runpod" / "hub.json").read_text())
    assert hub["type"] == "serverless" and hub["category"] == "image" and hub["title"] and hub["description"]
    config = hub["config"]
    assert config["runsOn"] == "GPU" and config["gpuCount"] >= 1 and config["containerDiskInGb"] >= 40
    assert config["allowedCudaVersions"] and all(
        tuple(map(int, v.split("."))) >= (13, 0) for v in config["allowedCudaVersions"])
    keys = {entry["key"] for entry in config["env"]}
    assert {"HF_TOKEN", "BUCKET_ENDPOINT_URL", "BUCKET_ACCESS_KEY_ID", "BUCKET_SECRET_ACCESS_KEY",
            "BUCKET_NAME"} <= keys
    presets = {preset["name"]: preset["defaults"] for preset in config["presets"]}
    families = set()
    for name, defaults in presets.items():
        assert set(defaults) <= keys, name
        endpoint = Settings.from_env({key: str(value) for key, value in defaults.items()})
        job = parse_job(with_defaults({"dataset": {"path": "demo"}, "dry_run": True}, job_defaults(endpoint)))
        families.add(job.model_family)
    assert {"flux", "sdxl"} <= families
    tests = json.loads((ROOT / ".runpod" / "tests.json").read_text())
    assert all(case["input"].get("dry_run") is True and case["timeout"] > 0 for case in tests["tests"])
    assert tests["config"]["gpuCount"] >= 1 and tests["config"]["allowedCudaVersions"]


def test_the_handler_runpod_gets_is_async_so_runpod_can_cancel_it():
    import inspect

    from worker.__main__ import lazy_handler, local_api
    from worker.handler import handler, local_api_handler

    for function in (handler, local_api_handler, lazy_handler("handler"), lazy_handler("local_api_handler")):
        assert inspect.iscoroutinefunction(function) and not inspect.isasyncgenfunction(function)
    assert local_api(["--rp_serve_api", "--rp_api_port", "8000"]) and not local_api(["--rp_log_level", "INFO"])
