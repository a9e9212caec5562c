"""core/settings.py: every variable read once, each destination rule decided once (a pure function of a mapping)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from core.errors import SetupError
from core.settings import Settings, hub_cache_path

BUCKET = {"BUCKET_ENDPOINT_URL": "http://minio:9000", "BUCKET_ACCESS_KEY_ID": "key-id-1",
          "BUCKET_SECRET_ACCESS_KEY": "secret-key-1"}


def test_the_hf_cache_is_HF_HUB_CACHE_else_HF_HOME_hub_else_the_default(tmp_path):
    assert Settings.from_env({"HF_HUB_CACHE": "/c/hub", "HF_HOME": "/h"}).hub_cache == Path("/c/hub")
    assert Settings.from_env({"HF_HOME": "/h"}).hub_cache == Path("/h/hub")
    assert Settings.from_env({"XDG_CACHE_HOME": "/x"}).hub_cache == Path("/x/huggingface/hub")
    assert Settings.from_env({}).hub_cache == Path("~/.cache/huggingface/hub").expanduser()
    # the same rule for the one caller without a Settings (a job's family lookup while it is parsed)
    for env in ({"HF_HUB_CACHE": "/c/hub", "HF_HOME": "/h"}, {"HF_HOME": "/h"}, {"XDG_CACHE_HOME": "/x"}, {}):
        assert hub_cache_path(env) == Settings.from_env(env).hub_cache, env
    # a Settings made in code with only hf_home (tests, the UI) still reads HF_HOME/hub
    made = Settings(trainer_venv=tmp_path / "venv", data_root=tmp_path / "data", hf_home=tmp_path / "hf")
    assert made.hub_cache == tmp_path / "hf" / "hub"
    assert dataclasses.replace(Settings.from_env({}), hf_home=tmp_path / "hf").hub_cache == tmp_path / "hf" / "hub"


def test_the_jobs_token_wins_over_HF_TOKEN():
    endpoint = Settings.from_env({"HF_TOKEN": "hf_endpoint_token"})
    assert endpoint.token("hf_job_token") == "hf_job_token"
    assert endpoint.token(None) == endpoint.token("") == "hf_endpoint_token"
    assert Settings.from_env({}).token(None) is None
    assert "hf_endpoint_token" not in repr(endpoint)


def test_the_bucket_and_its_keys():
    settings = Settings.from_env({**BUCKET, "BUCKET_NAME": " loras "})
    assert settings.bucket_name == "loras" and settings.s3.has_keys
    assert settings.s3.endpoint_url == "http://minio:9000" and settings.missing_bucket_vars == []
    assert "secret-key-1" not in repr(settings)
    bare = Settings.from_env({"BUCKET_ENDPOINT_URL": "http://minio:9000"})
    assert bare.bucket_name is None and not bare.s3.has_keys
    assert bare.missing_bucket_vars == ["BUCKET_ACCESS_KEY_ID", "BUCKET_SECRET_ACCESS_KEY"]


def test_the_worker_endpoints_policy_variables():
    settings = Settings.from_env({"JOB_DEFAULT_LORA_RANK": " 16 ", "JOB_DEFAULT_MODEL": "",
                                  "EXECUTION_TIMEOUT_S": "900", "CUDA_VISIBLE_DEVICES": ""})
    assert settings.job_defaults == (("JOB_DEFAULT_LORA_RANK", "16"),)  # an empty one is not set
    assert settings.execution_timeout_s == 900.0 and settings.cuda_visible_devices == ""
    assert Settings.from_env({}).execution_timeout_s is None
    for bad in ("ten minutes", "0", "-5"):
        with pytest.raises(SetupError) as caught:
            Settings.from_env({"EXECUTION_TIMEOUT_S": bad})
        assert caught.value.field == "EXECUTION_TIMEOUT_S" and repr(bad) in caught.value.message


def test_below_the_faces_only_settings_reads_the_environment():
    """Settings.from_env is the one reading; core/__main__.py is a face, and the trainer's allow-listed environment
    (core/training/trainer.py, core/adapters/trainer_env.py) starts from the process's own."""
    root = Path(__file__).resolve().parent.parent
    allowed = {"core/settings.py", "core/__main__.py", "core/training/trainer.py", "core/adapters/trainer_env.py"}
    readers = re.compile(r"\bos\.environ\b|\bgetenv\(|\benviron\[")
    found = [f"{rel}:{number}" for path in sorted((root / "core").rglob("*.py"))
             if (rel := path.relative_to(root).as_posix()) not in allowed
             for number, line in enumerate(path.read_text().splitlines(), 1) if readers.search(line)]
    assert found == [], "take a Settings (or what it built) instead"
