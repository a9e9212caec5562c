"""One job's status as a user reads it, folded from its events: the one model every face shows.

`apply(status, event)` is a pure reducer over the typed events of core/events.py; each face keeps only its
presentation (the worker's throttled RunPod status, the UI's progress bar, the CLI's lines). `summary` is the one
line the worker's log and the CLI print.

Stages a user sees: downloading (dataset, checkpoint to resume, base model), captioning (images done/total, ETA),
checking (preflight, trainer config), loading (SimpleTuner starting), caching (text embeds, VAE latents), training,
validating, publishing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from core.events import (
    CaptionProgress,
    CheckpointSaved,
    DownloadProgress,
    EvalLoss,
    Event,
    ExpertStarted,
    StageEvent,
    TrainerFailed,
    TrainerStage,
    TrainingProgress,
    ValidationImage,
)
from core.outputs import checkpoint_name
from core.result import human_size
from core.secrets import mask_secret_values

# The pipeline's stages (core/pipeline.py) as a user reads them, with what the status says when one starts.
# A stage missing here shows under its own name.
PIPELINE_STAGES: dict[str, tuple[str, str]] = {
    "setup": ("loading", "preparing the job"),
    "dataset": ("downloading", "staging the dataset"),
    "caption": ("captioning", "captioning the images"),
    "reg_images": ("generating", "rendering the class images"),
    "preflight": ("checking", "checking the dataset"),
    "configure": ("checking", "writing the SimpleTuner config"),
    "resume": ("downloading", "fetching the checkpoint to resume"),
    "model": ("downloading", "downloading the base model"),
    "train": ("loading", "starting SimpleTuner"),
    "samples": ("sampling", "rendering the samples"),
    "comfyui": ("converting", "writing the ComfyUI file"),
    "publish": ("publishing", "publishing the LoRA"),
    "upload": ("publishing", "uploading the outputs"),
}
# Fields that only mean something during one stage: cleared when the status leaves it.
STAGE_ONLY_FIELDS: dict[str, tuple[str, ...]] = {"downloading": ("bytes_done", "bytes_total"),
                                                 "captioning": ("images_done", "images_total", "eta_s")}


@dataclass(frozen=True)
class JobStatus:
    """Where a job stands. Messages have URL credentials and secret-looking values masked; a face still redacts
    the job's own known secrets (core/secrets.py scrub) before showing one."""

    stage: str = "starting"
    """As a user reads it: starting, downloading, captioning, generating, checking, loading, caching, training,
    validating, saving, sampling, converting, publishing."""
    pipeline_stage: str = ""
    """The pipeline's own name for the stage running (dataset, train, ...): what an error payload's stage says."""
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    eval_loss: float | None = None
    """The latest evaluation loss on the held-out images (a job with some)."""
    eta_s: float | None = None
    percent: float | None = None
    """SimpleTuner's own percentage of the training, when it says one."""
    bytes_done: int | None = None
    bytes_total: int | None = None
    images_done: int | None = None
    images_total: int | None = None
    """Images captioned so far, of how many (the caption stage)."""
    expert: str | None = None
    """A job training both experts of a two-expert model: the one training, "1/2 high-noise"."""
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The status as JSON: fields not known yet are left out; floats rounded to what a person reads."""
        data = asdict(self)
        data.pop("pipeline_stage")
        for name, digits in (("loss", 6), ("eval_loss", 6), ("eta_s", 1), ("percent", 1)):
            if data[name] is not None:
                data[name] = round(data[name], digits)
        return {key: value for key, value in data.items() if value is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobStatus:
        """The status a to_dict() (or a RunPod status payload) holds; other keys are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


def trainer_stage(key: str) -> str | None:
    """SimpleTuner's lifecycle stage key -> the stage a user sees (None: it does not change the stage)."""
    if "validation" in key:
        return "validating"
    if "cach" in key or "embed" in key or "data_backend" in key:
        return "caching"
    if "model_save" in key or key == "training_complete":
        return "saving"  # after the last step: SimpleTuner writes the LoRA and exits
    if "checkpoint_save" in key:
        return "training"
    if key.startswith("init"):
        return "loading"
    return None


