"""The destination is checked before any download or GPU minute (core/publishing/destinations.py): a real job against
the
local Hub server and moto S3; a wrong token or bucket fails in the `validate` stage with nothing fetched."""

from __future__ import annotations

import pytest

from core.errors import JobError
from core.pipeline import run_job
from core.publishing.destinations import Destinations, check_destinations, destinations_of
from core.settings import Settings
from core.spec.job import parse_job
from tests.conftest import tiny_job
from tests.support.http_server import serve_files
from tests.support.hub_server import running_hub_server
from tests.support.s3_server import moto_s3

TOKEN = "hf_DestinationTestToken0123456789abcd"
READ_TOKEN = "hf_DestinationReadOnly0123456789abcd"


def endpoint(env: dict[str, str], *, token: str | None) -> Settings:
    """The endpoint's Settings: its S3 variables, and `token` as its HF_TOKEN."""
    return Settings.from_env({**env, **({"HF_TOKEN": token} if token else {})})


@pytest.fixture
def local(tmp_path) -> Settings:
    return Settings.from_env({"ALLOW_PRIVATE_URLS": "1", "TRAINER_DEVICE": "cpu", "DATA_DIR": str(tmp_path / "d")})


def test_a_wrong_token_fails_before_the_dataset_is_fetched(tmp_path, tiny_model, local):
    served = tmp_path / "served"
    served.mkdir()
    (served / "data.zip").write_bytes(b"never fetched")
    with serve_files(served) as files, running_hub_server(tmp_path, token=TOKEN) as hub:
        job = tiny_job(tiny_model, served, hub={"repo_id": "tester/lora",
                                                "token": "hf_WrongToken000000000000000000000"})
        job["dataset"] = {"url": files.url("data.zip")}
        with pytest.raises(JobError) as caught:
            run_job(parse_job(job), tmp_path / "job", settings=local)
        assert files.requests == []  # the dataset was never asked for
        assert "tester/lora" not in hub.repos
    error = caught.value
    assert (error.stage, error.code, error.field) == ("validate", "hub_auth", "hub.token")
    assert "write role" in error.message and "hf_WrongToken" not in error.message
    assert not (tmp_path / "job" / "dataset").exists() or not any((tmp_path / "job" / "dataset").iterdir())


def test_the_token_must_write_to_the_repos_namespace(tmp_path):
    with running_hub_server(tmp_path, token=TOKEN, orgs=("studio",), read_token=READ_TOKEN):
        cases = [({"repo_id": "someone-else/lora", "token": TOKEN}, "hub.repo_id", "'someone-else' namespace"),
                 ({"repo_id": "tester/lora", "token": READ_TOKEN}, "hub.token", "read-only")]
        for hub, field, words in cases:
            spec = parse_job(tiny_job("m", tmp_path, config={"model_family": "sdxl"}, hub=hub))
            with pytest.raises(JobError) as caught:
                check_destinations(spec, endpoint({}, token=hub["token"]))
            assert (caught.value.code, caught.value.field) == ("hub_auth", field)
            assert words in caught.value.message
        events = []
        ok = parse_job(tiny_job("m", tmp_path, hub={"repo_id": "studio/lora", "token": TOKEN}))
        assert check_destinations(ok, endpoint({}, token=TOKEN), on_event=events.append) == []
        assert any("studio/lora: created (private)" in e.message for e in events)


def test_a_dry_run_reports_the_same_problems_as_warnings_and_creates_nothing(tmp_path):
    with running_hub_server(tmp_path, token=TOKEN) as hub, moto_s3() as s3:
        spec = parse_job(tiny_job("m", tmp_path, dry_run=True, hub={"repo_id": "tester/lora", "token": "hf_bad0"},
                                  storage={"bucket": "missing"}))
        warnings = check_destinations(spec, endpoint(s3.env, token="hf_bad0"))
        assert [w.split(":")[0] for w in warnings] == ["hub.token", "storage.bucket"]
        good = parse_job(tiny_job("m", tmp_path, dry_run=True, hub={"repo_id": "tester/lora"}))
        assert check_destinations(good, endpoint({}, token=TOKEN)) == []
        assert "tester/lora" not in hub.repos  # a dry run creates no repo


def test_the_bucket_must_exist_and_take_a_write(tmp_path):
    with moto_s3() as s3:
        client = s3.client()
        client.create_bucket(Bucket="loras")
        spec = parse_job(tiny_job("m", tmp_path, storage={"bucket": "loras", "prefix": "runs"}))
        assert check_destinations(spec, endpoint(s3.env, token=None)) == []
        assert client.list_objects_v2(Bucket="loras").get("KeyCount") == 0  # the probe object is gone
        for storage, env, field, code in (({"bucket": "nope"}, s3.env, "storage.bucket", "s3_no_bucket"),
                                          ({"bucket": "loras"}, {}, "storage", "s3_auth")):
            with pytest.raises(JobError) as caught:
                check_destinations(parse_job(tiny_job("m", tmp_path, storage=storage)), endpoint(env, token=None))
            assert (caught.value.field, caught.value.code) == (field, code), caught.value.message


def test_destinations_of_is_the_one_rule_for_repo_token_and_bucket(tmp_path):
    endpoint_vars = {"BUCKET_ENDPOINT_URL": "http://minio:9000", "BUCKET_ACCESS_KEY_ID": "key-id-1",
                     "BUCKET_SECRET_ACCESS_KEY": "secret-key-1", "BUCKET_NAME": "endpoint-bucket", "HF_TOKEN": TOKEN}
    settings = Settings.from_env(endpoint_vars)
    spec = parse_job(tiny_job("m", tmp_path, hub={"repo_id": "tester/lora"}, storage={"prefix": "runs"}))
    found = destinations_of(spec, settings)
    assert found.hub is not None and found.bucket is not None
    assert (found.hub.repo_id, found.hub.token) == ("tester/lora", TOKEN)  # the endpoint's HF_TOKEN
    assert (found.bucket.bucket, found.bucket.prefix, found.bucket.s3) == ("endpoint-bucket", "runs", settings.s3)
    assert TOKEN not in repr(found)
    own = parse_job(tiny_job("m", tmp_path, hub={"repo_id": "tester/lora", "token": READ_TOKEN},
                             storage={"bucket": "mine"}))
    found = destinations_of(own, settings)
    assert found.hub is not None and found.hub.token == READ_TOKEN  # the job's own token wins
    assert found.bucket is not None and found.bucket.require() == "mine"  # and its own bucket
    assert destinations_of(parse_job(tiny_job("m", tmp_path)), settings) == Destinations()
    unnamed = destinations_of(parse_job(tiny_job("m", tmp_path, storage={})), Settings.from_env({
        k: v for k, v in endpoint_vars.items() if k != "BUCKET_NAME"})).bucket
    assert unnamed is not None and unnamed.bucket is None
    with pytest.raises(JobError) as caught:  # no bucket anywhere: said when it is needed, naming the field
        unnamed.require()
    assert caught.value.field == "storage.bucket" and "BUCKET_NAME" in caught.value.message
