"""The job model: what users send, what they get told when it is wrong."""

from __future__ import annotations

import json

import pytest

from core.errors import SpecError
from core.spec.job import parse_job, simpletuner_flags

SEED_REQUEST = {
    "input": {
        "dataset_url": "https://example.com/dataset.zip",
        "config": {
            "model_name": "black-forest-labs/FLUX.1-dev",
            "resolution": 1024,
            "train_batch_size": 1,
            "num_train_epochs": 10,
            "checkpointing_steps": 500,
            "learning_rate": 1e-5,
        },
        "dataloader": {"caption_extension": ".txt", "shuffle_tags": True, "keep_tokens": 1},
    }
}


def job(**fields) -> dict:
    base = {"dataset": {"path": "/data/set"}, "config": {"model_name": "stabilityai/stable-diffusion-xl-base-1.0"}}
    base.update(fields)
    return base


def rejected(data) -> SpecError:
    with pytest.raises(SpecError) as caught:
        parse_job(data)
    return caught.value


def test_the_seed_request_parses_with_shorthand_mapped_to_native_flags():
    spec = parse_job(SEED_REQUEST)
    assert spec.config == {
        "pretrained_model_name_or_path": "black-forest-labs/FLUX.1-dev",
        "resolution": 1024,
        "train_batch_size": 1,
        "num_train_epochs": 10,
        "checkpoint_step_interval": 500,
        "learning_rate": 1e-5,
        "model_family": "flux",
        "model_flavour": "dev",
    }
    assert spec.dataset.url == "https://example.com/dataset.zip"
    assert spec.dataloader.shuffle_tags and spec.dataloader.keep_tokens == 1


def test_native_keys_with_or_without_dashes_and_string_values_are_typed():
    spec = parse_job(job(config={"--pretrained_model_name_or_path": "x/sdxl-model", "--model_family": "sdxl",
                                 "max_train_steps": "50", "--learning_rate": "2e-4", "use_ema": "false"}))
    assert spec.config["max_train_steps"] == 50
    assert spec.config["learning_rate"] == 2e-4
    assert spec.config["use_ema"] is False
    assert spec.model_family == "sdxl"


def test_a_job_json_string_and_a_bare_job_both_parse():
    assert parse_job(json.dumps(SEED_REQUEST)).model_family == "flux"
    assert parse_job(SEED_REQUEST["input"]).model_family == "flux"


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        (job(config={"model_name": "a/b-xl", "max_train_steps": "ten"}), "config.max_train_steps", "whole number"),
        (job(config={"model_name": "a/b-xl", "max_train_steps": -5}), "config.max_train_steps", "at least 0"),
        (job(config={"model_name": "a/b-xl", "learning_rate": 0}), "config.learning_rate", "greater than 0"),
        (job(config={"model_name": "a/b-xl", "lerning_rate": 1e-4}), "config.lerning_rate", "learning_rate"),
        (job(config={"model_name": "a/b-xl", "--optimizer": "adamw"}), "config.--optimizer", "torch-adamw"),
        (job(config={"model_name": "a/b", "model_family": "sdxxl"}), "config.model_family", "sdxl"),
        (job(config={"model_name": "some/unknown-model"}), "config.model_family", "model_family"),
        (job(config={"resolution": 512}), "config.model_name", "base model"),
        ({"config": {"model_name": "a/b-xl"}}, "dataset", "needs a dataset"),
        (job(dataset={"path": "/x", "url": "https://a/b.zip"}), "dataset", "exactly one"),
        (job(dataset_url="https://a/b.zip"), "dataset", "not both"),
        (job(trigger_word="a\nb"), "trigger_word", "one line"),
        (job(timeout_s=-1), "timeout_s", "greater than 0"),
        (job(dry_run="maybe"), "dry_run", "bool"),
        (job(hub={"repo_id": "no-namespace"}), "hub.repo_id", "user-or-org/name"),
        (job(hub={"repo_id": "a/b", "privat": True}), "hub.privat", "private"),
        (job(dataloader={"shufle_tags": True}), "dataloader.shufle_tags", "shuffle_tags"),
        (job(dataloader={"caption_extension": "t x t"}), "dataloader.caption_extension", ".txt"),
        (job(dataloader=[{"type": "local"}]), "dataloader", "'id'"),
        (job(datset={"path": "/x"}), "datset", "dataset"),
        (job(config=["not", "a", "dict"]), "config", "object"),
    ],
)
def test_bad_jobs_are_rejected_naming_the_field(data, field, words):
    error = rejected(data)
    assert error.field == field, error.errors
    assert words in error.message, error.message
    assert error.to_payload()["stage"] == "validate" and error.to_payload()["code"] == "invalid_input"


