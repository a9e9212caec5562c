"""SimpleTuner's aspect-bucket files through the cache (core/cache/buckets.py): keyed by what changes them, kept
with the staged images folder as a placeholder, written back with the next job's folder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from core.cache.buckets import IMAGES_PLACEHOLDER, TrainerCaches, plan, restore, scan_seconds, store
from core.cache.datasets import image_hashes
from core.cache.reuse import describe
from core.cache.store import Cache
from core.dataset.stage import CaptionOptions, stage_dataset
from core.events import LogLine
from core.jobdir import JobDir
from core.settings import Settings
from core.spec.job import parse_job
from core.training.config import build_trainer_files
from tests.conftest import tiny_job

MODEL = "tester/tiny-sdxl"
"""A Hub id that is in no local Hugging Face cache: the text and VAE caches have no identity, the buckets need none."""


def _venv(tmp_path: Path, version: str) -> Path:
    """A trainer env as far as the key looks at it: SimpleTuner's package metadata folder."""
    venv = tmp_path / f"venv-{version}"
    (venv / "lib" / "python3.12" / "site-packages" / f"simpletuner-{version}.dist-info").mkdir(parents=True)
    return venv


def _settings(tmp_path: Path, *, version: str = "4.10.1") -> Settings:
    return Settings.from_env({"DATA_DIR": str(tmp_path / "data"), "CACHE_DIR": str(tmp_path / "cache"),
                              "TRAINER_DEVICE": "cpu", "TRAINER_VENV": str(_venv(tmp_path, version))})


def _job(tmp_path: Path, dataset: Path, settings: Settings, **overrides) -> TrainerCaches:
    """Stage `dataset` into a new job folder and plan its SimpleTuner caches as the pipeline does."""
    spec = parse_job(tiny_job(Path("/nonexistent"), dataset, **{"config": {"model_name": MODEL}, **overrides}))
    job = JobDir(tmp_path / f"job-{len(list(tmp_path.glob('job-*')))}").create()
    manifest = stage_dataset(spec.dataset, job.dataset, settings=settings,
                             captions=CaptionOptions(trigger_word=spec.trigger_word))
    files = build_trainer_files(spec, images_dir=manifest.root, job=job, device="cpu")
    return plan(spec, files.backends, manifest, images=image_hashes(manifest), settings=settings)


def _bucket_key(tmp_path: Path, dataset: Path, settings: Settings, **overrides) -> str:
    [buckets] = [item for item in _job(tmp_path, dataset, settings, **overrides).dirs if item.kind == "buckets"]
    return buckets.key


def _config(**changes) -> dict:
    return {"model_name": MODEL, **changes}


def test_aspect_buckets_are_keyed_by_what_changes_them(tmp_path: Path, demo_dataset: Path):
    settings = _settings(tmp_path)
    base = _bucket_key(tmp_path, demo_dataset, settings)
    # Not in the key: what SimpleTuner's bucket scan does not look at.
    assert _bucket_key(tmp_path, demo_dataset, settings, config=_config(learning_rate=3e-4, lora_rank=8, seed=7)) \
        == base
    assert _bucket_key(tmp_path, demo_dataset, settings, trigger_word="zqx") == base  # another caption

    changed = {
        "resolution": _bucket_key(tmp_path, demo_dataset, settings, config=_config(resolution=64)),
        "resolution_type": _bucket_key(tmp_path, demo_dataset, settings,
                                       config=_config(resolution_type="pixel_area")),
        "crop": _bucket_key(tmp_path, demo_dataset, settings, dataloader={"crop": True}),
        "minimum_image_size": _bucket_key(tmp_path, demo_dataset, settings, dataloader={"minimum_image_size": 32}),
        "aspect_bucket_rounding": _bucket_key(tmp_path, demo_dataset, settings,
                                              config=_config(aspect_bucket_rounding=1)),
        "train_batch_size": _bucket_key(tmp_path, demo_dataset, settings, config=_config(train_batch_size=2)),
        "model_family": _bucket_key(tmp_path, demo_dataset, settings,
                                    config=_config(model_family="flux", model_name="tester/tiny-flux")),
        "simpletuner": _bucket_key(tmp_path, demo_dataset, _settings(tmp_path / "other", version="4.11.0")),
    }
    other_images = tmp_path / "changed"
    shutil.copytree(demo_dataset, other_images)
    from PIL import Image

    Image.new("RGB", (128, 96), "white").save(sorted(other_images.glob("*.png"))[0])
    changed["an image"] = _bucket_key(tmp_path, other_images, settings)
    fewer = tmp_path / "fewer"
    shutil.copytree(demo_dataset, fewer)
    for path in sorted(fewer.glob("demo_005.*")):
        path.unlink()
    changed["one image less"] = _bucket_key(tmp_path, fewer, settings)
    assert {name: key for name, key in changed.items() if key == base} == {}
    assert len(set(changed.values())) == len(changed)


