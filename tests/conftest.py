"""Shared fixtures: the app env runs the tests; SimpleTuner runs in the trainer env as a subprocess."""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# No network but loopback: nothing may reach the Hub, telemetry or analytics from a test.
os.environ.update({
    "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1",
    "GRADIO_ANALYTICS_ENABLED": "False", "DO_NOT_TRACK": "1", "TRAINER_DEVICE": "cpu",
})
os.environ.pop("HF_TOKEN", None)
# The reuse cache of this test session: never the checkout's data/ folder, never an earlier session's entries.
# Jobs and the UI's run history of tests that do not name their own data folder: never the checkout's data/.
# Each test process (pytest -n) has its own: a test that checks what its own training cached must not find what the
# other process's training put there (its environment is inherited from the process that started it).
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
for _var, _prefix in (("CACHE_DIR", "trainer-test-cache-"), ("DATA_DIR", "trainer-test-data-")):
    if _WORKER or _var not in os.environ:
        os.environ[_var] = tempfile.mkdtemp(prefix=f"{_prefix}{_WORKER}-" if _WORKER else _prefix)
# Room the cache leaves on the disk: small, so a test machine with little free space still stores entries.
os.environ.setdefault("CACHE_MIN_FREE_GB", "0.5")
# The tiny models are built into the checkout's .cache/: a model root for the worker's jobs, as MODELS_ROOT is on an
# endpoint.
os.environ.setdefault("MODELS_ROOT", str(Path(__file__).resolve().parent.parent / ".cache"))

from core.generation.demo import build_tiny_model, write_demo_dataset  # noqa: E402
from core.settings import Settings  # noqa: E402

TINY_MODEL_DIR = ROOT / ".cache" / "tiny-sdxl"
TRAINER_ENV_FIXTURES = {"tiny_model", "tiny_family_model", "tiny_kontext", "trained_job", "trained_app"}
"""Fixtures the trainer env builds (torch writes the tiny models): a test using one needs that env."""


@pytest.hookimpl(tryfirst=True)  # before `-m` selects, so `make test-fast` leaves these out
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if TRAINER_ENV_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.trainer_env)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings.from_env()


@pytest.fixture(scope="session")
def tiny_model(settings: Settings) -> Path:
    """The tiny random SDXL model, built offline once per checkout (.cache/, ignored by git)."""
    return _built(TINY_MODEL_DIR, settings=settings, family="sdxl")


@pytest.fixture(scope="session")
def tiny_family_model(settings: Settings):
    """family (and a flavour, core.generation.demo.TINY_FLAVOURS) -> the tiny random model of that family
    (core.generation.demo.TINY_FAMILIES), built offline once per checkout into .cache/tiny-<family>[-<flavour>]
    (ignored by git)."""
    def build(family: str, flavour: str | None = None) -> Path:
        name = f"tiny-{family}-{flavour}" if flavour else f"tiny-{family}"
        return _built(ROOT / ".cache" / name, settings=settings, family=family, flavour=flavour)
    return build


@pytest.fixture(scope="session")
def tiny_kontext(settings: Settings) -> Path:
    """The tiny FLUX.1 Kontext (an edit model: it trains on pairs), built offline once per checkout."""
    return _built(ROOT / ".cache" / "tiny-flux-kontext", settings=settings, family="flux", flavour="kontext")


def _built(out: Path, *, settings: Settings, family: str, flavour: str | None = None) -> Path:
    """build_tiny_model, or a skip that says why when there is no trainer env to build with."""
    if not (out / "model_index.json").exists() and not settings.trainer_python.exists():
        pytest.skip(f"needs the trainer env ({settings.trainer_venv}, `make setup`) to build the tiny {family} model")
    return build_tiny_model(out, settings=settings, family=family, flavour=flavour)


@pytest.fixture
def demo_dataset(tmp_path: Path) -> Path:
    return write_demo_dataset(tmp_path / "demo-dataset", count=6)


def tiny_job(model: Path, dataset: Path, **overrides) -> dict:
    """A job that trains the tiny model on CPU in well under a minute."""
    job = {
        "dataset": {"path": str(dataset)},
        "config": {"model_family": "sdxl", "model_name": str(model), "resolution": 128, "max_train_steps": 10,
                   "checkpointing_steps": 5, "lora_rank": 4, "seed": 42},
        "dataloader": {"minimum_image_size": 64},
        "trigger_word": "sks",
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(job.get(key), dict):
            job[key] = {**job[key], **value}
        else:
            job[key] = value
    return job


@pytest.fixture(scope="session")
def trained_job(tmp_path_factory, tiny_model: Path, settings: Settings):
    """One real training of the tiny model through run_job: (JobResult, events). Shared by every test that
    needs a trained LoRA (publishing, faces), so the suite trains as few times as it can."""
    from core.pipeline import run_job
    from core.spec.job import parse_job

    base = tmp_path_factory.mktemp("trained")
    dataset = write_demo_dataset(base / "dataset-src", count=6)
    events: list = []
    job = tiny_job(tiny_model, dataset, config={"validation_prompt": "sks a red circle", "validation_steps": 10,
                                                "validation_resolution": 128, "validation_num_inference_steps": 4})
    result = run_job(parse_job(job), base / "job", events.append, settings=settings)
    return result, events


@pytest.fixture
def trained_copy(trained_job, tmp_path: Path):
    """A copy of the session's trained run (its JobResult rebased onto the copy), for a test that publishes it: a
    publish names the ComfyUI file after the repo, which would rename the shared run's file under other tests."""
    import dataclasses
    import shutil

    result, _ = trained_job
    job = tmp_path / "trained-copy"
    shutil.copytree(result.job_dir, job, ignore=shutil.ignore_patterns("dataset", "cache"))

    def moved(path: Path | None) -> Path | None:
        return job / path.relative_to(result.job_dir) if path is not None else None

    return dataclasses.replace(result, job_dir=job, output_dir=moved(result.output_dir),
                               lora_path=moved(result.lora_path), log_path=moved(result.log_path),
                               comfyui_path=moved(result.comfyui_path),
                               checkpoints=[moved(p) for p in result.checkpoints])


@dataclass
class TrainedApp:
    """The UI after one training from its Train tab: what the Start button answered, twice, and the run's status."""

    ui: Any
    url: str
    started: Any
    """What /start_training answered."""
    second_start: str | None
    """The error of a second /start_training sent while the first run trained (None: it was accepted)."""
    status: dict
    """/run_status once the run ended."""


@pytest.fixture(scope="session")
def trained_app(tmp_path_factory, tiny_model: Path):
    """The app launched in this process, after one real training from its Train tab (the Tiny demo preset: 10
    steps, checkpoints at 5 and 10, a validation image): shared by the UI tests that need a trained run
    (tests/test_app_api.py, tests/test_playground_tab.py), so the UI trains once. Each test talks to it through its
    own gradio_client."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    from tests.test_app_api import launch, tiny_preset_form, wait_for

    ui, url = launch(tmp_path_factory.mktemp("trained-app-data"), tiny_model)
    try:
        client = Client(url, verbose=False, download_files=False)
        values = tiny_preset_form(client, trigger="sks")
        started = client.predict(**values, api_name="/start_training")
        try:
            client.predict(**values, api_name="/start_training")
            second_start = None
        except AppError as error:
            second_start = str(error)
        status = wait_for(lambda: (s := client.predict(api_name="/run_status"))["status"] != "running" and s,
                          timeout_s=300, what="the training to end")
        yield TrainedApp(ui=ui, url=url, started=started, second_start=second_start, status=status)
    finally:
        ui.registry.shutdown()
        ui.blocks.close()