def test_every_bad_field_is_reported_at_once():
    error = rejected(job(config={"model_name": "a/b-xl", "max_train_steps": -1, "bogus_flag": 1}))
    fields = {e["field"] for e in error.errors}
    assert fields == {"config.max_train_steps", "config.bogus_flag"}


def test_invalid_json_text_names_where():
    error = rejected('{"input": {"config": }')
    assert error.field == "input" and "line 1" in error.message


def test_dataloader_shorthand_has_no_silent_drops():
    spec = parse_job(job(dataloader={"keep_tokens": 2}))
    assert any("keep_tokens" in warning for warning in spec.warnings())
    # shuffle_tags maps to SimpleTuner's caption_shuffle (see trainer_config), so it is not a warning
    assert not parse_job(job(dataloader={"shuffle_tags": True, "keep_tokens": 1})).warnings()


def test_a_native_dataloader_list_is_taken_as_is():
    backends = [{"id": "mine", "type": "local", "dataset_type": "image", "repeats": 3}]
    assert parse_job(job(dataloader=backends)).dataloader == backends


def test_hub_is_private_by_default_and_the_token_is_never_exported():
    spec = parse_job(job(hub={"repo_id": "me/my-lora", "token": "hf_secret_value"}))
    assert spec.hub.private is True
    assert "hf_secret_value" not in repr(spec)
    exported = json.dumps(spec.to_job_json())
    assert "hf_secret_value" not in exported


def test_export_then_parse_is_a_round_trip():
    spec = parse_job(SEED_REQUEST)
    again = parse_job(spec.to_job_json())
    assert again == spec
    assert again.to_job_json() == spec.to_job_json()


def test_the_committed_flag_list_has_simpletuners_real_flags():
    flags = simpletuner_flags()
    assert len(flags) > 500
    assert "sdxl" in flags["model_family"]["choices"]
    assert "shuffle_tags" not in flags and "keep_tokens" not in flags


@pytest.mark.parametrize(("fields", "field", "words"), [
    ({"hub": {"repo_id": "a/b", "license": "apache2"}}, "hub.license", "apache-2.0"),
    ({"hub": {"repo_id": "a/b", "tags": ["ok", "no spaces"]}}, "hub.tags", "each tag"),
    ({"hub": {"repo_id": "a/b", "tags": [f"t{i}" for i in range(21)]}}, "hub.tags", "at most 20"),
    ({"trigger_word": "x" * 101}, "trigger_word", "at most 100"),
    ({"config": {"model_name": "a/b-xl", "validation_prompt": "p" * 2001}}, "config.validation_prompt", "limit"),
    ({"config": {"model_name": "a/b-xl", "validation_prompt": "a\u0000b"}}, "config.validation_prompt", "control"),
    ({"dataloader": {"repeats": "many"}}, "dataloader.repeats", "whole number"),
    ({"dataloader": {"crop_style": "sideways"}}, "dataloader.crop_style", "center"),
    ({"dataloader": {"caption_dropout_probability": 2}}, "dataloader.caption_dropout_probability", "between"),
    ({"dataset": {"files": [{"url": "https://a/b.png", "caption": "one\ntwo"}]}}, "dataset.files.0.caption",
     "one line"),
])
def test_values_have_types_bounds_and_plain_text(fields, field, words):
    error = rejected(job(**fields))
    assert error.field == field, error.errors
    assert words in error.message, error.message


def test_the_hub_license_list_is_data_and_other_is_accepted():
    assert parse_job(job(hub={"repo_id": "a/b", "license": "openrail++", "tags": ["lora", "sdxl:base"]})).hub
    assert parse_job(job(hub={"repo_id": "a/b", "license": "other"})).hub.license == "other"
