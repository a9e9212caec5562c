"""Redaction helpers: known secrets are masked anywhere, secret-looking keys and values never leave."""

from __future__ import annotations

import json
from pathlib import Path

from core.secrets import MASK, is_secret_key, redact, sanitize, sanitize_config, scrub_file

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
    assert clean["endpoint"] == f"https://user:{MASK}@s3.example.com/bucket"
    assert clean["webhook"] == f"https://example.com/hook?token={MASK}&x=1"
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
