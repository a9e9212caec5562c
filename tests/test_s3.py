"""The S3 adapter (core/adapters/s3.py): settings from the environment, a client that really talks to moto_server,
and one set
of error codes whichever stage meets a failure (an s3:// dataset, an s3:// checkpoint, the outputs upload). moto does
not check keys, so refused keys come from a loopback server answering as S3 does."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from core.adapters.fetch import download
from core.adapters.s3 import CODES, S3Config, region_of, require_keys, s3_client, s3_config
from core.errors import DownloadError, JobError, ResumeError, StorageError
from core.publishing.bucket import upload_outputs
from core.settings import Settings
from core.spec.job import StorageSpec
from core.training.resume import fetch_checkpoint
from tests.support.loopback import LoopbackServer, QuietHandler, serving
from tests.support.s3_server import moto_s3, to_bucket, with_s3

SECRET = "the-secret-key-value-0123456789"
SETTINGS = Settings.from_env({})
LIMIT = 1 << 30


@pytest.fixture(scope="module")
def s3():
    with moto_s3() as server:
        yield server


@pytest.fixture
def bucket(s3) -> str:
    name = f"data-{uuid.uuid4().hex[:12]}"
    s3.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def output(tmp_path: Path) -> Path:
    out = tmp_path / "output"
    out.mkdir()
    (out / "pytorch_lora_weights.safetensors").write_bytes(b"weights")
    return out


@contextmanager
def s3_answering(status: int, code: str, message: str) -> Iterator[str]:
    """A loopback endpoint that answers every request as S3 does when it refuses one: `status` and an XML error."""
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            "<RequestId>r1</RequestId></Error>").encode()

    class Handler(QuietHandler):
        def answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = answer

    with serving(LoopbackServer(Handler), name="s3-refusing") as server:
        yield server.base


def env_for(endpoint: str) -> dict[str, str]:
    return {"BUCKET_ENDPOINT_URL": endpoint, "BUCKET_ACCESS_KEY_ID": "key-id-123", "BUCKET_SECRET_ACCESS_KEY": SECRET}


def test_settings_bucket_variables_win_and_the_region_comes_from_the_endpoint():
    runpod = s3_config({"BUCKET_ENDPOINT_URL": "https://s3.eu-central-003.backblazeb2.com",
                        "BUCKET_ACCESS_KEY_ID": "bk", "BUCKET_SECRET_ACCESS_KEY": "bs",
                        "AWS_ACCESS_KEY_ID": "ak", "AWS_SECRET_ACCESS_KEY": "as", "AWS_REGION": "us-west-2"})
    assert (runpod.access_key_id, runpod.secret_access_key, runpod.region) == ("bk", "bs", "eu-central-003")
    assert s3_config({"BUCKET_ENDPOINT_URL": "https://x.s3.eu-west-1.amazonaws.com",
                      "BUCKET_REGION": "ap-south-1"}).region == "ap-south-1"
    aws = s3_config({"AWS_ACCESS_KEY_ID": "ak", "AWS_SECRET_ACCESS_KEY": "as", "BUCKET_ACCESS_KEY_ID": "bk",
                     "AWS_DEFAULT_REGION": "eu-north-1"})
    assert (aws.endpoint_url, aws.access_key_id, aws.region) == (None, "ak", "eu-north-1")
    assert s3_config({"AWS_ENDPOINT_URL": "http://minio:9000"}).endpoint_url == "http://minio:9000"
    assert s3_config({}) == S3Config() and not S3Config().has_keys
    assert region_of("https://nyc3.digitaloceanspaces.com") == "nyc3" and region_of("http://127.0.0.1:9000") is None
    assert region_of("https://bucket.s3.eu-west-3.amazonaws.com") == "eu-west-3"
    assert region_of("https://s3.amazonaws.com") is None
    assert SECRET not in repr(s3_config(env_for("http://minio:9000")))


def test_the_client_from_the_environment_talks_to_the_endpoint(s3, bucket: str):
    client = s3_client(s3_config(s3.env))
    client.put_object(Bucket=bucket, Key="a/b.txt", Body=b"hello")
    assert s3.client().get_object(Bucket=bucket, Key="a/b.txt")["Body"].read() == b"hello"


def test_a_missing_bucket_is_s3_no_bucket_in_every_stage(s3, tmp_path: Path, output: Path):
    missing = f"nope-{uuid.uuid4().hex[:8]}"
    errors: list[JobError] = []
    for attempt in (
        lambda: fetch_checkpoint(f"s3://{missing}/job-1", tmp_path / "b", settings=with_s3(SETTINGS, s3.env)),
        lambda: upload_outputs(output, destination=to_bucket(StorageSpec(bucket=missing), s3.env), job_id="j1"),
    ):
        with pytest.raises(JobError) as caught:
            attempt()
        errors.append(caught.value)
    assert [(type(e), e.stage, e.code, e.field) for e in errors] == [
        (ResumeError, "resume", "s3_no_bucket", "resume_from"),
        (StorageError, "publish", "s3_no_bucket", "storage.bucket")]
    assert all(f"'{missing}' does not exist at {s3.endpoint}" in e.message for e in errors)


def test_a_missing_key_is_s3_not_found(s3, bucket: str, tmp_path: Path):
    for url in (f"s3://{bucket}/none.zip", f"s3://nope-{uuid.uuid4().hex[:8]}/set.zip"):
        with pytest.raises(DownloadError) as caught:
            download(url, tmp_path, settings=with_s3(SETTINGS, s3.env), max_bytes=LIMIT)
        # A file is fetched with HEAD first, whose 404 has no body to tell a missing bucket from a missing key.
        assert (caught.value.code, caught.value.message) == ("s3_not_found", f"{url}: not found")


def test_refused_keys_are_s3_auth_naming_the_variables_without_the_secret(tmp_path: Path, output: Path):
    with s3_answering(403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist") as endpoint:
        with pytest.raises(DownloadError) as fetched:
            download("s3://data/set.zip", tmp_path, settings=with_s3(SETTINGS, env_for(endpoint)), max_bytes=LIMIT)
        with pytest.raises(StorageError) as uploaded:
            upload_outputs(output, destination=to_bucket(StorageSpec(bucket="data"), env_for(endpoint)), job_id="j1")
    for error in (fetched.value, uploaded.value):
        assert error.code == "s3_auth" and "BUCKET_SECRET_ACCESS_KEY" in error.message
        assert SECRET not in json.dumps(error.to_payload()) and "key-id-123" not in error.message
    assert uploaded.value.field == "storage" and fetched.value.field == "dataset.url"


def test_another_refusal_is_s3_failed_with_its_code(tmp_path: Path):
    with s3_answering(400, "InvalidArgument", "Invalid argument") as endpoint:
        with pytest.raises(ResumeError) as caught:
            fetch_checkpoint("s3://data/job-1", tmp_path, settings=with_s3(SETTINGS, env_for(endpoint)))
    assert caught.value.code == "s3_failed" and "InvalidArgument (400): Invalid argument" in caught.value.message


def test_an_unreachable_endpoint_is_s3_unavailable(tmp_path: Path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(DownloadError) as caught:
        download("s3://data/set.zip", tmp_path, settings=with_s3(SETTINGS, env_for(closed)), max_bytes=LIMIT)
    assert caught.value.code == "s3_unavailable" and closed in caught.value.message
    assert SECRET not in str(caught.value)


def test_an_upload_needs_keys_and_says_which():
    with pytest.raises(StorageError) as caught:
        require_keys(s3_config({"BUCKET_ENDPOINT_URL": "http://minio:9000"}), family=StorageError, field="storage")
    assert caught.value.code == "s3_auth" and caught.value.field == "storage"
    assert "BUCKET_ACCESS_KEY_ID" in caught.value.message and "AWS_ACCESS_KEY_ID" in caught.value.message


def test_every_code_is_documented():
    documented = (Path(__file__).resolve().parent.parent / "docs" / "hub-and-s3.md").read_text()
    assert set(CODES) == {"s3_auth", "s3_no_bucket", "s3_not_found", "s3_unavailable", "s3_failed"}
    assert all(f"`{code}`" in documented for code in CODES)


def test_the_bucket_gets_the_outputs_but_not_simpletuners_working_cache(tmp_path: Path):
    from core.publishing.bucket import output_files

    output = tmp_path / "output"
    for rel in ("pytorch_lora_weights.safetensors", "validation_images/step_2_sample_0_0_64x64.mp4",
                "cache/conditioning_data/clips/walk.png", "high_noise/cache/conditioning_data/x.png",
                "high_noise/pytorch_lora_weights.safetensors", "checkpoint-2/pytorch_lora_weights.safetensors"):
        (output / rel).parent.mkdir(parents=True, exist_ok=True)
        (output / rel).write_bytes(b"x")
    assert sorted(output_files(output, include_checkpoints=False, extra_files={})) == [
        "high_noise/pytorch_lora_weights.safetensors", "pytorch_lora_weights.safetensors",
        "validation_images/step_2_sample_0_0_64x64.mp4"]