def test_no_bucket_entry_without_an_installed_simpletuner(tmp_path: Path, demo_dataset: Path):
    settings = Settings.from_env({"DATA_DIR": str(tmp_path / "data"), "CACHE_DIR": str(tmp_path / "cache"),
                                  "TRAINER_DEVICE": "cpu", "TRAINER_VENV": str(tmp_path / "no-venv")})
    assert not [item for item in _job(tmp_path, demo_dataset, settings).dirs if item.kind == "buckets"]


def _simpletuner_files(folder: Path, *, extra: dict | None = None) -> None:
    """What SimpleTuner 4.10.1 writes after scanning `folder` (as a real run wrote it, backend id `dataset`)."""
    paths = [os.path.join(folder, f"demo_{index:03d}.png") for index in range(6)]
    indices = {"config": {"resolution": 128, "crop": False, "instance_data_dir": str(folder)},
               "aspect_ratio_bucket_indices": {"1.0": paths},
               "filtering_statistics": {"total_processed": 6, "skipped": {"already_exists": 0}}, **(extra or {})}
    metadata = {path: {"original_size": [128, 128], "crop_coordinates": [0, 0], "target_size": [128, 128],
                       "intermediary_size": [128, 128], "aspect_ratio": 1.0} for path in paths}
    (folder / "aspect_ratio_bucket_indices_dataset.json").write_text(json.dumps(indices))
    (folder / "aspect_ratio_bucket_metadata_dataset.json").write_text(json.dumps(metadata))


def test_bucket_files_are_kept_with_a_placeholder_and_written_back_with_the_next_jobs_folder(
        tmp_path: Path, demo_dataset: Path):
    settings = _settings(tmp_path)
    cache = Cache.from_settings(settings)
    first = _job(tmp_path, demo_dataset, settings)
    [made] = [item for item in first.dirs if item.kind == "buckets"]
    _simpletuner_files(made.folder)
    store(first, cache, build_s=0.0)

    [entry] = (settings.cache_dir / "entries" / "buckets").iterdir()
    kept = " ".join(path.read_text() for path in (entry / "data").iterdir())
    assert str(made.folder) not in kept and f"{IMAGES_PLACEHOLDER}/demo_000.png" in kept
    assert '"config"' not in kept  # SimpleTuner would put the first job's settings back over the next job's
    assert json.loads((entry / "meta.json").read_text())["images"] == 6

    second = restore(_job(tmp_path, demo_dataset, settings, config=_config(learning_rate=5e-4)), cache)
    [reused] = [item for item in second.dirs if item.kind == "buckets"]
    assert reused.hit is not None and reused.folder != made.folder
    indices = json.loads((reused.folder / "aspect_ratio_bucket_indices_dataset.json").read_text())
    metadata = json.loads((reused.folder / "aspect_ratio_bucket_metadata_dataset.json").read_text())
    assert sorted(indices["aspect_ratio_bucket_indices"]["1.0"]) == sorted(metadata) == \
        [os.path.join(reused.folder, f"demo_{index:03d}.png") for index in range(6)]
    assert all(Path(path).is_file() for path in metadata)
    assert describe({"dataset": "reused", **second.to_dict(), "saved_s": 1.5}) == \
        "from the cache: dataset, 6 images' aspect buckets (saved 1.5s)"
    # The job's copy is its own file: SimpleTuner rewrites it, the entry stays as it was.
    assert os.stat(reused.folder / "aspect_ratio_bucket_indices_dataset.json").st_nlink == 1


