"""The job's typed error tree, and every code an error can carry (`ErrorCode`, each with its meaning). Each error has
a default stage; the pipeline's `stage()` sets the one that was running when the error came through it. Faces turn
one into a payload at their edge ({"code", "stage", "message", "field"}).

    JobError                    job_error       (stage: job; any code may be given to it)
    ├── SpecError               invalid_input   (validate; `errors`: one per bad field)
    ├── DatasetError            dataset_error   (dataset)
    │   ├── AddressRefused      address_refused
    │   ├── DownloadError       download_failed (and a Hub dataset repo's hub_* codes, s3:// URLs' s3_* codes)
    │   ├── UnsafeArchive       unsafe_archive
    │   ├── EmptyDataset        no_usable_images
    │   └── PreflightError      dataset_error   (preflight; `preflight`: the whole report)
    ├── ResumeError             resume_failed   (resume; resume_not_found, download_failed, hub_*, s3_*)
    ├── ModelDownloadError      model_download_failed (model; model_disk_full, hub_*)
    ├── TrainingError           training_failed (train)
    ├── JobCancelled            cancelled
    ├── JobTimeout              timeout
    ├── SetupError              setup_error     (setup)
    ├── PublishError            publish_failed  (publish; hub_unavailable, hub_offline, hub_failed)
    │   ├── HubAuthError        hub_auth
    │   ├── HubNotFound         hub_not_found
    │   ├── HubConflict         hub_conflict
    │   ├── HubQuotaError       hub_quota
    │   └── StorageError        storage_failed  (upload; s3_*)
    ├── CaptionError            captioning_failed (caption; core/generation/captioning.py)
    └── GenerateError           generate_failed (generate; core/generation/playground.py)

The UI's and the worker's own refusals are JobErrors with `busy`, `workdir_unusable`, `invalid_input`; a bug of ours
reaches a caller as `internal_error` (worker/output.py). README.md and docs/ list every code (tests/test_errors.py).
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Every code a job's error carries: a string in every payload (a StrEnum compares equal to its value)."""

    meaning: str

    def __new__(cls, value: str, meaning: str = "") -> ErrorCode:
        member = str.__new__(cls, value)
        member._value_ = value
        member.meaning = meaning
        return member

    # -- the job, its input, the machine
    JOB_ERROR = "job_error", "a failure with no more specific code"
    INVALID_INPUT = "invalid_input", "the job (or a form of the UI) is invalid: `field` and `errors` say where"
    INTERNAL_ERROR = "internal_error", "a bug of ours, answered in the same shape (the worker asks for a fresh worker)"
    BUSY = "busy", "the UI is doing something that must end first (a training, a push, a captioning)"
    SETUP_ERROR = "setup_error", "the machine is not ready: no trainer env, a missing tool, a bad variable"
    WORKDIR_UNUSABLE = "workdir_unusable", "the command line's job folder cannot be used"
    CANCELLED = "cancelled", "someone stopped the job (the UI's Cancel, RunPod's /cancel, Ctrl-C)"
    TIMEOUT = "timeout", "the job ran past its timeout_s"
    # -- the dataset
    DATASET_ERROR = "dataset_error", "the dataset cannot be staged, or preflight refused it (stage preflight)"
    ADDRESS_REFUSED = "address_refused", "a URL's scheme or address is not allowed (loopback, private networks)"
    DOWNLOAD_FAILED = "download_failed", "a download failed, or was over its size limit"
    UNSAFE_ARCHIVE = "unsafe_archive", "an archive leaves its folder, is a bomb, or unpacks past the limits"
    NO_USABLE_IMAGES = "no_usable_images", "the dataset holds no image that trains"
    CAPTIONING_FAILED = "captioning_failed", "the caption model could not caption the images"
    # -- resume, the model, training, generation
    RESUME_FAILED = "resume_failed", "the checkpoint resume_from names cannot be fetched or used"
    RESUME_NOT_FOUND = "resume_not_found", "the repo or prefix resume_from names holds no checkpoint"
    MODEL_DOWNLOAD_FAILED = "model_download_failed", "the base model (or its VAE) cannot be fetched into the cache"
    MODEL_DISK_FULL = "model_disk_full", "the base model does not fit in the cache's free space"
    TRAINING_FAILED = "training_failed", "SimpleTuner failed; the message is its own"
    GENERATE_FAILED = "generate_failed", "the generation process failed or ended"
    # -- publishing
    PUBLISH_FAILED = "publish_failed", "publishing failed otherwise"
    STORAGE_FAILED = "storage_failed", "the upload to a bucket failed otherwise"
    # -- the Hub, in every stage (core/adapters/hub.py; docs/hub-and-s3.md)
    HUB_AUTH = "hub_auth", "no token, a token the Hub refuses, one without the write role, or a gated repo not accepted"
    HUB_NOT_FOUND = "hub_not_found", ("the repo, its revision or a file in it does not exist (or is private and no "
                                      "token was given)")
    HUB_CONFLICT = "hub_conflict", ("the repo exists in a state the job cannot use (409, 412; a public repo for a "
                                    "private job)")
    HUB_QUOTA = "hub_quota", "the Hub refused an upload for lack of storage quota"
    HUB_UNAVAILABLE = "hub_unavailable", ("the Hub kept answering 408/429/5xx or could not be reached, through every "
                                          "retry")
    HUB_OFFLINE = "hub_offline", "HF_HUB_OFFLINE is set in this process"
    HUB_FAILED = "hub_failed", "any other answer of the Hub"
    # -- S3, in every stage (core/adapters/s3.py; docs/hub-and-s3.md)
    S3_AUTH = "s3_auth", ("no keys, or keys the endpoint refuses (401/403, AccessDenied, InvalidAccessKeyId, "
                          "SignatureDoesNotMatch)")
    S3_NO_BUCKET = "s3_no_bucket", "the bucket does not exist at that endpoint"
    S3_NOT_FOUND = "s3_not_found", "no object under that key"
    S3_UNAVAILABLE = "s3_unavailable", "the endpoint cannot be reached, or kept answering 5xx through boto3's retries"
    S3_FAILED = "s3_failed", "any other answer of the endpoint"


