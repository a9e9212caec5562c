"""S3 outputs against a real moto_server: uploaded under <prefix>/<job_id>/, presigned URLs give the same bytes."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import requests
from PIL import Image
from safetensors.numpy import save_file

from core.errors import StorageError
from core.events import JobWarning, LogLine
from core.publishing.bucket import upload_outputs
from core.spec.job import StorageSpec
from tests.support.s3_server import moto_s3, to_bucket

TOKEN = "hf_PlantedToken0123456789abcdefXYZ"


@pytest.fixture(scope="module")
def s3():
    with moto_s3() as server:
        yield server


@pytest.fixture
def bucket(s3) -> str:
    name = f"outputs-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def output(tmp_path: Path) -> Path:
    out = tmp_path / "output"
    (out / "validation_images").mkdir(parents=True)
    (out / "checkpoint-3").mkdir()
    weights = {"lora.down.weight": np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)}
    save_file(weights, str(out / "pytorch_lora_weights.safetensors"))
    save_file(weights, str(out / "checkpoint-3" / "pytorch_lora_weights.safetensors"))
    Image.new("RGB", (64, 64), "green").save(out / "validation_images" / "step_3_val_0.png")
    (out / "simpletuner_config.json").write_text(json.dumps({"--lora_rank": 4}))
    return out


def test_outputs_upload_and_presigned_urls_return_the_same_bytes(s3, bucket: str, output: Path, tmp_path: Path):
    log = tmp_path / "training.log"
    log.write_text("step 1 loss 0.2\nstep 2 loss 0.1\n")
    events: list = []
    storage = StorageSpec(bucket=bucket, prefix="/loras/", expires_s=3600)
    result = upload_outputs(output, destination=to_bucket(storage, s3.env), job_id="job-42",
                            extra_files={"training.log": log}, on_event=events.append)

    assert result["bucket"] == bucket and result["prefix"] == "loras/job-42"
    expected = {"pytorch_lora_weights.safetensors", "checkpoint-3/pytorch_lora_weights.safetensors",
                "validation_images/step_3_val_0.png", "simpletuner_config.json", "training.log"}
    assert set(result["files"]) == expected
    keys = {o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == {f"loras/job-42/{rel}" for rel in expected}
    sources = {rel: output / rel for rel in expected - {"training.log"}} | {"training.log": log}
    for rel, url in result["files"].items():
        got = requests.get(url, timeout=10)  # no credentials: the signature is the only key
        assert got.status_code == 200, rel
        assert got.content == sources[rel].read_bytes(), rel
        assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == ["3600"]
    assert requests.get(result["files"]["validation_images/step_3_val_0.png"], timeout=10).headers[
        "Content-Type"] == "image/png"
    assert [e.message.split()[0] for e in events if isinstance(e, LogLine)] == ["uploading", "uploaded"]


def test_the_bucket_name_can_come_from_BUCKET_NAME_and_checkpoints_can_stay_home(s3, bucket: str, output: Path):
    result = upload_outputs(output, destination=to_bucket(StorageSpec(), {**s3.env, "BUCKET_NAME": bucket}),
                            job_id="j1", include_checkpoints=False)
    assert result["bucket"] == bucket and result["prefix"] == "j1"
    assert not any(rel.startswith("checkpoint-") for rel in result["files"])
    assert "pytorch_lora_weights.safetensors" in result["files"]


def test_a_missing_bucket_is_an_error_naming_it(s3, output: Path):
    events: list = []
    with pytest.raises(StorageError) as raised:
        upload_outputs(output, destination=to_bucket(StorageSpec(bucket="no-such-bucket"), s3.env), job_id="j1",
                       on_event=events.append)
    assert raised.value.field == "storage.bucket" and "'no-such-bucket' does not exist" in raised.value.message
    assert [e.message.split()[0] for e in events if isinstance(e, LogLine)] == ["uploading"]  # never "uploaded"


def test_missing_credentials_and_bucket_name_are_named(s3, output: Path):
    with pytest.raises(StorageError) as raised:
        upload_outputs(output, destination=to_bucket(StorageSpec(bucket="b"), {"BUCKET_ENDPOINT_URL": s3.endpoint}),
                       job_id="j1")
    assert "BUCKET_ACCESS_KEY_ID" in raised.value.message and "BUCKET_SECRET_ACCESS_KEY" in raised.value.message
    with pytest.raises(StorageError) as raised:
        upload_outputs(output, destination=to_bucket(StorageSpec(), s3.env), job_id="j1")
    assert raised.value.field == "storage.bucket" and "BUCKET_NAME" in raised.value.message


def test_an_unreachable_endpoint_is_a_storage_error_without_the_secret_key(output: Path):
    env = {"BUCKET_ENDPOINT_URL": "http://127.0.0.1:9", "BUCKET_ACCESS_KEY_ID": "id-123",
           "BUCKET_SECRET_ACCESS_KEY": "the-secret-key-value"}
    with pytest.raises(StorageError) as raised:
        upload_outputs(output, destination=to_bucket(StorageSpec(bucket="b"), env), job_id="j1")
    assert "s3://b/j1/" in raised.value.message
    assert "the-secret-key-value" not in str(raised.value)


def test_no_secret_reaches_the_bucket_the_urls_or_the_events(s3, bucket: str, output: Path, tmp_path: Path):
    log = tmp_path / "training.log"
    log.write_text(f"start\nHF_TOKEN={TOKEN}\nsecret={s3.secret_key}\nstep 1 loss 0.2\n")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"--lora_rank": 4, "--hub_token": TOKEN}))
    events: list = []
    result = upload_outputs(output, destination=to_bucket(StorageSpec(bucket=bucket), s3.env), job_id="j1",
                            extra_files={"training.log": log, "config/config.json": config}, on_event=events.append,
                            secrets=[TOKEN])
    downloaded = {rel: requests.get(url, timeout=10).content for rel, url in result["files"].items()}
    assert b"step 1 loss 0.2" in downloaded["training.log"]
    assert json.loads(downloaded["config/config.json"]) == {"--lora_rank": 4}
    everything = (b"\n".join(downloaded.values()).decode("utf-8", "replace") + json.dumps(result)
                  + json.dumps([e.to_dict() for e in events]))
    assert TOKEN not in everything and s3.secret_key not in everything
    warned = {e.field for e in events if isinstance(e, JobWarning)}
    assert warned == {"training.log", "config/config.json"}