def test_a_bucket_file_that_is_not_json_or_names_another_folder_is_not_kept(tmp_path: Path, demo_dataset: Path):
    settings = _settings(tmp_path)
    cache = Cache.from_settings(settings)
    events: list = []
    for name, spoil in [("outside", lambda folder: _simpletuner_files(folder, extra={"other": ["/etc/passwd"]})),
                        ("job folder", lambda folder: _simpletuner_files(folder, extra={
                            "vae": str(folder.parent.parent / "cache" / "vae")})),
                        ("not json", lambda folder: (_simpletuner_files(folder), (
                            folder / "aspect_ratio_bucket_metadata_dataset.json").write_text("{not json")))]:
        caches = _job(tmp_path / name, demo_dataset, settings)
        [item] = [item for item in caches.dirs if item.kind == "buckets"]
        spoil(item.folder)
        store(caches, cache, build_s=1.0, on_event=events.append)  # no exception: a miss for the next job
    assert not (settings.cache_dir / "entries" / "buckets").exists()
    warnings = [e.message for e in events if isinstance(e, LogLine) and e.severity == "warning"]
    assert len(warnings) == 3 and "outside the job's images folder: /etc/passwd" in warnings[0]
    assert all(w.startswith("aspect buckets not kept in the cache") for w in warnings)


def test_a_path_inside_a_longer_string_is_left_as_it_is(tmp_path: Path, demo_dataset: Path):
    """Only whole paths are rewritten (parsed JSON, never a text replace): a string that merely mentions the
    folder comes back unchanged."""
    settings = _settings(tmp_path)
    cache = Cache.from_settings(settings)
    first = _job(tmp_path, demo_dataset, settings)
    [made] = [item for item in first.dirs if item.kind == "buckets"]
    note = f"scanned {made.folder}/demo_000.png"
    _simpletuner_files(made.folder, extra={"note": note})
    store(first, cache, build_s=0.0)
    second = restore(_job(tmp_path, demo_dataset, settings), cache)
    [reused] = [item for item in second.dirs if item.kind == "buckets"]
    assert json.loads((reused.folder / "aspect_ratio_bucket_indices_dataset.json").read_text())["note"] == note


def test_the_scan_time_comes_from_simpletuners_log(tmp_path: Path):
    log = tmp_path / "training.log"
    log.write_text(
        "[RANK 0] 2026-11-29 15:15:43,432 [INFO] (id=dataset) Refreshing aspect buckets on main process.\n"
        "[RANK 0] 2026-11-29 15:15:43,433 [INFO] Discovering new files...\n"
        "Generating aspect bucket cache:   0%| | 0/6 [RANK 0] 2026-11-29 15:15:44,000 [INFO] Sample processing\n"
        "[RANK 0] 2026-11-29 15:15:45,183 [INFO] Completed aspect bucket update.\n"
        "[RANK 0] 2026-11-29 15:15:46,000 [INFO] (id=other) Refreshing aspect buckets on main process.\n"
        "[RANK 0] 2026-11-29 15:15:46,001 [INFO] Discovering new files...\n"
        "[RANK 0] 2026-11-29 15:15:50,001 [INFO] Completed aspect bucket update.\n")
    assert abs(scan_seconds(log, backend_id="dataset") - 1.75) < 1e-6
    assert abs(scan_seconds(log, backend_id="other") - 4.0) < 1e-6
    assert scan_seconds(tmp_path / "absent.log", backend_id="dataset") == 0.0


# -- a video backend's caches --------------------------------------------------------------------------------------


