"""The job as a form: the worker's job JSON <-> the values of the UI's fields, and field errors back to fields.

The form spans tabs (config fields on Config, dataset and trigger word on Dataset, repo on Publish); every field
has a name in FIELDS, and handlers take the values as keyword arguments of those names. What no field holds goes
to the two JSON editors (`extra_flags`: other SimpleTuner flags; `extra_job`: other job fields), so importing a
job and exporting it again changes nothing. Pure: no gradio, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from core.errors import SpecError
from core.simpletuner import lookup
from core.spec import CONFIG_SHORTHAND, SCHEDULE_FLAGS, JobSpec, parse_job, unwrap_input

# Form field -> the SimpleTuner flag it sets.
FLAG_FIELDS: dict[str, str] = {
    "base_model": "pretrained_model_name_or_path",
    "model_family": "model_family",
    "lora_rank": "lora_rank",
    "lora_alpha": "lora_alpha",
    "learning_rate": "learning_rate",
    "optimizer": "optimizer",
    "train_batch_size": "train_batch_size",
    "resolution": "resolution",
    "checkpoint_step_interval": "checkpoint_step_interval",
    "validation_prompt": "validation_prompt",
    "seed": "seed",
}
FIELDS: tuple[str, ...] = (
    *FLAG_FIELDS, "sample_prompts", "sample_every", "schedule", "length", "extra_flags", "extra_job", "dataset",
    "trigger_word", "repo_id", "private", "goal",
)
INTERVAL_FLAGS = ("validation_steps", "validation_step_interval")
"""SimpleTuner's spellings of the render interval: the form's one interval (`sample_every`) sends one of them only
without sample prompts (with them it is `samples.every`), so a job never asks for two intervals."""
NO_GOAL = ""
"""The goal field's value for "no goal" (today's defaults)."""
# Job keys the form holds in fields of their own; every other key of the job goes to extra_job.
_OWN_JOB_KEYS = {"config", "dataset", "dataset_url", "trigger_word", "goal"}
_FLAG_OF = {**{flag: name for name, flag in FLAG_FIELDS.items()}, **{f: "length" for f in SCHEDULE_FLAGS.values()},
            "validation_steps": "sample_every", "validation_step_interval": "sample_every"}


def _json_object(text: str | None, *, field: str) -> dict[str, Any]:
    if text is None or not str(text).strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", field=field) from None
    if not isinstance(value, dict):
        raise SpecError("must be a JSON object ({...})", field=field)
    return value


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _number(value: Any) -> Any:
    """Whole floats from number inputs (4.0) are sent as ints, as a person would write them."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _samples(values: Mapping[str, Any]) -> dict[str, Any]:
    """`samples` from its fields: a prompt per line (a line that is a JSON object: a prompt with settings of its own),
    and the interval; {} without prompts."""
    prompts: list[Any] = []
    for number, line in enumerate(str(values.get("sample_prompts") or "").splitlines(), start=1):
        text = line.strip()
        if text.startswith("{"):
            try:
                prompts.append(json.loads(text))
            except json.JSONDecodeError as exc:
                raise SpecError(f"line {number} is not a JSON object: {exc.msg}", field="sample_prompts") from None
        elif text:
            prompts.append(text)
    if not prompts:
        return {}
    every = values.get("sample_every")
    return {"prompts": prompts, **({} if _blank(every) else {"every": _number(every)})}


def form_to_job(values: Mapping[str, Any]) -> dict[str, Any]:  # noqa: C901 (one straight pass over the form's sections, each a guarded copy)
    """The raw job (bare, not wrapped in "input") the form describes. Raises SpecError for a JSON editor that does
    not parse or a flag set twice; everything else is parse_job's to judge."""
    config: dict[str, Any] = {}
    for name, flag in FLAG_FIELDS.items():
        value = values.get(name)
        if not _blank(value):
            config[flag] = value.strip() if isinstance(value, str) else value
    schedule = values.get("schedule") or "steps"
    if schedule not in SCHEDULE_FLAGS:
        raise SpecError(f"must be 'steps' or 'epochs', got {schedule!r}", field="schedule")
    if not _blank(values.get("length")):
        config[SCHEDULE_FLAGS[schedule]] = _number(values["length"])
    for flag in ("lora_rank", "train_batch_size", "resolution", "checkpoint_step_interval", "seed"):
        if flag in config:
            config[flag] = _number(config[flag])
    samples = _samples(values)
    if not samples and not _blank(values.get("sample_every")):
        config["validation_steps"] = _number(values["sample_every"])  # the validation prompt's interval
    extra_flags = _json_object(values.get("extra_flags"), field="extra_flags")
    for key in extra_flags:
        bare = key.removeprefix("--")
        native = CONFIG_SHORTHAND.get(bare, bare)
        if native in config or (samples and native in INTERVAL_FLAGS):
            raise SpecError(f"'{key}' is set by a form field ({_FLAG_OF.get(native, native)}); change it there",
                            field="extra_flags")
    config.update(extra_flags)
    job: dict[str, Any] = {}
    dataset = _json_object(values.get("dataset"), field="dataset")
    if dataset:
        job["dataset"] = dataset
    job["config"] = config
    trigger = values.get("trigger_word")
    if not _blank(trigger):
        job["trigger_word"] = str(trigger).strip()
    if not _blank(values.get("goal")):
        job["goal"] = str(values["goal"]).strip()
    extra_job = _json_object(values.get("extra_job"), field="extra_job")
    clash = sorted(_OWN_JOB_KEYS & set(extra_job))
    if clash:
        raise SpecError(f"'{clash[0]}' has a field of its own in the form; set it there", field="extra_job")
    hub = dict(extra_job.pop("hub", None) or {})
    if samples:  # the prompts and interval from their fields; the samples' other settings from the editor
        given = extra_job.pop("samples", None) or {}
        if not isinstance(given, dict) or {"prompts", "every"} & set(given):
            raise SpecError("'samples' prompts and interval have fields of their own (Sample prompts, Sample every); "
                            "keep only its other settings here", field="extra_job")
        job["samples"] = {**given, **samples}
    job.update(extra_job)
    repo_id = values.get("repo_id")
    if not _blank(repo_id):
        hub["repo_id"] = str(repo_id).strip()
        hub["private"] = bool(values.get("private", True))
    if hub:
        job["hub"] = hub
    return job


