"""The attacks a job can try, through the real entry points: `python -m core check|run` in a subprocess, the
worker's handler, and the trainer's environment builder. Every refused case is derived from SimpleTuner's flag list.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.adapters import TrainerEnv
from core.settings import Settings
from core.simpletuner.flags import PROGRAM, classify
from core.spec.job import CONFIG_SHORTHAND, simpletuner_flags
from tests.conftest import ROOT, write_demo_dataset

FAKE_TOKEN = "hf_FAKEfakeFAKEfakeFAKEfake0123456789"
MODEL = "stabilityai/stable-diffusion-xl-base-1.0"  # a dry run (check) never downloads it


def core_cli(command: str, job: dict, tmp_path: Path) -> tuple[int, dict, str]:
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    env = {**os.environ, "HF_TOKEN": FAKE_TOKEN, "BUCKET_SECRET_ACCESS_KEY": "bucket-secret-123"}
    done = subprocess.run([sys.executable, "-m", "core", command, str(path), "--workdir", str(tmp_path / "work")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert FAKE_TOKEN not in done.stdout + done.stderr
    return done.returncode, json.loads(done.stdout), done.stderr


def program_values() -> dict:
    """Every flag of the list that the policy says runs something, set as an attacker would."""
    values = {}
    for name, flag in simpletuner_flags().items():
        if classify(name, flag) == PROGRAM and name not in CONFIG_SHORTHAND:
            values[name] = True if flag["type"] == "bool" else "sh -c 'env > /tmp/leak'"
    return values


@pytest.mark.parametrize("command", ["check", "run"])
def test_a_job_that_sets_any_program_flag_is_refused_at_validate_naming_each(command, tmp_path):
    values = program_values()
    assert {"post_checkpoint_script", "post_upload_script", "validation_external_script", "disk_low_script"} <= set(
        values)
    job = {"dataset": {"path": str(tmp_path)}, "config": {"model_name": MODEL, **values}}
    code, output, _ = core_cli(command, job, tmp_path)
    assert code == 1
    error = output["error"]
    assert error["stage"] == "validate" and error["code"] == "invalid_input"
    assert {e["field"] for e in error["errors"]} == {f"config.{name}" for name in values}
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").rglob("config.json"))


def test_env_placeholders_anywhere_in_a_job_are_refused_and_the_token_never_shows(tmp_path):
    placeholder = "{env:HF_TOKEN}"
    job = {"dataset": {"files": [{"url": "https://example.com/a.png", "caption": f"a {placeholder}"}]},
           "config": {"model_name": MODEL, "validation_prompt": f"photo of {placeholder}",
                      "modelspec_comment": ["fine", placeholder], "tracker_run_name": "{ENV:BUCKET_SECRET_ACCESS_KEY}"},
           "dataloader": [{"id": "d", "instance_prompt": placeholder}],
           "trigger_word": placeholder, "hub": {"repo_id": "me/lora", "tags": [placeholder]}}
    code, output, stderr = core_cli("check", job, tmp_path)
    assert code == 1
    fields = {e["field"] for e in output["error"]["errors"]}
    assert fields == {"dataset.files.0.caption", "config.validation_prompt", "config.modelspec_comment.1",
                      "config.tracker_run_name", "dataloader.0.instance_prompt", "trigger_word", "hub.tags.0"}
    assert "bucket-secret-123" not in json.dumps(output) + stderr


def test_a_native_dataloader_reads_only_the_staged_dataset_and_writes_only_the_job(tmp_path):
    dataset = write_demo_dataset(tmp_path / "data", count=4)
    refused = {"dataset": {"path": str(dataset)}, "config": {"model_name": MODEL},
               "dataloader": [{"id": "a", "type": "aws", "aws_bucket_name": "b",
                               "aws_endpoint_url": "http://169.254.169.254"},
                              {"id": "b", "instance_data_dir": "/etc"},
                              {"id": "c", "instance_data_dir": "../../"},
                              {"id": "d", "caption_filter_list": "/etc/shadow"},
                              {"id": "e", "parquet": {"path": "/srv/other.parquet"}},
                              {"id": "f", "repeats": 10**9, "crop": "yes"},
                              {"id": "g", "caption_shuffle": {"enable": True, "stats_file": "/etc/x"}}]}
    code, output, _ = core_cli("check", refused, tmp_path)
    assert code == 1
    assert {e["field"] for e in output["error"]["errors"]} == {
        "dataloader.0.type", "dataloader.0.aws_bucket_name", "dataloader.0.aws_endpoint_url",
        "dataloader.1.instance_data_dir", "dataloader.2.instance_data_dir", "dataloader.3.caption_filter_list",
        "dataloader.4.parquet", "dataloader.5.repeats", "dataloader.5.crop",
        "dataloader.6.caption_shuffle.stats_file"}

    moved = {"dataset": {"path": str(dataset)}, "config": {"model_name": MODEL, "logging_dir": "/srv/elsewhere"},
             "dataloader": [{"id": "img", "cache_dir_vae": "/srv/vae-elsewhere"},
                            {"id": "te", "dataset_type": "text_embeds", "default": True, "cache_dir": "/root/.x"}]}
    code, output, _ = core_cli("check", moved, tmp_path)
    assert code == 0, output
    files = json.dumps(output["trainer_files"])
    assert "elsewhere" not in files and "/root/.x" not in files
    backends = output["trainer_files"]["multidatabackend.json"]
    work = str((tmp_path / "work").resolve())
    assert all(b[k].startswith(work) for b in backends for k in ("cache_dir", "cache_dir_vae") if k in b)
    warned = " ".join(output["warnings"])
    assert "config.logging_dir" in warned and "dataloader.0.cache_dir_vae" in warned
    assert "dataloader.1.cache_dir" in warned


@pytest.mark.parametrize(("config", "field"), [
    ({"learning_rate": float("nan")}, "config.learning_rate"),
    ({"lr_warmup_steps": 1, "adam_beta1": "inf"}, "config.adam_beta1"),
    ({"max_train_steps": 10**9}, "config.max_train_steps"),
    ({"lora_rank": 4096}, "config.lora_rank"),
    ({"train_batch_size": 100000}, "config.train_batch_size"),
    ({"resolution": 100000}, "config.resolution"),
    ({"num_train_epochs": 10**6}, "config.num_train_epochs"),
])
def test_numbers_are_finite_and_bounded(config, field, tmp_path):
    job = {"dataset": {"path": str(tmp_path)}, "config": {"model_name": MODEL, **config}}
    code, output, _ = core_cli("check", job, tmp_path)
    assert code == 1 and output["error"]["field"] == field, output


def test_the_worker_refuses_the_same_jobs_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    from worker.handler import handler

    def answer(job_input: dict) -> dict:
        return asyncio.run(handler({"id": "attack", "input": job_input}))

    base = {"dataset": {"path": "demo"}, "config": {"model_name": MODEL}, "dry_run": True}
    for name, value in program_values().items():
        output = answer({**base, "config": {"model_name": MODEL, name: value}})
        assert output["error"]["field"] == f"config.{name}", output
    native = answer({**base, "dataloader": [{"id": "x", "instance_data_dir": "/etc"}]})
    assert native["error"]["field"] == "dataloader.0.instance_data_dir"
    leak = answer({**base, "config": {"model_name": MODEL, "validation_prompt": "{env:HF_TOKEN}"}})
    assert leak["error"]["field"] == "config.validation_prompt" and FAKE_TOKEN not in json.dumps(leak)
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("config.json"))


def test_the_trainer_env_is_an_allow_list_and_the_token_goes_in_only_when_given(settings: Settings):
    base = {"PATH": "/usr/bin", "HOME": "/root", "LANG": "C.UTF-8", "HF_HOME": "/cache/hf", "CUDA_HOME": "/cuda",
            "NCCL_DEBUG": "WARN", "LD_LIBRARY_PATH": "/usr/local/cuda/lib64",
            "HF_TOKEN": FAKE_TOKEN, "HUGGING_FACE_HUB_TOKEN": FAKE_TOKEN, "HF_HUB_TOKEN": FAKE_TOKEN,
            "BUCKET_SECRET_ACCESS_KEY": "s", "AWS_SECRET_ACCESS_KEY": "s", "RUNPOD_AI_API_KEY": "k",
            "UI_PASSWORD": "pw", "OPENAI_API_KEY": "k", "DATABASE_URL": "postgres://u:p@h/db", "MY_APP_SECRET": "s",
            "CUDA_AUTH_TOKEN": "s", "PYTHONPATH": "/evil", "LD_PRELOAD": "/evil.so"}
    env = TrainerEnv(settings, base=base).env(device="cuda")
    assert FAKE_TOKEN not in json.dumps(env)
    for withheld in ("BUCKET_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY", "RUNPOD_AI_API_KEY", "UI_PASSWORD",
                     "OPENAI_API_KEY", "DATABASE_URL", "MY_APP_SECRET", "CUDA_AUTH_TOKEN", "PYTHONPATH", "LD_PRELOAD"):
        assert withheld not in env, withheld
    for kept in ("HOME", "LANG", "CUDA_HOME", "NCCL_DEBUG", "LD_LIBRARY_PATH"):
        assert env[kept] == base[kept]
    assert env["HF_HUB_DISABLE_TELEMETRY"] == "1" and env["PATH"].startswith(str(settings.trainer_bin))
    with_token = TrainerEnv(settings, base=base).env(device="cuda", hf_token=FAKE_TOKEN)
    assert with_token["HF_TOKEN"] == FAKE_TOKEN
    assert {k for k, v in with_token.items() if v == FAKE_TOKEN} == {"HF_TOKEN"}


@pytest.mark.parametrize("where", ["negative_prompt", "prompts"])
def test_a_trigger_word_that_builds_an_env_placeholder_in_a_sample_is_refused_naming_the_sample(where, tmp_path):
    """`[trigger]` is filled in after the job's values are checked: "{[trigger]:HF_TOKEN}" with the trigger word
    "env" would reach SimpleTuner as "{env:HF_TOKEN}"; the filled-in text is checked too."""
    text = "{[trigger]:HF_TOKEN}"
    samples = ({"prompts": ["a photo of [trigger]"], "negative_prompt": text} if where == "negative_prompt"
               else {"prompts": ["a photo of [trigger]", text]})
    job = {"dataset": {"path": str(write_demo_dataset(tmp_path / "data", count=2))},
           "config": {"model_name": MODEL}, "trigger_word": "env", "samples": samples}
    code, output, _ = core_cli("check", job, tmp_path)
    assert code == 1
    error = output["error"]
    assert error["stage"] == "validate" and error["code"] == "invalid_input"
    assert error["field"] == ("samples.negative_prompt" if where == "negative_prompt" else "samples.prompts.1")
    assert "placeholder" in error["message"]
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").rglob("config.json"))
