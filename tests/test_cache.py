"""The cache on the volume (core/cache/store.py and its users): entries written whole or not at all, LRU eviction within
CACHE_MAX_GB, a staged dataset reused from a URL whose content did not change and staged again when anything that
matters changed, SimpleTuner's cache folders keyed by what changes them (and not by the learning rate), `cache:
false`, what the result says, and the base model downloading while the dataset does. (A second real training that takes
SimpleTuner's text embeddings and buckets from the cache is test_durability.py's resumed run.)"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import zipfile
from pathlib import Path

import pytest

from core.cache.buckets import TrainerCaches, plan, restore, store
from core.cache.datasets import stage_dataset_cached, url_key
from core.cache.store import Cache
from core.dataset.stage import CaptionOptions, Manifest
from core.errors import SetupError, SpecError
from core.settings import Settings
from core.spec.job import DatasetSpec, parse_job
from core.training.config import build_trainer_files
from tests.conftest import tiny_job
from tests.support.http_server import serve_files
from tests.support.loopback import LoopbackServer, QuietHandler, serving

MB = 1024 * 1024


def _settings(tmp_path: Path, **changes) -> Settings:
    env = {"DATA_DIR": str(tmp_path / "data"), "CACHE_DIR": str(tmp_path / "cache"), "ALLOW_PRIVATE_URLS": "1",
           "TRAINER_DEVICE": "cpu", **changes}
    return Settings.from_env(env)


def _zip(folder: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w") as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, f"set/{path.name}")
    return out


# -- the store ----------------------------------------------------------------------------------------------------


def test_an_entry_appears_whole_or_not_at_all(tmp_path: Path):
    cache = Cache(tmp_path / "c", max_bytes=10 * MB)
    with pytest.raises(RuntimeError), cache.writing("dataset", "abc123") as folder:
        (folder / "half.bin").write_bytes(b"x" * 1000)
        raise RuntimeError("the job crashed while writing")
    assert cache.lookup("dataset", "abc123") is None
    assert not list((tmp_path / "c").rglob("half.bin"))  # nothing left behind, not even in tmp/

    with cache.writing("dataset", "abc123", build_s=4.0) as folder:
        (folder / "a.bin").write_bytes(b"y" * 1000)
    entry = cache.lookup("dataset", "abc123")
    assert entry is not None and (entry.data / "a.bin").read_bytes() == b"y" * 1000 and entry.build_s == 4.0

    (entry.data / "a.bin").write_bytes(b"y" * 10)  # damaged: a later job must not trust it
    assert cache.lookup("dataset", "abc123") is None
    assert not (tmp_path / "c" / "entries" / "dataset" / "abc123").exists()


def test_the_least_recently_used_entries_go_first_when_the_cache_is_full(tmp_path: Path):
    cache = Cache(tmp_path / "c", max_bytes=2500)
    for key in ("one", "two", "three"):
        with cache.writing("dataset", key) as folder:
            (folder / "data.bin").write_bytes(os.urandom(1000))
        time.sleep(0.02)
    assert cache.lookup("dataset", "one") is None  # three entries do not fit: the oldest went
    assert cache.lookup("dataset", "two") is not None  # used now: "three" is the least recent
    time.sleep(0.02)
    with cache.writing("dataset", "four") as folder:
        (folder / "data.bin").write_bytes(os.urandom(1000))
    assert [cache.lookup("dataset", k) is not None for k in ("two", "three", "four")] == [True, False, True]
    assert cache.usage().entries == 2 and cache.usage().bytes == 2000
    with cache.writing("dataset", "huge") as folder:  # over the whole limit: not kept
        (folder / "data.bin").write_bytes(os.urandom(3000))
    assert cache.lookup("dataset", "huge") is None and cache.usage().entries == 2


def test_the_limit_and_the_folder_come_from_the_environment(tmp_path: Path):
    settings = _settings(tmp_path, CACHE_MAX_GB="0.5")
    cache = Cache.from_settings(settings)
    assert cache.root == tmp_path / "cache" and cache.max_bytes == 512 * MB
    assert Cache.from_settings(Settings.from_env({"DATA_DIR": str(tmp_path / "d"), "VOLUME_DIR": ""})).root in (
        tmp_path / "d" / "cache", Path("/runpod-volume/trainer-cache"))
    with pytest.raises(Exception, match="CACHE_MAX_GB"):
        Settings.from_env({"CACHE_MAX_GB": "lots"})
    assert "CACHE_MAX_GB" in cache.usage().line()


# -- the dataset --------------------------------------------------------------------------------------------------


def test_a_dataset_url_is_staged_once_and_reused_until_its_content_changes(tmp_path: Path, demo_dataset: Path):
    served = tmp_path / "served"
    served.mkdir()
    archive = _zip(demo_dataset, served / "data.zip")
    settings = _settings(tmp_path)
    cache = Cache.from_settings(settings)
    captions = CaptionOptions(trigger_word="sks")

    with serve_files(served) as server:
        dataset = DatasetSpec(url=server.url("data.zip"))

        def stage(name: str, **options) -> tuple[Manifest, object]:
            return stage_dataset_cached(dataset, tmp_path / name, settings=settings, cache=cache,
                                        captions=options.get("captions", captions))

        first, reuse1 = stage("job1")
        gets = [r for r in server.requests if r[0] == "GET" and r[2] is None]
        second, reuse2 = stage("job2")
        assert (reuse1.status, reuse2.status) == ("stored", "reused")
        assert [r for r in server.requests if r[0] == "GET" and r[2] is None] == gets  # not downloaded again
        assert [(e.path.name, e.caption, e.width) for e in second.images] == \
               [(e.path.name, e.caption, e.width) for e in first.images]
        assert all(e.path.is_file() and e.path.parent == tmp_path / "job2" / "images" for e in second.images)
        assert second.images[0].path.with_suffix(".txt").read_text().startswith("sks")

        # Each change that matters misses: the caption options, then the content behind the same URL.
        assert stage("job3", captions=CaptionOptions(trigger_word="xyz"))[1].status == "stored"
        with zipfile.ZipFile(archive, "a") as more:
            more.writestr("set/extra.txt", "a caption without an image")
        os.utime(archive, (time.time() + 5, time.time() + 5))
        assert stage("job4")[1].status == "stored"
        assert stage_dataset_cached(dataset, tmp_path / "job5", settings=settings, cache=None,
                                    captions=captions)[1].status == "off"


def test_a_reused_jobs_caption_edits_never_reach_the_cache(tmp_path: Path, demo_dataset: Path):
    """Captions are hard-linked from the cache like the images; auto-captioning (here from the caption cache, through
    the stage's own writer) gives the job new captions and leaves the entry and the other job as they were."""
    from core.cache.captions import keep_captions, model_identity, run_key
    from core.generation.captioning import CAPTION_SCRIPT, caption_manifest
    from core.spec.captioning import CaptioningSpec

    settings = _settings(tmp_path)
    cache = Cache.from_settings(settings)
    captions = CaptionOptions(trigger_word="sks")
    dataset = DatasetSpec(path=str(demo_dataset))
    first, _ = stage_dataset_cached(dataset, tmp_path / "job1", settings=settings, cache=cache, captions=captions)
    second, reuse = stage_dataset_cached(dataset, tmp_path / "job2", settings=settings, cache=cache,
                                         captions=captions)
    assert reuse.status == "reused"
    texts = lambda manifest: [e.path.with_suffix(".txt").read_text() for e in manifest.images]  # noqa: E731
    before = texts(first)
    assert texts(second) == before
    assert os.stat(second.images[0].path.with_suffix(".txt")).st_nlink > 1  # linked, not copied

    model = tmp_path / "captioner"
    model.mkdir()
    (model / "config.json").write_text("{}")
    captioning = CaptioningSpec(model=str(model), mode="all")
    hashes = [hashlib.sha256(e.path.read_bytes()).hexdigest() for e in second.images]
    identity = model_identity(str(model), hub_cache=tmp_path / "hf")
    assert identity is not None
    keep_captions(cache, run_key(captioning, model=identity, script=CAPTION_SCRIPT, images=hashes),
                  dict.fromkeys(hashes, "a generated caption"), build_s=1.0)
    report = caption_manifest(second, captioning, captions=captions, settings=settings, cache=cache)
    assert report.from_cache and report.images_captioned == len(second.images)
    assert all("a generated caption" in text for text in texts(second))
    assert texts(first) == before
    third, _ = stage_dataset_cached(dataset, tmp_path / "job3", settings=settings, cache=cache, captions=captions)
    assert texts(third) == before


class _Unversioned(QuietHandler):
    """Serves the server's `body` with neither ETag nor Last-Modified (nor Range): nothing names its version."""

    server: _UnversionedServer

    def do_GET(self) -> None:
        if self.headers.get("Range") is None:  # not the one-byte probe that asks for a version
            self.server.gets += 1
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        self.wfile.write(self.server.body)


class _UnversionedServer(LoopbackServer):
    def __init__(self, body: bytes):
        super().__init__(_Unversioned)
        self.body, self.gets = body, 0


def test_a_url_without_etag_is_downloaded_again_but_staged_once_per_content(tmp_path: Path, demo_dataset: Path):
    settings = _settings(tmp_path)
    cache = Cache.from_settings(settings)
    captions = CaptionOptions(trigger_word="sks")
    archive = _zip(demo_dataset, tmp_path / "data.zip")
    with serving(_UnversionedServer(archive.read_bytes()), name="unversioned") as server:
        dataset = DatasetSpec(url=f"{server.base}/data.zip")

        def stage(name: str) -> tuple[Manifest, object]:
            return stage_dataset_cached(dataset, tmp_path / name, settings=settings, cache=cache, captions=captions)

        first, reuse1 = stage("job1")
        second, reuse2 = stage("job2")
        assert (reuse1.status, reuse2.status) == ("stored", "reused")
        assert server.gets == 2  # nothing says the content is the same: it is fetched, then recognised by its hash
        assert [(e.path.name, e.caption) for e in second.images] == [(e.path.name, e.caption) for e in first.images]
        assert second.source == first.source and "data.zip" in second.source and str(tmp_path) not in second.source
        assert all(e.path.is_file() and e.path.parent == tmp_path / "job2" / "images" for e in second.images)
        assert not (tmp_path / "job2" / "_download").exists()  # the download is not left beside the images

        # Other bytes behind the same URL: staged afresh.
        with zipfile.ZipFile(archive, "a") as more:
            more.writestr("set/extra.txt", "a caption without an image")
        server.body = archive.read_bytes()
        assert stage("job3")[1].status == "stored"
        assert stage("job4")[1].status == "reused" and server.gets == 4


def test_signatures_are_not_part_of_a_url_key():
    signed = "https://b.s3.amazonaws.com/d.zip?X-Amz-Signature=abc&X-Amz-Credential=k&X-Amz-Date=1&v=2"
    assert url_key(signed) == url_key("https://b.s3.amazonaws.com/d.zip?v=2&X-Amz-Signature=zzz")
    assert url_key(signed) != url_key("https://b.s3.amazonaws.com/d.zip?v=3")
    assert "abc" not in url_key("https://user:abc@host/d.zip")


# -- SimpleTuner's caches -------------------------------------------------------------------------------------------


def _keys(tmp_path: Path, model: Path, dataset: Path, settings: Settings, **overrides) -> dict[str, str]:
    from core.dataset.stage import stage_dataset
    from core.jobdir import JobDir

    spec = parse_job(tiny_job(model, dataset, **overrides))
    job = JobDir(tmp_path / f"job-{len(list(tmp_path.glob('job-*')))}").create()
    manifest = stage_dataset(spec.dataset, job.dataset, settings=settings,
                             captions=CaptionOptions(trigger_word=spec.trigger_word))
    files = build_trainer_files(spec, images_dir=manifest.root, job=job, device="cuda")
    from core.cache.datasets import image_hashes

    caches = plan(spec, files.backends, manifest, images=image_hashes(manifest), settings=settings)
    return {item.kind: item.key for item in caches.dirs}


def test_text_embeddings_and_latents_are_keyed_by_what_changes_them(tmp_path: Path, tiny_model: Path,
                                                                   demo_dataset: Path):
    settings = _settings(tmp_path)
    base = _keys(tmp_path, tiny_model, demo_dataset, settings)
    assert set(base) == {"text_embeds", "vae_latents", "buckets"}
    assert _keys(tmp_path, tiny_model, demo_dataset, settings, config={"learning_rate": 3e-4, "lora_rank": 8}) == base
    other_caption = _keys(tmp_path, tiny_model, demo_dataset, settings, trigger_word="zqx")
    assert other_caption["text_embeds"] != base["text_embeds"] and other_caption["vae_latents"] == base["vae_latents"]
    other_size = _keys(tmp_path, tiny_model, demo_dataset, settings, config={"resolution": 64})
    assert other_size["vae_latents"] != base["vae_latents"] and other_size["text_embeds"] == base["text_embeds"]
    cropped = _keys(tmp_path, tiny_model, demo_dataset, settings, dataloader={"crop": True})
    assert cropped["vae_latents"] != base["vae_latents"]
    precision = _keys(tmp_path, tiny_model, demo_dataset, settings, config={"mixed_precision": "fp16"})
    assert precision["text_embeds"] != base["text_embeds"] and precision["vae_latents"] != base["vae_latents"]

    changed_images = tmp_path / "changed"
    shutil.copytree(demo_dataset, changed_images)
    first = sorted(changed_images.glob("*.png"))[0]
    from PIL import Image

    Image.new("RGB", (128, 128), "white").save(first)
    other_images = _keys(tmp_path, tiny_model, changed_images, settings)
    assert other_images["vae_latents"] != base["vae_latents"] and other_images["text_embeds"] == base["text_embeds"]

    other_model = tmp_path / "model-copy"
    shutil.copytree(tiny_model, other_model)
    (other_model / "text_encoder" / "config.json").write_text(
        json.dumps({**json.loads((tiny_model / "text_encoder" / "config.json").read_text()), "x": 1}))
    changed_model = _keys(tmp_path, other_model, demo_dataset, settings)
    assert changed_model["text_embeds"] != base["text_embeds"]


def test_a_simpletuner_cache_folder_is_kept_after_training_and_linked_into_the_next_job(tmp_path: Path):
    cache = Cache(tmp_path / "c", max_bytes=10 * MB)
    made = tmp_path / "job1" / "cache" / "text"
    made.mkdir(parents=True)
    for index in range(3):
        (made / f"{index:032x}-sdxl.pt").write_bytes(os.urandom(100))
    store(TrainerCaches(dirs=[_dir(made)]), cache, build_s=12.0)
    again = tmp_path / "job2" / "cache" / "text"
    reused = restore(TrainerCaches(dirs=[_dir(again)]), cache)
    assert reused.reused("text_embeds") == 3 and reused.saved_s == 12.0
    assert sorted(p.read_bytes() for p in again.iterdir()) == sorted(p.read_bytes() for p in made.iterdir())
    assert restore(TrainerCaches(dirs=[_dir(tmp_path / "x", key="other")]), cache).reused("text_embeds") == 0


def _dir(folder: Path, key: str = "k1"):
    from core.cache.buckets import CacheDir

    return CacheDir("text_embeds", key, folder)


# -- the job ------------------------------------------------------------------------------------------------------


def test_cache_is_a_boolean_job_field():
    with pytest.raises(SpecError) as caught:
        parse_job({"dataset_url": "https://x/y.zip", "config": {"model_name": "a/b-xl"}, "cache": "sometimes"})
    assert caught.value.field == "cache"


def test_a_second_dry_run_reuses_the_dataset_and_says_so(tmp_path: Path, tiny_model: Path, demo_dataset: Path):
    from core.pipeline import check_job

    settings = _settings(tmp_path)
    served = tmp_path / "served"
    served.mkdir()
    _zip(demo_dataset, served / "data.zip")
    with serve_files(served) as server:
        job = {**tiny_job(tiny_model, demo_dataset), "dataset": {"url": server.url("data.zip")}}
        first = check_job(parse_job(job), tmp_path / "j1", settings=settings)
        second = check_job(parse_job({**job, "config": {**job["config"], "learning_rate": 5e-4}}), tmp_path / "j2",
                           settings=settings)
        off = check_job(parse_job({**job, "cache": False}), tmp_path / "j3", settings=settings)
    assert first.to_output()["cache"]["dataset"] == "stored"
    assert second.to_output()["cache"]["dataset"] == "reused" and second.preflight == first.preflight
    assert "cache" not in off.to_output()


def test_the_base_model_downloads_while_the_dataset_does(tmp_path: Path, tiny_model: Path, demo_dataset: Path):
    """Both over links of the same bandwidth, each about 2.5 s: the job waits for the longer, not for the sum."""
    from core.events import DownloadProgress, StageEvent
    from core.pipeline import run_job
    from tests.support.hub_server import running_hub_server
    from tests.support.throttle import throttled

    rate = 4 * MB
    model_files = {p.relative_to(tiny_model).as_posix(): p.read_bytes() for p in tiny_model.rglob("*") if p.is_file()}
    model_bytes = sum(len(data) for data in model_files.values())
    served = tmp_path / "served"
    served.mkdir()
    archive = _zip(demo_dataset, served / "data.zip")
    with zipfile.ZipFile(archive, "a") as padded:  # the same download time as the model
        padded.writestr("set/padding.bin", os.urandom(max(model_bytes - archive.stat().st_size, 0)))
    settings = _settings(tmp_path, TRAINER_ONLINE="1", HF_HOME=str(tmp_path / "hf"))
    with running_hub_server(tmp_path) as hub, serve_files(served) as files:
        hub.add_repo("tester/tiny-sdxl", files=model_files, private=False)
        hub_port = int(hub.endpoint.rsplit(":", 1)[1])
        files_port = int(files.base.rsplit(":", 1)[1])
        with throttled(hub_port, bytes_per_s=rate) as hub_link, throttled(files_port, bytes_per_s=rate) as data_link:
            os.environ["HF_ENDPOINT"] = hub_link.base  # restored by running_hub_server
            events: list = []
            cancel = __import__("threading").Event()

            def sink(event) -> None:
                events.append((time.monotonic(), event))
                if isinstance(event, StageEvent) and event.stage == "train":
                    cancel.set()  # the downloads are what is measured

            job = {**tiny_job(tiny_model, demo_dataset, config={"model_name": "tester/tiny-sdxl"}),
                   "dataset": {"url": f"{data_link.base}/data.zip"}}
            started = time.monotonic()
            with pytest.raises(Exception, match="cancel"):
                run_job(parse_job(job), tmp_path / "job", sink, settings=settings, cancel=cancel)
    def when(stage: str, status: str) -> float:
        return next(t for t, e in events if isinstance(e, StageEvent) and e.stage == stage and e.status == status)

    each = model_bytes / rate
    took = when("model", "completed") - started
    # Timing on a shared 2-core machine is the benchmark's business (printed here); what cannot be flaky: the model's
    # bytes were coming in while the dataset was still downloading, and the status said both.
    print(f"two downloads of {each:.1f}s each over their own links: the job had both after {took:.1f}s "
          f"({took / each:.2f}x the longer, {took / (2 * each):.2f}x their sum)")
    combined = [(t, e) for t, e in events if isinstance(e, DownloadProgress) and " + " in e.source]
    assert combined and "tester/tiny-sdxl" in combined[-1][1].source and "data.zip" in combined[-1][1].source
    model_bytes_seen = [t for t, e in combined if e.bytes_done > 0]
    assert model_bytes_seen and model_bytes_seen[0] < when("dataset", "completed") - 0.5 * each


def _store(cache: Cache, key: str, size: int = 1000) -> None:
    with cache.writing("dataset", key) as data:
        (data / "images.bin").write_bytes(b"x" * size)


def test_the_cache_keeps_its_free_space_floor_on_the_disk(tmp_path: Path):
    """A volume the cache fills leaves no room for a job's outputs: past the floor the least recently used entries go,
    and an entry that would leave less free space is not stored (a miss, never a failed job)."""
    root = tmp_path / "cache"
    _store(Cache(root, max_bytes=10**9, min_free_bytes=0), "a" * 40)
    assert Cache(root, max_bytes=10**9, min_free_bytes=0).lookup("dataset", "a" * 40) is not None

    beyond = shutil.disk_usage(tmp_path).free + 10**12  # more free space than this disk will ever have
    settings = Settings.from_env({"CACHE_DIR": str(root), "CACHE_MIN_FREE_GB": str(beyond / 1024**3)})
    tight = Cache.from_settings(settings)
    _store(tight, "b" * 40)
    assert tight.lookup("dataset", "b" * 40) is None
    assert tight.lookup("dataset", "a" * 40) is None  # gone first, to make room
    assert [p.name for p in (root / "tmp").iterdir()] == []  # nothing half-written left behind
    assert tight.usage().entries == 0


def test_without_a_floor_set_the_cache_leaves_a_tenth_of_its_disk(tmp_path: Path):
    total, _, free = shutil.disk_usage(tmp_path)
    settings = Settings.from_env({"CACHE_DIR": str(tmp_path / "cache")})
    assert settings.cache_min_free_gb is None
    cache = Cache.from_settings(settings)
    _store(cache, "c" * 40)
    assert (cache.lookup("dataset", "c" * 40) is not None) == (free - 1000 >= total // 10)
    with pytest.raises(SetupError, match="CACHE_MIN_FREE_GB"):
        Settings.from_env({"CACHE_MIN_FREE_GB": "lots"})


class _SlowHeaders(QuietHandler):
    """Answers with a status line, then one byte of a header every 0.3 s: a read timeout never fires."""

    def do_GET(self) -> None:
        self.server.asked.append(time.monotonic())  # type: ignore[attr-defined]
        try:
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while not self.server.closing.wait(0.3):  # type: ignore[attr-defined]
                self.wfile.write(b"z")
                self.wfile.flush()
        except OSError:
            return  # the client hung up


@pytest.fixture
def slow_headers():
    import threading

    server = LoopbackServer(_SlowHeaders)
    server.asked, server.closing = [], threading.Event()  # type: ignore[attr-defined]
    with serving(server, name="slow-headers"):
        try:
            yield server
        finally:
            server.closing.set()  # type: ignore[attr-defined]


def test_the_caches_probe_of_a_url_that_trickles_its_headers_is_a_miss_within_its_budget(tmp_path, slow_headers):
    from core.adapters.fetch import probe

    settings = Settings.from_env({"ALLOW_PRIVATE_URLS": "1"})
    started = time.monotonic()
    assert probe(f"{slow_headers.base}/data.zip", settings=settings, budget_s=1.0) is None
    assert time.monotonic() - started < 4


def test_a_job_whose_dataset_url_trickles_its_headers_ends_at_its_time_limit(tmp_path, slow_headers):
    """The request that keys the cache obeys the job's deadline like the download does: `timeout_s: 3` ends as
    `timeout` within seconds, not when the server gives up."""
    from core.errors import JobTimeout
    from core.pipeline import run_job

    settings = Settings.from_env({"ALLOW_PRIVATE_URLS": "1", "DATA_DIR": str(tmp_path / "data"),
                                  "CACHE_DIR": str(tmp_path / "cache")})
    job = {"dataset_url": f"{slow_headers.base}/data.zip", "timeout_s": 3,
           "config": {"model_family": "sdxl", "model_name": "stabilityai/stable-diffusion-xl-base-1.0"}}
    started = time.monotonic()
    with pytest.raises(JobTimeout) as caught:
        run_job(parse_job(job), tmp_path / "job", settings=settings)
    assert time.monotonic() - started < 8
    assert caught.value.code == "timeout" and caught.value.stage == "dataset"
    assert slow_headers.asked  # the server was asked and never finished its headers


# -- a dataset of clips ---------------------------------------------------------------------------------------------


def _clip_set(folder: Path) -> Path:
    from PIL import Image

    from tests.support.clips import write_clip

    for index, frames in enumerate((9, 13)):
        write_clip(folder / f"clip{index}.mp4", frames=frames, caption=f"a bar, take {index}")
    write_clip(folder / "run.webm", frames=17, codec="libvpx-vp9", caption="a bar running")
    Image.new("RGB", (64, 64), "red").save(folder / "still.png")
    (folder / "broken.mp4").write_bytes(b"\x00" * 64)
    return folder


def _clip_facts(manifest: Manifest) -> list[tuple]:
    return [(c.path.name, c.caption, c.width, c.height, c.frames, c.fps, c.duration_s, c.codec, c.caption_source)
            for c in manifest.clips]


def test_a_clip_dataset_is_staged_once_and_the_next_job_reuses_its_clips(tmp_path: Path):
    served = tmp_path / "served"
    served.mkdir()
    _zip(_clip_set(tmp_path / "src"), served / "clips.zip")
    settings = _settings(tmp_path)
    cache = Cache.from_settings(settings)
    with serve_files(served) as server:
        dataset = DatasetSpec(url=server.url("clips.zip"))
        first, stored = stage_dataset_cached(dataset, tmp_path / "job1", settings=settings, cache=cache,
                                             captions=CaptionOptions(trigger_word="sks"))
        downloads = [r for r in server.requests if r[0] == "GET" and r[2] is None]  # not the 1-byte probes
        second, reused = stage_dataset_cached(dataset, tmp_path / "job2", settings=settings, cache=cache,
                                              captions=CaptionOptions(trigger_word="sks"))
        assert [r for r in server.requests if r[0] == "GET" and r[2] is None] == downloads  # no second download
    assert (stored.status, reused.status) == ("stored", "reused")
    assert len(first.clips) == 3 and _clip_facts(second) == _clip_facts(first)
    assert [(e.path.name, e.caption) for e in second.images] == [(e.path.name, e.caption) for e in first.images]
    assert second.skipped == first.skipped and [s.reason for s in second.skipped] == ["not a decodable video"]
    assert second.clips_root == tmp_path / "job2" / "clips"
    for clip, before in zip(second.clips, first.clips, strict=True):
        assert clip.path.parent == second.clips_root and clip.path.read_bytes() == before.path.read_bytes()
        assert clip.path.with_suffix(".txt").read_text() == f"{clip.caption}\n"
    assert reused.clips == stored.clips and set(reused.clips) == {c.path.name for c in first.clips}
    # A changed clip behind the same URL is another dataset.
    from tests.support.clips import write_clip

    write_clip(tmp_path / "src" / "clip0.mp4", frames=11)
    _zip(tmp_path / "src", served / "clips.zip")
    os.utime(served / "clips.zip", (time.time() + 5, time.time() + 5))
    with serve_files(served) as server:
        third, again = stage_dataset_cached(DatasetSpec(url=server.url("clips.zip")), tmp_path / "job3",
                                            settings=settings, cache=cache, captions=CaptionOptions(trigger_word="sks"))
    assert again.status == "stored" and [c.frames for c in third.clips] == [11, 13, 17]


def test_a_second_dry_run_of_a_clip_job_reuses_the_dataset_and_reports_the_same_clips(tmp_path: Path):
    from core.pipeline import check_job
    from tests.test_video_training import wan_job

    settings = _settings(tmp_path)
    served = tmp_path / "served"
    served.mkdir()
    _zip(_clip_set(tmp_path / "src"), served / "clips.zip")
    with serve_files(served) as server:
        job = {**wan_job(video={"num_frames": 9}), "dataset": {"url": server.url("clips.zip")}}
        first = check_job(parse_job(job), tmp_path / "j1", settings=settings)
        gets = sum(1 for r in server.requests if r[0] == "GET" and r[2] is None)
        second = check_job(parse_job({**job, "config": {**job["config"], "learning_rate": 5e-4}}), tmp_path / "j2",
                           settings=settings)
        assert sum(1 for r in server.requests if r[0] == "GET" and r[2] is None) == gets == 1
    assert (first.to_output()["cache"]["dataset"], second.to_output()["cache"]["dataset"]) == ("stored", "reused")
    assert second.preflight["clips"] == first.preflight["clips"] and second.preflight["clips"]["clips_usable"] == 3
    [video] = [b for b in second.trainer_files["multidatabackend.json"] if b.get("dataset_type") == "video"]
    assert video["instance_data_dir"] == str(tmp_path / "j2" / "dataset" / "clips")


# -- datasets with pairs, subsets and concepts ---------------------------------------------------------------------


def _zip_tree(folder: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, f"set/{path.relative_to(folder).as_posix()}")
    return out


def _gets(server) -> int:
    return len([r for r in server.requests if r[0] == "GET" and r[2] is None])


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.endswith(".json")}


def test_a_pair_dataset_is_kept_and_the_next_job_gets_its_inputs_and_the_same_pairs(tmp_path: Path):
    from PIL import Image

    source = tmp_path / "pairs"
    for index, size in enumerate(((160, 160), (192, 128), (128, 160))):
        (source / "control").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (200, 40, 40)).save(source / f"p{index}.png")
        Image.new("RGB", (size[0] // 2 * 2, size[1]), (40, 40, 200)).save(source / "control" / f"p{index}.png")
        (source / f"p{index}.txt").write_text(f"make p{index} red")
    served = tmp_path / "served"
    served.mkdir()
    _zip_tree(source, served / "pairs.zip")
    settings = _settings(tmp_path)
    cache = Cache.from_settings(settings)
    with serve_files(served) as server:
        dataset = DatasetSpec(url=server.url("pairs.zip"))
        first, stored = stage_dataset_cached(dataset, tmp_path / "j1" / "dataset", settings=settings, cache=cache)
        gets = _gets(server)
        second, reused = stage_dataset_cached(dataset, tmp_path / "j2" / "dataset", settings=settings, cache=cache)
        assert _gets(server) == gets  # not downloaded again
    assert (stored.status, reused.status) == ("stored", "reused")
    assert first.pairs is not None and second.pairs is not None
    assert [f.name for f in second.pairs.folders] == ["control"] and second.pairs.folders[0].parent == \
        tmp_path / "j2" / "dataset"
    assert (second.pairs.layout, second.pairs.sizes, second.pairs.looked_for) == \
        (first.pairs.layout, first.pairs.sizes, first.pairs.looked_for)
    assert [(e.path.name, e.caption) for e in second.images] == [(e.path.name, e.caption) for e in first.images]
    assert _tree(tmp_path / "j2" / "dataset" / "control") == _tree(tmp_path / "j1" / "dataset" / "control")
    assert len(_tree(tmp_path / "j2" / "dataset" / "control")) == 3


def _subsets_and_concepts(root: Path) -> Path:
    """Four images, a kohya concept folder of two, two regularisation and two held-out images, one mask."""
    from PIL import Image

    from core.generation.demo import write_demo_dataset

    write_demo_dataset(root, count=4)
    for folder, prefix in (("3_alice", "alice"), ("reg", "class"), ("eval", "held")):
        for path in write_demo_dataset(root / folder, count=2).iterdir():
            path.rename(path.with_name(path.name.replace("demo", prefix)))
    Image.new("L", (64, 64), 255).save(root / "demo_000.mask.png")
    return root


def test_a_dataset_with_reg_eval_masks_and_concepts_is_reused_with_the_same_preflight(tmp_path: Path,
                                                                                    tiny_model: Path):
    from core.pipeline import check_job

    served = tmp_path / "served"
    served.mkdir()
    _zip_tree(_subsets_and_concepts(tmp_path / "src"), served / "data.zip")
    settings = _settings(tmp_path)
    with serve_files(served) as server:
        job = {**tiny_job(tiny_model, tmp_path), "dataset": {"url": server.url("data.zip")}}
        first = check_job(parse_job(job), tmp_path / "j1", settings=settings)
        gets = _gets(server)
        second = check_job(parse_job(job), tmp_path / "j2", settings=settings)
        assert _gets(server) == gets  # not downloaded again
        other = check_job(parse_job({**job, "dataset": {**job["dataset"], "eval_share": 0.25, "eval_dir": "none"}}),
                          tmp_path / "j3", settings=settings)  # another split of the same source: its own entry
    assert (first.cache["dataset"], second.cache["dataset"], other.cache["dataset"]) == ("stored", "reused", "stored")
    subsets = second.preflight["subsets"]
    assert (subsets["regularisation_images"], subsets["eval_images"], subsets["masked_images"]) == (2, 2, 1)
    assert second.preflight == first.preflight
    assert other.preflight["subsets"]["eval_held_out"] == 2  # a quarter of the 8 images (eval/ is one of them)
    for folder in ("images", "reg", "eval", "masks"):
        assert _tree(tmp_path / "j2" / "dataset" / folder) == _tree(tmp_path / "j1" / "dataset" / folder), folder
    assert sorted(p.name for p in (tmp_path / "j2" / "dataset" / "images").iterdir()) == ["3_alice", "_main"]
    backends = {b["id"]: b for b in second.trainer_files["multidatabackend.json"]}
    assert backends["regularisation"]["instance_data_dir"] == str(tmp_path / "j2" / "dataset" / "reg")
    assert {"masks", "eval"} <= set(backends) and any(b.get("repeats") == 2 for b in backends.values())
