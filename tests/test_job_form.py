"""The job <-> form mapping (app/job_form.py): what no field holds survives, errors land on the right field, and the
curl example is a request a shell runs as written."""

from __future__ import annotations

import json
import shlex

import pytest

from app.job_form import FIELDS, curl_example, field_errors, form_to_job, job_to_form, spec_from_form
from core.errors import SpecError
from core.spec.job import parse_job

JOB = {"input": {
    "dataset": {"hf_repo": "someone/faces", "revision": "v2"},
    "config": {"model_family": "flux", "pretrained_model_name_or_path": "black-forest-labs/FLUX.1-dev",
               "lora_rank": 32, "num_train_epochs": 4, "lr_scheduler": "cosine", "validation_prompt": "it's sks"},
    "dataloader": {"caption_extension": ".caption", "repeats": 3},
    "trigger_word": "sks",
    "hub": {"repo_id": "me/flux-sks", "license": "other", "include_checkpoints": True},
    "storage": {"bucket": "loras", "prefix": "runs/"},
    "timeout_s": 7200,
}}


def test_every_part_of_a_job_lands_in_a_field_and_comes_back():
    values = job_to_form(parse_job(JOB))
    assert set(values) == set(FIELDS)
    assert values["schedule"] == "epochs" and values["length"] == 4 and values["lora_rank"] == 32
    assert json.loads(values["extra_flags"]) == {"lr_scheduler": "cosine"}
    assert json.loads(values["extra_job"]) == {"dataloader": {"caption_extension": ".caption", "repeats": 3},
                                               "hub": {"license": "other", "include_checkpoints": True},
                                               "storage": {"bucket": "loras", "prefix": "runs/"}, "timeout_s": 7200}
    assert spec_from_form(values).to_job_json() == parse_job(JOB).to_job_json()


def test_the_goal_has_its_own_field():
    values = job_to_form(parse_job({**JOB["input"], "goal": "style"}))
    assert values["goal"] == "style" and "goal" not in values["extra_job"]
    assert spec_from_form(values).goal == "style"
    assert spec_from_form({**values, "goal": ""}).goal is None  # "None": today's defaults


def test_a_token_in_an_imported_job_is_never_put_in_a_field():
    job = {**JOB["input"], "hub": {"repo_id": "me/x", "token": "hf_SecretToken0123456789abcdef"}}
    assert "hf_SecretToken" not in json.dumps(job_to_form(parse_job(job)))


def test_a_flag_given_both_in_a_field_and_in_the_editor_is_refused():
    values = job_to_form(parse_job(JOB))
    values["extra_flags"] = json.dumps({"--lora_rank": 8})
    with pytest.raises(SpecError, match="set by a form field") as raised:
        form_to_job(values)
    assert raised.value.field == "extra_flags"


@pytest.mark.parametrize(("change", "field"), [
    ({"learning_rate": 0}, "learning_rate"),
    ({"length": -1}, "length"),
    ({"base_model": ""}, "base_model"),
    ({"optimizer": "adamw"}, "optimizer"),
    ({"extra_flags": '{"lr_schedular": "cosine"}'}, "extra_flags"),
    ({"extra_flags": "{oops"}, "extra_flags"),
    ({"dataset": '{"url": "https://a/b.zip", "path": "/x"}'}, "dataset"),
    ({"repo_id": "not a repo"}, "repo_id"),
    ({"extra_job": '{"timeout_s": 0}'}, "extra_job"),
])
def test_each_error_is_shown_next_to_its_own_field(change, field):
    values = {**job_to_form(parse_job(JOB)), **change}
    with pytest.raises(SpecError) as raised:
        spec_from_form(values)
    assert list(field_errors(raised.value)) == [field]


def test_the_curl_example_runs_in_a_shell_as_written():
    job = parse_job(JOB).to_job_json()
    words = shlex.split(curl_example(job), comments=True)
    assert words[:4] == ["curl", "-X", "POST", "https://api.runpod.ai/v2/<ENDPOINT_ID>/run"]
    assert words[words.index("-H") + 1] == "Authorization: Bearer $RUNPOD_API_KEY"
    assert json.loads(words[words.index("-d") + 1]) == job  # the apostrophe in the prompt survives quoting


def test_sample_prompts_and_one_interval_have_fields_and_never_send_two_intervals():
    values = {**job_to_form(parse_job(JOB)), "sample_prompts": "a [trigger] circle\n\n{\"prompt\": \"x\", \"seed\": 7}",
              "sample_every": 5}
    job = form_to_job(values)
    assert job["samples"] == {"prompts": ["a [trigger] circle", {"prompt": "x", "seed": 7}], "every": 5}
    assert not {"validation_steps", "validation_step_interval"} & set(job["config"])  # samples.every alone decides
    back = job_to_form(spec_from_form(values))
    assert back["sample_prompts"] == "a [trigger] circle\n{\"prompt\": \"x\", \"seed\": 7}"
    assert back["sample_every"] == 5 and "samples" not in back["extra_job"]
    # Without prompts the interval is the validation prompt's.
    assert form_to_job({**values, "sample_prompts": ""})["config"]["validation_steps"] == 5
    with pytest.raises(SpecError) as twice:
        form_to_job({**values, "extra_flags": json.dumps({"validation_step_interval": 10})})
    assert twice.value.field == "extra_flags" and "sample_every" in twice.value.message
    with pytest.raises(SpecError) as bad:
        form_to_job({**values, "sample_prompts": "{not json"})
    assert bad.value.field == "sample_prompts" and "line 1" in bad.value.message
    # An imported job that gave both: the flag wins in the trainer, so the form shows it as the one interval.
    both = job_to_form(parse_job({**JOB["input"], "samples": {"prompts": ["a"], "every": 5, "steps": 4},
                                  "config": {**JOB["input"]["config"], "validation_steps": 10}}))
    assert both["sample_every"] == 10 and json.loads(both["extra_job"])["samples"] == {"steps": 4}
    assert "validation_steps" not in both["extra_flags"]