def job_to_form(spec: JobSpec) -> dict[str, Any]:
    """The form values that describe `spec` (its token left out: a token is never put back on a page)."""
    job = spec.to_job_json()["input"]
    config = dict(job.pop("config", {}))
    values: dict[str, Any] = {name: config.pop(flag, None) for name, flag in FLAG_FIELDS.items()}
    if config.get("model_flavour") and lookup(str(values["base_model"])) == (values["model_family"],
                                                                             config["model_flavour"]):
        config.pop("model_flavour")  # the base model's own flavour, which parse_job sets again
    if "max_train_steps" in config:
        values["schedule"], values["length"] = "steps", config.pop("max_train_steps")
    elif "num_train_epochs" in config:
        values["schedule"], values["length"] = "epochs", config.pop("num_train_epochs")
    else:
        values["schedule"], values["length"] = "steps", None
    samples = dict(job.pop("samples", None) or {})
    prompts = samples.pop("prompts", [])
    values["sample_prompts"] = "\n".join(p if isinstance(p, str) else json.dumps(p) for p in prompts)
    # One interval: a config flag for it wins over samples.every in the trainer's config, so it is the one shown
    interval = next((config.pop(flag) for flag in INTERVAL_FLAGS if flag in config), None)
    every = samples.pop("every", None) if prompts else None
    values["sample_every"] = interval if interval is not None else every
    if samples:
        job["samples"] = samples  # its other settings (an edit job's samples without prompts: all of it)
    values["extra_flags"] = _pretty(config)
    values["dataset"] = _pretty(job.pop("dataset", None) or {})
    values["trigger_word"] = job.pop("trigger_word", None) or ""
    values["goal"] = job.pop("goal", None) or NO_GOAL
    hub = dict(job.pop("hub", None) or {})
    values["repo_id"] = hub.pop("repo_id", "")
    values["private"] = hub.pop("private", True)
    if hub:
        job["hub"] = hub
    values["extra_job"] = _pretty(job)
    for name in ("base_model", "validation_prompt"):
        values[name] = "" if values[name] is None else str(values[name])
    return values


def _pretty(value: dict[str, Any]) -> str:
    return json.dumps(value, indent=2) if value else ""


def form_field_of(error_field: str | None) -> str:
    """The form field an error of parse_job (its `field`) belongs to."""
    name = error_field or ""
    if name in FIELDS:
        return name
    if name.startswith("config."):
        key = name.removeprefix("config.").removeprefix("--")
        if key == "model_name":  # the "no base model" error
            return "base_model"
        native = CONFIG_SHORTHAND.get(key, key)
        return "sample_every" if native in INTERVAL_FLAGS else _FLAG_OF.get(native, "extra_flags")
    if name.startswith("samples.prompts"):
        return "sample_prompts"
    if name == "samples.every":
        return "sample_every"
    if name.startswith(("dataset", "dataset_url")):
        return "dataset"
    if name == "trigger_word":
        return "trigger_word"
    if name in ("hub.repo_id", "hub.private"):
        return "repo_id" if name == "hub.repo_id" else "private"
    return "extra_job"


def field_errors(error: SpecError) -> dict[str, list[str]]:
    """SpecError -> {form field: [messages]}; a message keeps its own field name when it belongs to an editor."""
    out: dict[str, list[str]] = {}
    for item in error.errors:
        field = form_field_of(item.get("field"))
        message = item["message"]
        if field in ("extra_flags", "extra_job") and item.get("field") not in (None, field):
            message = f"{item['field']}: {message}"
        out.setdefault(field, []).append(message)
    return out


def curl_example(job: dict[str, Any]) -> str:
    """A ready-to-run request for a RunPod serverless endpoint running this project's worker."""
    notes, given = [], unwrap_input(job)
    dataset = given.get("dataset") or {}
    if "path" in dataset:
        notes.append("# dataset.path is a folder on this machine: a serverless worker cannot read it. Upload the\n"
                     "# dataset as a .zip (https or s3) and give \"dataset_url\", or use"
                     " \"dataset\": {\"hf_repo\": ...}.")
    if "hub" in given:
        notes.append("# The worker pushes with its HF_TOKEN secret (a token is never put in this JSON).")
    body = json.dumps(job, indent=2).replace("'", "'\\''")
    lines = [*notes, "curl -X POST https://api.runpod.ai/v2/<ENDPOINT_ID>/run \\",
             '  -H "Authorization: Bearer $RUNPOD_API_KEY" \\', '  -H "Content-Type: application/json" \\',
             f"  -d '{body}'"]
    return "\n".join(lines)


def spec_from_form(values: Mapping[str, Any]) -> JobSpec:
    """The validated job the form describes; SpecError (naming form-mappable fields) when it is not valid."""
    return parse_job(form_to_job(values))
