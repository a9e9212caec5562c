"""The worker's answers: a job's output (the README's API shape) and the one error shape of the API,
`{"error": {"code", "stage", "message", "field", ...}}`, made here and nowhere else.

runpod turns a returned dict's "error" into the job's error and its "refresh_worker" into a fresh worker after the
job (docs/runpod-notes.md): a trainer that crashed may leave GPU memory or state behind, so the next job gets a clean
worker; a cancel, a time limit or a bad job leave nothing behind and keep the worker.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from core.errors import ErrorCode, JobCancelled, JobError, JobTimeout, TrainingError
from core.result import JobResult
from core.secrets import scrub

LOG_TAIL_LINES = 20
LOG_TAIL_CHARS = 4000


def job_output(result: JobResult, *, warnings: Iterable[str] = (),
               secrets: Iterable[str | None] = ()) -> dict[str, Any]:
    """A finished job (trained and published, or a dry run) as the API returns it. Its messages (warnings, the
    preflight report) and a dry run's trainer files are scrubbed of `secrets`; its URLs (the Hub's, storage's
    presigned ones) are what the job asked for and stay whole."""
    output = result.to_output()
    known = [s for s in secrets if s]
    output["warnings"] = list(dict.fromkeys(_clean(str(w), known) for w in [*output.get("warnings", []), *warnings]))
    for name in ("preflight", "trainer_files", "captioning"):
        if name in output:
            output[name] = scrub(output[name], secrets=known)
    return output


def needs_fresh_worker(error: BaseException) -> bool:
    """A trainer crash or a bug of ours: the next job should not run in this process."""
    if isinstance(error, (JobCancelled, JobTimeout)):
        return False
    return isinstance(error, TrainingError) or not isinstance(error, JobError)


def _clean(text: str, secrets: list[str]) -> str:
    return scrub(text, secrets=secrets)


def error_output(error: BaseException, *, secrets: Iterable[str | None] = ()) -> dict[str, Any]:
    """The error answer for any failure: a JobError's own payload, or an internal error naming the exception.

    All of it (message, per-field errors, preflight report, log tail) is scrubbed of the given secrets and of
    anything that looks like one (tokens, URL credentials)."""
    if isinstance(error, JobError):
        payload = error.to_payload()
    else:
        payload = {"code": ErrorCode.INTERNAL_ERROR.value, "stage": "worker", "field": None,
                   "message": f"the worker failed: {type(error).__name__}: {error}"}
    if isinstance(error, TrainingError) and needs_fresh_worker(error) and error.log_tail:
        # The job's folder is removed after the job: the end of SimpleTuner's log is the only trace left.
        payload["log_tail"] = "\n".join(error.log_tail.splitlines()[-LOG_TAIL_LINES:])[-LOG_TAIL_CHARS:]
    answer: dict[str, Any] = {"error": scrub(payload, secrets=[s for s in secrets if s])}
    if needs_fresh_worker(error):
        answer["refresh_worker"] = True
    return answer


def error_as_text(answer: dict[str, Any]) -> dict[str, Any]:
    """The same answer with its error payload as JSON text: runpod's local API (`--rp_serve_api`, and the realtime
    API) declares a job's error as a string and answers HTTP 500 to anything else. RunPod's job API takes the
    payload as it is (its own docs return a list there)."""
    if isinstance(answer.get("error"), dict):
        return {**answer, "error": json.dumps(answer["error"])}
    return answer
