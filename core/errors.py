"""The job's typed error tree. Each error has a default stage; the pipeline's `stage()` sets the one that was running
when the error came through it. Faces turn one into a payload at their edge."""

from __future__ import annotations


class JobError(Exception):
    """Base of every error a job can end with. Never carries a secret in its message."""

    code = "job_error"
    stage = "job"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None, stage: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code
        if stage is not None:
            self.stage = stage
        self.salvaged: dict | None = None
        """What was published of a run cut short (hub.on_failure): the partial result, or its publish error."""

    def to_payload(self) -> dict:
        """The one error shape of the API: {"code", "stage", "message", "field"} (+ "salvaged" when set)."""
        payload: dict[str, object] = {"code": self.code, "stage": self.stage, "message": self.message,
                                      "field": self.field}
        if self.salvaged is not None:
            payload["salvaged"] = self.salvaged
        return payload

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class SpecError(JobError):
    """The job JSON is invalid. `errors` holds one payload per bad field."""

    code = "invalid_input"
    stage = "validate"

    def __init__(self, message: str, *, field: str | None = None, errors: list[dict] | None = None):
        super().__init__(message, field=field)
        self.errors = errors or [{"field": field, "message": message}]

    def to_payload(self) -> dict:
        payload = super().to_payload()
        payload["errors"] = self.errors
        return payload


class DatasetError(JobError):
    code = "dataset_error"
    stage = "dataset"


class AddressRefused(DatasetError):
    """A URL's scheme or address is not allowed by the address policy."""

    code = "address_refused"


class DownloadError(DatasetError):
    code = "download_failed"


class UnsafeArchive(DatasetError):
    code = "unsafe_archive"


class EmptyDataset(DatasetError):
    code = "no_usable_images"


class PreflightError(DatasetError):
    """The staged dataset would not train as it is. `report` is the whole preflight report, sent with the error."""

    stage = "preflight"

    def __init__(self, message: str, *, report: dict):
        super().__init__(message, field="dataset")
        self.report = report

    def to_payload(self) -> dict:
        return {**super().to_payload(), "preflight": self.report}


class ResumeError(JobError):
    """The checkpoint named by resume_from cannot be fetched or used."""

    code = "resume_failed"
    stage = "resume"


class ModelDownloadError(JobError):
    """The base model (or its VAE) cannot be fetched from the Hub into the cache."""

    code = "model_download_failed"
    stage = "model"


class TrainingError(JobError):
    """SimpleTuner failed. The message is SimpleTuner's own, from its error event or log."""

    code = "training_failed"
    stage = "train"

    def __init__(self, message: str, *, exit_code: int | None = None, log_tail: str = "", code: str | None = None):
        super().__init__(message, code=code)
        self.exit_code = exit_code
        self.log_tail = log_tail


class JobCancelled(JobError):
    """Someone stopped the job (the UI's Cancel, RunPod's /cancel, Ctrl-C); raised by Cancel.check (core/cancel.py)."""

    code = "cancelled"


class JobTimeout(JobError):
    """The job ran past its timeout_s; raised by Cancel.check (core/cancel.py)."""

    code = "timeout"


class SetupError(JobError):
    """The machine is not ready (no trainer env, missing tool)."""

    code = "setup_error"
    stage = "setup"


class PublishError(JobError):
    code = "publish_failed"
    stage = "publish"


class HubAuthError(PublishError):
    code = "hub_auth"


class HubNotFound(PublishError):
    code = "hub_not_found"


class HubConflict(PublishError):
    code = "hub_conflict"


class HubQuotaError(PublishError):
    code = "hub_quota"


class StorageError(PublishError):
    """Upload to an S3-compatible bucket failed."""

    code = "storage_failed"


def exception_chain(exc: BaseException | None) -> list[BaseException]:
    """`exc` and every exception behind it (cause or context), outermost first: a library's wrapper often hides the
    answer that says what went wrong."""
    chain: list[BaseException] = []
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain
