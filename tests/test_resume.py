"""Resume: a checkpoint-N folder fetched from the Hub (local Hub server), S3 (moto_server) or an https archive
(loopback file server) into a job's output folder, and the pipeline continuing it. A real resumed training runs in
tests/test_worker_loop.py (a checkpoint this worker uploaded, continued by the next job)."""

from __future__ import annotations

import io
import json
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from core.errors import JobError
from core.events import DownloadProgress
from core.pipeline import run_job
from core.settings import Settings
from core.spec.job import parse_job
from core.training.resume import fetch_checkpoint, parse_source
from tests.conftest import tiny_job
from tests.support.http_server import serve_files
from tests.support.hub_server import running_hub_server
from tests.support.s3_server import moto_s3, with_s3

TOKEN = "hf_ResumeTestToken0123456789abcdefXYZ"


def checkpoint_files(step: int, *, prefix: str = "") -> dict[str, bytes]:
    """What SimpleTuner writes into checkpoint-N (docs/simpletuner-notes.md, "Output folder of a LoRA run"), small."""
    return {
        f"{prefix}pytorch_lora_weights.safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      " + bytes(step),
        f"{prefix}optimizer.bin": bytes(range(256)) * 4,
        f"{prefix}scheduler.bin": b"sched",
        f"{prefix}random_states_0.pkl": b"rng",
        f"{prefix}training_state.json": json.dumps({"global_step": step, "epoch": 1}).encode(),
        f"{prefix}training_state-dataset.json": json.dumps({"seen_images": {"/old/job/images/a.png": 1}}).encode(),
    }


def zip_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def assert_placed(folder: Path, step: int) -> None:
    assert folder.name == f"checkpoint-{step}" and folder.is_dir()
    assert json.loads((folder / "training_state.json").read_text())["global_step"] == step
    assert (folder / "optimizer.bin").read_bytes() == bytes(range(256)) * 4
    # The sampler state names the old job's files, which SimpleTuner refuses in a new job.
    assert not (folder / "training_state-dataset.json").exists()
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no download leftovers


@pytest.fixture
def local(tmp_path) -> Settings:
    return Settings.from_env({"ALLOW_PRIVATE_URLS": "1", "DATA_DIR": str(tmp_path / "data")})


def test_what_resume_from_may_name():
    assert parse_source("me/lora/checkpoint-500").public == "hf://me/lora/checkpoint-500"
    hub = parse_source("hf://me/lora@abc123/runs/checkpoint-5")
    assert (hub.kind, hub.location, hub.path, hub.revision) == ("hub", "me/lora", "runs/checkpoint-5", "abc123")
    assert parse_source("me/lora").path == ""
    s3 = parse_source("s3://bucket/jobs/j1/checkpoint-20")
    assert (s3.kind, s3.location, s3.path) == ("s3", "bucket", "jobs/j1/checkpoint-20")
    assert parse_source("https://x.example/c.zip?X-Amz-Signature=abc").public == "https://x.example/c.zip"
    for bad in ("", "   ", "ftp://host/c.zip", "/workspace/output/checkpoint-5", "lora", "me/../etc/checkpoint-1",
                "s3://bucket"):
        with pytest.raises(JobError) as caught:
            parse_source(bad)
        assert caught.value.field == "resume_from" and caught.value.stage == "resume"


def test_the_latest_checkpoint_of_a_hub_repo_or_the_one_named(tmp_path, local):
    files = {**checkpoint_files(5, prefix="checkpoint-5/"), **checkpoint_files(10, prefix="checkpoint-10/"),
             "pytorch_lora_weights.safetensors": b"final", "README.md": b"# card"}
    with running_hub_server(tmp_path, token=TOKEN) as hub:
        hub.add_repo("tester/lora", private=True, files=files)
        events = []
        latest = fetch_checkpoint("tester/lora", tmp_path / "a", settings=local, token=TOKEN, on_event=events.append)
        assert_placed(latest, 10)
        progress = [e for e in events if isinstance(e, DownloadProgress)]
        assert progress[-1].bytes_done == progress[-1].bytes_total > 0
        named = fetch_checkpoint("hf://tester/lora/checkpoint-5", tmp_path / "b", settings=local, token=TOKEN)
        assert_placed(named, 5)
        for source, code, words in (("tester/lora/checkpoint-99", "resume_not_found", "no 'checkpoint-99'"),
                                    ("tester/nothing/checkpoint-1", "hub_not_found", "not found")):
            with pytest.raises(JobError) as caught:
                fetch_checkpoint(source, tmp_path / "c", settings=local, token=TOKEN)
            assert (caught.value.code, caught.value.stage) == (code, "resume") and words in caught.value.message
        with pytest.raises(JobError) as caught:  # private, and no token
            fetch_checkpoint("tester/lora", tmp_path / "d", settings=local)
        assert "not found" in caught.value.message and TOKEN not in caught.value.message


def test_a_repo_without_checkpoints_says_how_to_get_one(tmp_path, local):
    with running_hub_server(tmp_path, token=TOKEN) as hub:
        hub.add_repo("tester/final-only", private=False, files={"pytorch_lora_weights.safetensors": b"w"})
        with pytest.raises(JobError) as caught:
            fetch_checkpoint("tester/final-only", tmp_path / "out", settings=local, token=TOKEN)
    assert "hub.include_checkpoints" in caught.value.message


def test_an_https_archive_with_the_folder_or_with_its_files_at_the_root(tmp_path, local):
    served = tmp_path / "served"
    served.mkdir()
    (served / "run.zip").write_bytes(zip_of({**checkpoint_files(12, prefix="out/checkpoint-12/"),
                                             "out/checkpoint-12/.guard": b"ok", "out/notes.md": b"x"}))
    (served / "checkpoint-7.zip").write_bytes(zip_of(checkpoint_files(7)))
    (served / "checkpoint-8.zip").write_bytes(zip_of(checkpoint_files(3)))
    (served / "not-a-checkpoint.zip").write_bytes(zip_of({"a/readme.txt": b"hello"}))
    (served / "slip.zip").write_bytes(zip_of({"../../escaped.json": b"{}", **checkpoint_files(1)}))
    with serve_files(served) as server:
        assert_placed(fetch_checkpoint(server.url("run.zip"), tmp_path / "a", settings=local), 12)
        assert_placed(fetch_checkpoint(server.url("checkpoint-7.zip"), tmp_path / "b", settings=local), 7)
        cases = {"checkpoint-8.zip": ("resume_failed", "folder says step 8"),
                 "not-a-checkpoint.zip": ("resume_failed", "not a SimpleTuner checkpoint"),
                 "slip.zip": ("unsafe_archive", "slip.zip"),
                 "missing.zip": ("download_failed", "404")}
        for name, (code, words) in cases.items():
            with pytest.raises(JobError) as caught:
                fetch_checkpoint(server.url(name), tmp_path / name, settings=local)
            assert (caught.value.code, caught.value.field) == (code, "resume_from") and words in caught.value.message
        with pytest.raises(JobError) as caught:
            fetch_checkpoint(server.url("run.zip"), tmp_path / "e", settings=Settings.from_env({}))
        assert caught.value.code == "address_refused" and caught.value.field == "resume_from"
    assert not list(tmp_path.rglob("escaped.json"))


def test_an_s3_folder_as_this_worker_uploads_it_or_an_s3_archive(tmp_path, local):
    with moto_s3() as s3:
        client = s3.client()
        client.create_bucket(Bucket="loras")
        for step in (10, 20):
            for name, data in checkpoint_files(step, prefix=f"job-1/checkpoint-{step}/").items():
                client.put_object(Bucket="loras", Key=name, Body=data)
        client.put_object(Bucket="loras", Key="job-1/pytorch_lora_weights.safetensors", Body=b"final")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            for name, data in checkpoint_files(4, prefix="checkpoint-4/").items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        client.put_object(Bucket="loras", Key="archives/ckpt.tar.gz", Body=buffer.getvalue())
        reach = with_s3(local, s3.env)
        assert_placed(fetch_checkpoint("s3://loras/job-1", tmp_path / "a", settings=reach), 20)
        assert_placed(fetch_checkpoint("s3://loras/job-1/checkpoint-10/", tmp_path / "b", settings=reach), 10)
        assert_placed(fetch_checkpoint("s3://loras/archives/ckpt.tar.gz", tmp_path / "c", settings=reach), 4)
        for source, words in (("s3://loras/job-2", "nothing there"), ("s3://nope/job-1", "no such bucket"),
                              ("s3://loras/archives", "no checkpoint-N folder")):
            with pytest.raises(JobError) as caught:
                fetch_checkpoint(source, tmp_path / "d", settings=with_s3(local, s3.env))
            assert words in caught.value.message, caught.value.message