def _clip_job(tmp_path: Path, dataset: Path, settings: Settings, model: Path, **video) -> TrainerCaches:
    """Stage a Wan job's clips (and a still) and plan its SimpleTuner caches as the pipeline does."""
    from core.cache.datasets import clip_hashes
    from tests.test_video_training import wan_job

    spec = parse_job(wan_job(dataset, video={"num_frames": 9, **video}, config={"model_name": str(model)}))
    job = JobDir(tmp_path / f"job-{len(list(tmp_path.glob('job-*')))}").create()
    manifest = stage_dataset(spec.dataset, job.dataset, settings=settings,
                             captions=CaptionOptions(trigger_word=spec.trigger_word))
    files = build_trainer_files(spec, images_dir=manifest.root, job=job, device="cuda",
                                clips_dir=manifest.clips_root, stills=bool(manifest.images))
    return plan(spec, files.backends, manifest, images=image_hashes(manifest), clips=clip_hashes(manifest),
                settings=settings)


def _wan_folder(tmp_path: Path) -> Path:
    """A local model folder as far as the keys look at it: its VAE's and text encoder's files."""
    model = tmp_path / "wan-model"
    for part in ("vae", "text_encoder", "tokenizer"):
        (model / part).mkdir(parents=True)
        (model / part / "config.json").write_text("{}")
    return model


def _by_folder(caches: TrainerCaches) -> dict[tuple[str, str], str]:
    return {(item.kind, item.folder.name): item.key for item in caches.dirs}


def test_a_video_backend_gets_latent_and_bucket_entries_keyed_by_its_clips(tmp_path: Path):
    from PIL import Image

    from tests.support.clips import write_clip
    from tests.test_video_training import three_clips

    settings, model = _settings(tmp_path), _wan_folder(tmp_path)
    dataset = three_clips(tmp_path / "data")
    Image.new("RGB", (64, 64), "red").save(dataset / "still.png")
    base = _by_folder(_clip_job(tmp_path, dataset, settings, model))
    assert set(base) == {("text_embeds", "text"), ("vae_latents", "vae"), ("vae_latents", "vae-clips"),
                         ("buckets", "images"), ("buckets", "clips")}
    write_clip(dataset / "clip0.mp4", frames=11)  # another clip: the clips' entries change, the images' do not
    changed = _by_folder(_clip_job(tmp_path, dataset, settings, model))
    assert {name for name, key in changed.items() if key != base[name]} == {("vae_latents", "vae-clips"),
                                                                            ("buckets", "clips")}
    (dataset / "clip1.txt").write_text("another caption")
    captioned = _by_folder(_clip_job(tmp_path, dataset, settings, model))
    assert captioned[("text_embeds", "text")] != changed[("text_embeds", "text")]  # a clip's caption is embedded too
    framed = _by_folder(_clip_job(tmp_path, dataset, settings, model, min_frames=9, num_frames=9, max_frames=17))
    assert framed[("vae_latents", "vae-clips")] != captioned[("vae_latents", "vae-clips")]  # the video block


def test_a_video_backends_bucket_files_are_written_back_into_the_next_jobs_clips_folder(tmp_path: Path):
    from tests.test_video_training import three_clips

    settings, model = _settings(tmp_path), _wan_folder(tmp_path)
    cache = Cache.from_settings(settings)
    dataset = three_clips(tmp_path / "data")
    first = _clip_job(tmp_path, dataset, settings, model)
    [made] = [item for item in first.dirs if item.kind == "buckets"]
    assert made.folder.name == "clips" and made.names == ("aspect_ratio_bucket_metadata_clips.json",
                                                          "aspect_ratio_bucket_indices_clips.json")
    paths = sorted(str(path) for path in made.folder.glob("*.mp4"))
    (made.folder / made.names[1]).write_text(json.dumps({"aspect_ratio_bucket_indices": {"1.0": paths}}))
    (made.folder / made.names[0]).write_text(json.dumps({path: {"num_frames": 9} for path in paths}))
    store(first, cache, build_s=0.0)
    second = restore(_clip_job(tmp_path, dataset, settings, model), cache)
    [reused] = [item for item in second.dirs if item.kind == "buckets"]
    assert reused.hit is not None and reused.files == 3 and reused.folder != made.folder
    indices = json.loads((reused.folder / reused.names[1]).read_text())["aspect_ratio_bucket_indices"]["1.0"]
    assert indices == sorted(str(path) for path in reused.folder.glob("*.mp4")) and len(indices) == 3
