"""The models a job downloads from the Hub (core/models/prefetch.py), through run_job against the local fake Hub: the
caption model downloads while the dataset and the base model do, once, on one progress line with them; each model's
error belongs to the stage that needs it."""

from __future__ import annotations

import os
import threading
import time
import zipfile
from pathlib import Path

import pytest

from core.errors import JobError
from core.events import CaptionProgress, DownloadProgress, LogLine, StageEvent
from core.generation.demo import build_tiny_captioner
from core.pipeline import run_job
from core.settings import Settings
from core.spec.job import parse_job
from tests.conftest import tiny_job
from tests.support.http_server import serve_files
from tests.support.hub_server import running_hub_server
from tests.support.throttle import throttled
from tests.test_captioning import TINY_CAPTIONER_DIR, uncaptioned

MB = 1024 * 1024


@pytest.fixture(scope="session")
def captioner(settings: Settings) -> Path:
    return build_tiny_captioner(TINY_CAPTIONER_DIR, settings=settings)


def _settings(tmp_path: Path) -> Settings:
    return Settings.from_env({"DATA_DIR": str(tmp_path / "data"), "CACHE_DIR": str(tmp_path / "cache"),
                              "ALLOW_PRIVATE_URLS": "1", "TRAINER_DEVICE": "cpu", "TRAINER_ONLINE": "1",
                              "HF_HOME": str(tmp_path / "hf")})


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _zip(folder: Path, out: Path, *, size: int) -> Path:
    """The folder's files under set/, padded to about `size` bytes."""
    with zipfile.ZipFile(out, "w") as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, f"set/{path.name}")
        archive.writestr("set/padding.bin", os.urandom(max(size - sum(p.stat().st_size for p in folder.iterdir()), 0)))
    return out


def test_the_caption_model_downloads_once_while_the_dataset_and_the_base_model_do(tmp_path: Path, tiny_model: Path,
                                                                                 captioner: Path):
    """The base model and the caption model share one slow link to the Hub, the dataset has its own: the caption
    model is in the cache before the dataset is, the status line names all three downloads, and the caption stage
    captions with it without fetching it again."""
    rate = 8 * MB
    model_files, captioner_files = _files(tiny_model), _files(captioner)
    served = tmp_path / "served"
    served.mkdir()
    # The dataset takes about as long as both models over their link.
    _zip(uncaptioned(tmp_path / "images", count=6), served / "data.zip",
         size=sum(len(data) for data in (*model_files.values(), *captioner_files.values())))
    settings = _settings(tmp_path)
    events: list[tuple[float, object]] = []
    cancel = threading.Event()

    def sink(event) -> None:
        events.append((time.monotonic(), event))
        if isinstance(event, StageEvent) and (event.stage, event.status) == ("caption", "completed"):
            cancel.set()  # the downloads and the captions are what is checked: no training

    with running_hub_server(tmp_path) as hub, serve_files(served) as files:
        hub.add_repo("tester/tiny-sdxl", files=model_files, private=False)
        hub.add_repo("tester/tiny-captioner", files=captioner_files, private=False)
        with throttled(int(hub.endpoint.rsplit(":", 1)[1]), bytes_per_s=rate) as hub_link, \
                throttled(int(files.base.rsplit(":", 1)[1]), bytes_per_s=rate) as data_link:
            os.environ["HF_ENDPOINT"] = hub_link.base  # restored by running_hub_server
            job = tiny_job(tiny_model, tmp_path / "images", config={"model_name": "tester/tiny-sdxl"},
                           captioning={"model": "tester/tiny-captioner", "style": "short", "max_length": 12})
            job["dataset"] = {"url": f"{data_link.base}/data.zip"}
            with pytest.raises(JobError, match="cancel"):
                run_job(parse_job(job), tmp_path / "job", sink, settings=settings, cancel=cancel)
        weight_gets = hub.requests_to(r"tiny-captioner/resolve/.*model\.safetensors", method="GET")

    def when(stage: str, status: str) -> float:
        return next(t for t, e in events if isinstance(e, StageEvent) and (e.stage, e.status) == (stage, status))

    caption_in_cache = next(t for t, e in events if isinstance(e, LogLine)
                            and e.message.startswith("tester/tiny-captioner: ") and "downloaded" in e.message)
    print(f"the caption model was in the cache {caption_in_cache - when('dataset', 'started'):.1f}s after the "
          f"dataset stage started, which ended after {when('dataset', 'completed') - when('dataset', 'started'):.1f}s")
    assert caption_in_cache < when("dataset", "completed")
    lines = [e.source.split(" + ") for _, e in events if isinstance(e, DownloadProgress)]
    assert [f"{data_link.base}/data.zip", "tester/tiny-captioner", "tester/tiny-sdxl"] in [sorted(s) for s in lines]
    assert len(weight_gets) == 1  # the caption stage found it in the cache
    captioned = [e for _, e in events if isinstance(e, CaptionProgress)]
    assert captioned and captioned[-1].done == captioned[-1].total == 6
    assert when("caption", "started") > when("dataset", "completed")


def test_a_caption_model_error_fails_the_caption_stage_and_a_base_model_error_the_model_stage(
        tmp_path: Path, demo_dataset: Path):
    """Both downloads start with the dataset; each error waits for the stage that needs its model."""
    settings = _settings(tmp_path)

    def job(captioner: str, *, mode: str) -> dict:
        return tiny_job(tmp_path / "unused", demo_dataset, config={"model_name": "tester/no-such-sdxl"},
                        captioning={"model": captioner, "style": "short", "mode": mode})

    def failure(name: str, spec: dict) -> tuple[JobError, list[str]]:
        stages: list[str] = []

        def sink(event) -> None:
            if isinstance(event, StageEvent):
                stages.append(f"{event.stage} {event.status}")

        with pytest.raises(JobError) as caught:
            run_job(parse_job(spec), tmp_path / name, sink, settings=settings)
        return caught.value, stages

    with running_hub_server(tmp_path) as hub:
        hub.add_repo("tester/tiny-captioner", private=False,
                     files={"config.json": b"{}", "model.safetensors": os.urandom(4096)})
        unknown, unknown_stages = failure("a", job("tester/no-such-captioner", mode="all"))
        # Every image of the demo dataset has its caption: in mode missing the caption stage has nothing to do.
        known, known_stages = failure("b", job("tester/tiny-captioner", mode="missing"))
        asked = hub.requests_to(r"/api/models/tester/no-such-captioner")
    print(unknown.message, known.message, sep="\n")
    assert len(asked) == 1  # by the download that started with the dataset; the caption stage took its error
    assert (unknown.stage, unknown.field) == ("caption", "captioning.model")
    assert "tester/no-such-captioner" in unknown.message and "no-such-sdxl" not in unknown.message
    assert unknown_stages[-3:] == ["dataset completed", "caption started", "caption failed"]
    assert (known.stage, known.field) == ("model", "config.model_name") and "tester/no-such-sdxl" in known.message
    assert "caption completed" in known_stages and known_stages[-1] == "model failed"