def test_a_job_with_resume_from_continues_the_latest_checkpoint(tmp_path, demo_dataset, tiny_model):
    served = tmp_path / "served"
    served.mkdir()
    (served / "checkpoint-10.zip").write_bytes(zip_of(checkpoint_files(10)))
    settings = Settings.from_env({"ALLOW_PRIVATE_URLS": "1", "TRAINER_DEVICE": "cpu"})
    with serve_files(served) as server:
        job = tiny_job(tiny_model, demo_dataset, dry_run=True, resume_from=server.url("checkpoint-10.zip"),
                       config={"max_train_steps": 20})
        result = run_job(parse_job(job), tmp_path / "job", settings=settings)
    assert result.trainer_files["config.json"]["--resume_from_checkpoint"] == "latest"
    assert_placed(tmp_path / "job" / "output" / "checkpoint-10", 10)
    fresh = run_job(parse_job(tiny_job(tiny_model, demo_dataset, dry_run=True)), tmp_path / "fresh",
                    settings=settings)
    assert "--resume_from_checkpoint" not in fresh.trainer_files["config.json"]


def test_auto_resumes_from_the_jobs_own_destination_or_starts_fresh(tmp_path, local):
    from core.training.resume import auto_sources, fetch_latest_checkpoint

    with running_hub_server(tmp_path, token=TOKEN) as hub, moto_s3() as s3:
        hub.add_repo("tester/run", files={**checkpoint_files(4, prefix="checkpoints/checkpoint-4/"),
                                          **checkpoint_files(2, prefix="checkpoints/checkpoint-2/")})
        env = {**os.environ, **s3.env}  # HF_ENDPOINT (the local Hub) and the bucket's keys
        s3.client().create_bucket(Bucket="loras")
        for name, data in checkpoint_files(6, prefix="runs/checkpoints/checkpoint-6/").items():
            s3.client().put_object(Bucket="loras", Key=name, Body=data)
        found = fetch_latest_checkpoint(auto_sources(hub_repo="tester/run", bucket=None), tmp_path / "a",
                                        settings=with_s3(local, env), token=TOKEN)
        assert_placed(found, 4)
        events = []
        sources = auto_sources(hub_repo="tester/new-run", bucket="loras", prefix="runs")
        assert sources == ["hf://tester/new-run", "s3://loras/runs/checkpoints"]
        assert_placed(fetch_latest_checkpoint(sources, tmp_path / "b", settings=with_s3(local, env), token=TOKEN,
                                              on_event=events.append), 6)
        assert any("no checkpoint at hf://tester/new-run" in getattr(e, "message", "") for e in events)
        events.clear()
        fresh = fetch_latest_checkpoint(auto_sources(hub_repo="tester/new-run", bucket="loras", prefix="other"),
                                        tmp_path / "c", settings=with_s3(local, env), token=TOKEN,
                                        on_event=events.append)
        assert fresh is None and "starting fresh" in events[-1].message
        with pytest.raises(JobError) as caught:  # a bucket that cannot be read is an error, not a fresh start
            fetch_latest_checkpoint(["s3://no-such-bucket/checkpoints"], tmp_path / "d", settings=with_s3(local, env))
        assert (caught.value.field, caught.value.code) == ("resume_from", "s3_no_bucket")
        with pytest.raises(JobError) as caught:
            fetch_latest_checkpoint([], tmp_path / "e", settings=local)
        assert "hub.repo_id or storage" in caught.value.message