def apply(status: JobStatus, event: Event) -> JobStatus:
    """The status after `event`; the same object when the event changes nothing a user sees."""
    if isinstance(event, TrainingProgress):
        return _progress(status, event)
    if isinstance(event, StageEvent):
        return _stage(status, event)
    if isinstance(event, ExpertStarted):
        return _expert(status, event)
    if isinstance(event, CaptionProgress):
        return _moved(status, "captioning", images_done=event.done, images_total=event.total, eta_s=event.eta_s,
                      message=f"captioned {event.done}/{event.total} images")
    if isinstance(event, DownloadProgress):
        return _moved(status, "downloading", message=f"downloading {_clean(event.source)}",
                      bytes_done=event.bytes_done, bytes_total=event.bytes_total)
    if isinstance(event, TrainerStage):
        if "resume" in event.key:
            # SimpleTuner reports this stage on every run; only "running" means it really resumes a checkpoint.
            return _moved(status, "loading", message="resuming from the checkpoint") \
                if event.status == "running" else status
        message = _clean(event.label) or event.key.replace("_", " ")
        return _moved(status, trainer_stage(event.key) or status.stage, message=message)
    if isinstance(event, CheckpointSaved):
        return replace(status, message=f"saved {checkpoint_name(event.step)}" if event.step is not None
                       else "saved a checkpoint")
    if isinstance(event, EvalLoss):
        return replace(status, eval_loss=event.loss, message=f"evaluation loss {event.loss:.4f} at step {event.step}")
    if isinstance(event, ValidationImage):
        return replace(status, message=f"validation image at step {event.step}")
    if isinstance(event, TrainerFailed):
        return replace(status, message=_clean(event.title))
    return status


def _stage(status: JobStatus, event: StageEvent) -> JobStatus:
    stage, opening = PIPELINE_STAGES.get(event.stage, (event.stage, event.stage))
    if event.status == "started":
        return _moved(status, stage, pipeline_stage=event.stage, message=_clean(event.message) or opening)
    if event.status == "failed":
        return replace(status, message=f"{event.stage} failed: {_clean(event.message)}")
    return replace(status, message=_clean(event.message)) if event.message else status


def _progress(status: JobStatus, event: TrainingProgress) -> JobStatus:
    """A training step; one without a loss or ETA keeps the last one known."""
    return _moved(status, "training", step=event.step, total_steps=event.total_steps,
                  message=(f"expert {status.expert}, " if status.expert else "")
                  + f"step {event.step}/{event.total_steps}",
                  loss=status.loss if event.loss is None else event.loss,
                  eta_s=status.eta_s if event.eta_s is None else event.eta_s,
                  percent=status.percent if event.percent is None else event.percent)


def _expert(status: JobStatus, event: ExpertStarted) -> JobStatus:
    """A two-expert job moves to its next expert: the steps start again, the status says which expert."""
    expert = f"{event.index}/{event.count} {event.label}"
    if event.finished_at is not None:
        return replace(status, expert=expert, message=f"expert {expert}: finished at step {event.finished_at} "
                       "in an earlier run, not trained again")
    return _moved(status, "loading", expert=expert, step=None, total_steps=None, loss=None, eta_s=None,
                  percent=None, message=f"expert {expert}: starting SimpleTuner")


def summary(status: JobStatus, *, elapsed_s: float | None = None) -> str:
    """One line for a person at a terminal or reading a log: `[training] step 3/10 loss=0.1234 eta=12s`."""
    parts = [f"[{status.stage}] {status.message}".rstrip()]
    if transferred(status):
        parts.append(transferred(status))
    if status.loss is not None and status.stage in ("training", "validating"):
        parts.append(f"loss={status.loss:.4f}")
    if status.eval_loss is not None and status.stage in ("training", "validating"):
        parts.append(f"eval_loss={status.eval_loss:.4f}")
    if status.eta_s is not None and status.stage in ("training", "captioning"):
        parts.append(f"eta={status.eta_s:.0f}s")
    if elapsed_s is not None:
        parts.append(f"elapsed={elapsed_s:.0f}s")
    return " ".join(parts)


def transferred(status: JobStatus) -> str:
    """'12.0 MB/100.0 MB' while a download runs (its total when known); '' otherwise."""
    if status.stage != "downloading" or status.bytes_done is None:
        return ""
    total = f"/{human_size(status.bytes_total)}" if status.bytes_total else ""
    return f"{human_size(status.bytes_done)}{total}"


def _moved(status: JobStatus, stage: str, **changes: Any) -> JobStatus:
    """`status` in `stage` with `changes`; the fields of the stage it leaves are cleared."""
    if stage != status.stage:
        for name in STAGE_ONLY_FIELDS.get(status.stage, ()):
            changes.setdefault(name, None)
    return replace(status, stage=stage, **changes)


def _clean(text: str) -> str:
    # Sources and SimpleTuner's messages may hold presigned URLs or tokens: masked before any face sees them.
    return mask_secret_values(text) if text else text
