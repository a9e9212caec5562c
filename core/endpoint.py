"""The worker endpoint's policy for a job, before it runs: the endpoint's config defaults (JOB_DEFAULT_*), a
destination the job's outputs can reach (the worker deletes a job's folder when it ends), and a deadline before the
endpoint's own execution timeout. The settings come from Settings (core/settings.py); the worker only hands over
RunPod's job.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core.errors import SetupError, SpecError
from core.publishing import require_destination
from core.settings import EXECUTION_TIMEOUT_VAR, JOB_DEFAULT_VARS, Settings
from core.spec import CONFIG_SHORTHAND, SCHEDULE_FLAGS, JobSpec, normalize_config, parse_job, unwrap_input

LEADS = set(SCHEDULE_FLAGS.values())


def endpoint_settings(settings: Settings, *, samples: Path) -> Settings:
    """`settings`, with `samples` as the dataset root when DATASET_ROOT is unset."""
    return settings if settings.dataset_root else dataclasses.replace(settings, dataset_root=samples)


def endpoint_job(job: Mapping[str, Any], settings: Settings) -> tuple[JobSpec, list[str]]:
    """RunPod's job (its "input", its "policy") as the spec this endpoint runs, and the warnings to answer with:
    the endpoint's config defaults added, a destination required (require_destination), timeout_s bounded by the
    endpoint's execution timeout (job_deadline). Raises SpecError or SetupError."""
    spec = parse_job(with_defaults(job.get("input"), job_defaults(settings)))
    spec, warnings = require_destination(spec, settings)
    spec, limited = job_deadline(spec, job, settings=settings)
    return spec, warnings + limited


def job_defaults(settings: Settings) -> dict[str, Any]:
    """The endpoint's JOB_DEFAULT_* variables as native SimpleTuner flags; a bad value is a SetupError naming it."""
    raw = {JOB_DEFAULT_VARS[var]: value for var, value in settings.job_defaults}
    try:
        return normalize_config(raw)
    except SpecError as error:
        names = {f"config.{flag}": var for var, flag in JOB_DEFAULT_VARS.items()}
        var = names.get(error.field or "", "JOB_DEFAULT_*")
        raise SetupError(f"{var}: {error.errors[0]['message']}", field=var) from None


def _native(key: str) -> str:
    bare = key[2:] if key.startswith("--") else key
    return CONFIG_SHORTHAND.get(bare, bare)


def with_defaults(raw: Any, defaults: Mapping[str, Any]) -> Any:
    """The job input (bare, or wrapped in {"input": ...}) with the endpoint's config defaults added where the job's
    config says nothing; a default for one of max_train_steps/num_train_epochs never joins a job that sets the
    other."""
    job = unwrap_input(raw)
    if not defaults or not isinstance(job, Mapping):
        return raw
    config = job.get("config", {})
    if not isinstance(config, Mapping):
        return raw  # parse_job names the bad field
    given = {_native(str(key)) for key in config}
    added = {flag: value for flag, value in defaults.items()
             if flag not in given and not (flag in LEADS and given & LEADS)}
    return {**job, "config": {**added, **config}}


def job_deadline(spec: JobSpec, job: Mapping[str, Any], *, settings: Settings) -> tuple[JobSpec, list[str]]:
    """The job's timeout_s, never past the endpoint's own execution timeout, so that the deadline's early stop
    (a checkpoint uploaded, status `partial`) comes before RunPod kills the worker. runpod 1.12 hands the handler
    no such value of its own: the endpoint says it in EXECUTION_TIMEOUT_S (seconds), and a job that arrives with
    RunPod's `policy.executionTimeout` (milliseconds) is held to that too. The smallest wins."""
    limits: dict[str, float] = {}
    if settings.execution_timeout_s is not None:
        limits[EXECUTION_TIMEOUT_VAR] = settings.execution_timeout_s
    policy = job.get("policy")
    timeout_ms = policy.get("executionTimeout") if isinstance(policy, Mapping) else None
    if isinstance(timeout_ms, int | float) and not isinstance(timeout_ms, bool) and timeout_ms > 0:
        limits["policy.executionTimeout"] = timeout_ms / 1000
    if not limits or min(limits.values()) >= spec.timeout_s:
        return spec, []
    name, limit = min(limits.items(), key=lambda item: item[1])
    warnings = [f"timeout_s: {spec.timeout_s} s is past the endpoint's execution timeout ({name}, {limit:g} s): "
                "the job stops before that instead"] if "timeout_s" in spec.model_fields_set else []
    return spec.model_copy(update={"timeout_s": max(1, int(limit))}), warnings