class JobError(Exception):
    """Base of every error a job can end with. Never carries a secret in its message."""

    code: ErrorCode = ErrorCode.JOB_ERROR
    stage = "job"

    def __init__(self, message: str, *, field: str | None = None, code: ErrorCode | None = None,
                 stage: str | None = None):
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
        payload: dict[str, object] = {"code": str(self.code), "stage": self.stage, "message": self.message,
                                      "field": self.field}
        if self.salvaged is not None:
            payload["salvaged"] = self.salvaged
        return payload

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class SpecError(JobError):
    """The job JSON is invalid. `errors` holds one payload per bad field."""

    code: ErrorCode = ErrorCode.INVALID_INPUT
    stage = "validate"

    def __init__(self, message: str, *, field: str | None = None, errors: list[dict] | None = None):
        super().__init__(message, field=field)
        self.errors = errors or [{"field": field, "message": message}]

    def to_payload(self) -> dict:
        payload = super().to_payload()
        payload["errors"] = self.errors
        return payload


class DatasetError(JobError):
    code: ErrorCode = ErrorCode.DATASET_ERROR
    stage = "dataset"


class AddressRefused(DatasetError):
    """A URL's scheme or address is not allowed by the address policy."""

    code: ErrorCode = ErrorCode.ADDRESS_REFUSED


class DownloadError(DatasetError):
    code: ErrorCode = ErrorCode.DOWNLOAD_FAILED


class UnsafeArchive(DatasetError):
    code: ErrorCode = ErrorCode.UNSAFE_ARCHIVE


class EmptyDataset(DatasetError):
    code: ErrorCode = ErrorCode.NO_USABLE_IMAGES


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

    code: ErrorCode = ErrorCode.RESUME_FAILED
    stage = "resume"


class ModelDownloadError(JobError):
    """The base model (or its VAE) cannot be fetched from the Hub into the cache."""

    code: ErrorCode = ErrorCode.MODEL_DOWNLOAD_FAILED
    stage = "model"


class TrainingError(JobError):
    """SimpleTuner failed. The message is SimpleTuner's own, from its error event or log."""

    code: ErrorCode = ErrorCode.TRAINING_FAILED
    stage = "train"

    def __init__(self, message: str, *, exit_code: int | None = None, log_tail: str = "",
                 code: ErrorCode | None = None):
        super().__init__(message, code=code)
        self.exit_code = exit_code
        self.log_tail = log_tail


class JobCancelled(JobError):
    """Someone stopped the job (the UI's Cancel, RunPod's /cancel, Ctrl-C); raised by Cancel.check (core/cancel.py)."""

    code: ErrorCode = ErrorCode.CANCELLED


class JobTimeout(JobError):
    """The job ran past its timeout_s; raised by Cancel.check (core/cancel.py)."""

    code: ErrorCode = ErrorCode.TIMEOUT


class SetupError(JobError):
    """The machine is not ready (no trainer env, missing tool)."""

    code: ErrorCode = ErrorCode.SETUP_ERROR
    stage = "setup"


class PublishError(JobError):
    code: ErrorCode = ErrorCode.PUBLISH_FAILED
    stage = "publish"


class HubAuthError(PublishError):
    code: ErrorCode = ErrorCode.HUB_AUTH


class HubNotFound(PublishError):
    code: ErrorCode = ErrorCode.HUB_NOT_FOUND


class HubConflict(PublishError):
    code: ErrorCode = ErrorCode.HUB_CONFLICT


class HubQuotaError(PublishError):
    code: ErrorCode = ErrorCode.HUB_QUOTA


class StorageError(PublishError):
    """Upload to an S3-compatible bucket failed."""

    code: ErrorCode = ErrorCode.STORAGE_FAILED


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
