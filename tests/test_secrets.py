"""Redaction: a job's secrets are listed in one place and masked anywhere; secret-looking keys and values (URL
credentials, presigned signatures) never leave, from the core, the UI or the worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from core.events import LogLine
from core.secrets import MASK, is_secret_key, job_secrets, redact, sanitize, sanitize_config, scrub, scrub_file
from core.settings import Settings
from core.spec.job import parse_job
from tests.conftest import ROOT
from tests.support.s3_server import moto_s3

TOKEN = "hf_PlantedToken0123456789abcdefXYZ"


def test_redact_masks_every_occurrence_and_ignores_empty_secrets():
    text = f"token={TOKEN} again {TOKEN}; key=abc"
    assert redact(text, [TOKEN, "", None]) == f"token={MASK} again {MASK}; key=abc"
    assert redact("nothing here", [TOKEN]) == "nothing here"


def test_redact_masks_a_longer_secret_whole_when_it_contains_a_shorter_one():
    assert redact("abcdef-123456", ["abcdef", "abcdef-123456"]) == MASK


def test_redact_leaves_values_too_short_to_be_real_secrets():
    assert redact("upload to s3://b failed", ["a", "s3"]) == "upload to s3://b failed"


def test_secret_keys_are_recognised_by_their_words_not_substrings():
    for key in ["hub_token", "--hub_token", "HF_TOKEN", "aws_secret_access_key", "aws_access_key_id",
                "BUCKET_SECRET_ACCESS_KEY", "api_key", "apiKey", "password", "db_passwd", "Authorization", "key"]:
        assert is_secret_key(key), key
    for key in ["tokenizer_max_length", "--tokenizer_max_length", "keep_tokens", "lora_rank", "push_to_hub",
                "hub_model_id", "caption_strategy", "webhook_config", "keyframe_interval", "monkey"]:
        assert not is_secret_key(key), key


def test_sanitize_config_drops_secret_keys_at_any_depth_and_keeps_the_rest():
    config = {
        "--lora_rank": 16,
        "--hub_token": TOKEN,
        "--tokenizer_max_length": 77,
        "nested": {"aws_secret_access_key": "s3cr3t", "aws_bucket_name": "b", "list": [{"api_key": "k", "x": 1}]},
    }
    clean = sanitize_config(config)
    assert clean == {"--lora_rank": 16, "--tokenizer_max_length": 77,
                     "nested": {"aws_bucket_name": "b", "list": [{"x": 1}]}}
    assert config["--hub_token"] == TOKEN  # the input is left as it was


def test_sanitize_masks_secret_looking_values_under_innocent_keys():
    clean = sanitize({
        "note": f"pushed with {TOKEN}",
        "endpoint": "https://user:hunter2@s3.example.com/bucket",
        "webhook": "https://example.com/hook?token=abc123&x=1",
        "aws": "AKIAABCDEFGHIJKLMNOP",
        "model": "stabilityai/stable-diffusion-xl-base-1.0",
    })
    assert TOKEN not in json.dumps(clean)
    assert clean["endpoint"] == f"https://{MASK}@s3.example.com/bucket"
    assert clean["webhook"] == f"https://example.com/hook?token={MASK}&x={MASK}"
    assert clean["aws"] == MASK
    assert clean["model"] == "stabilityai/stable-diffusion-xl-base-1.0"


def test_sanitize_redacts_known_secrets_that_match_no_pattern():
    assert sanitize({"path": "/data/plainsecretvalue/x"}, ["plainsecretvalue"]) == {"path": f"/data/{MASK}/x"}


def test_scrub_file_rewrites_only_files_that_hold_a_secret(tmp_path: Path):
    clean_json = tmp_path / "clean.json"
    clean_json.write_text('{"--lora_rank": 4}')
    secret_json = tmp_path / "config.json"
    secret_json.write_text(json.dumps({"--lora_rank": 4, "--hub_token": TOKEN}))
    log = tmp_path / "training.log"
    log.write_text(f"step 1\nusing token {TOKEN}\nplainsecretvalue\n")
    weights = tmp_path / "weights.safetensors"
    weights.write_bytes(b"\x00binary" + TOKEN.encode())

    assert scrub_file(clean_json) is None
    assert json.loads(scrub_file(secret_json)) == {"--lora_rank": 4}
    scrubbed_log = scrub_file(log, ["plainsecretvalue"]).decode()
    assert TOKEN not in scrubbed_log and "plainsecretvalue" not in scrubbed_log and "step 1" in scrubbed_log
    assert scrub_file(weights, [TOKEN]) is None  # binary files are never read or rewritten


# -- one list of a job's secrets, one scrub --------------------------------------------------------------------------

AWS_PRESIGNED = ("https://my-bucket.s3.us-east-1.amazonaws.com/datasets/ds.zip?X-Amz-Algorithm=AWS4-HMAC-SHA256"
                 "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20240101%2Fus-east-1%2Fs3%2Faws4_request"
                 "&X-Amz-Date=20240101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
                 "&X-Amz-Security-Token=IQoJb3JpZ2luX2VjEJr%2F%2F%2F%2F%2FwEaCXVzLWVhc3QtMSJHMEUCIQ"
                 "&X-Amz-Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7")
GCS_PRESIGNED = ("https://storage.googleapis.com/my-bucket/ds.zip?X-Goog-Algorithm=GOOG4-RSA-SHA256"
                 "&X-Goog-Credential=loader%40my-project.iam.gserviceaccount.com%2F20240101%2Fauto%2Fstorage"
                 "%2Fgoog4_request&X-Goog-Date=20240101T000000Z&X-Goog-Expires=900&X-Goog-SignedHeaders=host"
                 "&X-Goog-Signature=8a3f0c1d2e4b5a69788f9e0d1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a6978695a4b3c2d1e0f")
AWS_SECRETS = ["AKIAIOSFODNN7EXAMPLE", "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
               "IQoJb3JpZ2luX2VjEJr"]
GCS_SECRETS = ["loader%40my-project", "loader@my-project", "8a3f0c1d2e4b5a69788f9e0d1c2b3a4f5e6d7c8b9a0f1e2d3c4b5a69"]
ENDPOINT_ENV = {"HF_TOKEN": "hf_EndpointToken0123456789abcdefXYZ", "BUCKET_ENDPOINT_URL": "https://s3.example.com",
                "BUCKET_ACCESS_KEY_ID": "bucket-key-id-1234", "BUCKET_SECRET_ACCESS_KEY": "bucket-secret-5678",
                "AWS_ACCESS_KEY_ID": "aws-key-id-9012", "AWS_SECRET_ACCESS_KEY": "aws-secret-3456",
                "AWS_SESSION_TOKEN": "aws-session-7890", "AWS_REGION": "eu-west-1"}


def test_job_secrets_lists_every_token_key_and_url_credential_of_a_job():
    spec = parse_job({
        "dataset": {"files": [{"url": "https://alice:files-password-1@files.example.com/a.png"},
                              {"url": "https://cdn.example.com/b.png?token=cdn-token-123456"}]},
        "config": {"model_name": "stabilityai/stable-diffusion-xl-base-1.0"},
        "hub": {"repo_id": "me/lora", "token": TOKEN},
        "storage": {"bucket": "my-bucket"},
        "resume_from": AWS_PRESIGNED,
    })
    found = job_secrets(spec, env=ENDPOINT_ENV, settings=Settings.from_env(ENDPOINT_ENV))
    for value in [TOKEN, "hf_EndpointToken0123456789abcdefXYZ", "bucket-key-id-1234", "bucket-secret-5678",
                  "aws-key-id-9012", "aws-secret-3456", "aws-session-7890", "files-password-1", "cdn-token-123456",
                  *AWS_SECRETS[:2]]:
        assert any(value in secret for secret in found), value
    assert "eu-west-1" not in found and "my-bucket" not in found  # not secrets: messages keep naming them


def test_job_secrets_of_a_job_not_parsed_yet_still_holds_its_token():
    assert TOKEN in job_secrets({"input": {"hub": {"repo_id": "me/x", "token": TOKEN}, "bad": 1}}, env={})


@pytest.mark.parametrize(("url", "secrets"), [(AWS_PRESIGNED, AWS_SECRETS), (GCS_PRESIGNED, GCS_SECRETS)])
def test_presigned_urls_keep_their_address_and_lose_their_credentials(url, secrets):
    message = scrub(f"download of {url} failed (403 Forbidden).", secrets=[])
    assert not [secret for secret in secrets if secret in message], message
    assert message.startswith(f"download of {url.split('?')[0]}?")
    assert message.endswith(" failed (403 Forbidden).")
    assert "X-Amz-Signature=***" in message or "X-Goog-Signature=***" in message


def test_credentials_in_a_url_never_come_back_in_any_form():
    cases = {
        "GET https://user:pa55word-x@host.example.com/d.zip": "pa55word-x",
        "https://ghp_tokenvalue0123456789@github.example.com/x.zip": "ghp_tokenvalue0123456789",
        "see https://h.example.com/d.zip?sig=azure-sas-signature&sv=2022-11-02.": "azure-sas-signature",
        "https://h.example.com/cb#access_token=oauth-fragment-token": "oauth-fragment-token",
        # an HTTP library names only the path: the parameter's name says it is a credential
        "Max retries exceeded with url: /d.zip?X-Amz-Signature=deadbeefcafe&x=1 (Caused by ...)": "deadbeefcafe",
        "401 for /api?access_token=plain-access-token": "plain-access-token",
    }
    for text, secret in cases.items():
        assert secret not in scrub(text), text
    assert scrub({"error": {"message": AWS_PRESIGNED, "errors": [{"message": GCS_PRESIGNED}]}}) == {
        "error": {"message": scrub(AWS_PRESIGNED), "errors": [{"message": scrub(GCS_PRESIGNED)}]}}


def test_a_plain_url_and_an_anchor_stay_as_they_are():
    for text in ("https://huggingface.co/me/lora/resolve/main/pytorch_lora_weights.safetensors",
                 "https://example.com/docs#install", "s3://my-bucket/loras/job-1/"):
        assert scrub(text) == text


# -- the faces: a bucket key never shows ------------------------------------------------------------------------------


def _presigned_dataset(s3) -> tuple[str, str]:
    """A real presigned URL, made with the endpoint's bucket keys, for an object that is not there; and its
    signature."""
    s3.client().create_bucket(Bucket="datasets")
    s3.client().create_bucket(Bucket="loras")  # the job's output bucket: it passes the destination check
    url = s3.client().generate_presigned_url("get_object", Params={"Bucket": "datasets", "Key": "missing.zip"},
                                             ExpiresIn=600)
    query = parse_qs(urlsplit(url).query)
    return url, (query.get("Signature") or query["X-Amz-Signature"])[0]


def test_a_bucket_key_never_appears_in_the_ui_run_view_or_log_tail(tmp_path: Path, monkeypatch):
    from app.state import RunRegistry
    from app.train_tab import read_log_tail

    with moto_s3() as s3:
        url, signature = _presigned_dataset(s3)
        for name, value in s3.env.items():  # the pod's own environment, as the UI process has it
            monkeypatch.setenv(name, value)
        assert s3.access_key in url
        env = {**s3.env, "ALLOW_PRIVATE_URLS": "1", "DATA_DIR": str(tmp_path)}
        registry = RunRegistry(settings=Settings.from_env(env), env=env)
        run = registry.start_training(parse_job({
            "dataset_url": url, "config": {"model_name": "stabilityai/stable-diffusion-xl-base-1.0"},
            "storage": {"bucket": "loras"}}))
        run.thread.join(120)
    # What SimpleTuner or a library may print with the key in it: the run's log and its training.log.
    run.on_event(LogLine(f"boto3: using aws_secret_access_key={s3.secret_key} for {url}", severity="warning"))
    (run.job_dir / "training.log").write_text(f"step 1\nendpoint {s3.endpoint} key {s3.access_key} "
                                              f"secret {s3.secret_key}\n{url}\n")
    snap = run.snapshot()
    assert snap.status == "failed" and snap.error["field"] == "dataset.url", snap.error
    shown = json.dumps(snap.to_dict()) + read_log_tail(snap, secrets=run.secrets) + snap.detail
    assert "step 1" in shown and "Signature=***" in shown and "/datasets/missing.zip" in shown
    for secret in (s3.access_key, s3.secret_key, signature):
        assert secret not in shown


def test_a_bucket_key_never_appears_in_the_workers_answer_or_log(tmp_path: Path):
    with moto_s3() as s3:
        url, signature = _presigned_dataset(s3)
        job = {"input": {"dataset_url": url, "config": {"model_name": "stabilityai/stable-diffusion-xl-base-1.0"},
                         "storage": {"bucket": "loras"}}}
        env = {key: value for key, value in os.environ.items()
               if key not in ("HF_TOKEN", "DATASET_ROOT") and not key.startswith(("RUNPOD_", "BUCKET_"))}
        env.update({**s3.env, "ALLOW_PRIVATE_URLS": "1", "DATA_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"})
        done = subprocess.run([sys.executable, "-m", "worker", "--test_input", json.dumps(job),
                               "--rp_log_level", "WARN"], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=120, check=False)
    said = done.stdout + done.stderr
    assert done.returncode == 1 and "dataset.url" in said, said[-3000:]
    for secret in (s3.access_key, s3.secret_key, signature):
        assert secret not in said
