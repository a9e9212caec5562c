"""Typed progress events: what every stage reports while a job runs.

Every event is a small frozen dataclass with a `kind`; `to_dict()` gives the JSON a face shows or streams.
The pipeline names its stages: dataset, caption, preflight, resume, configure, model, train, publish, upload.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import ClassVar, Protocol


class Event(Protocol):
    kind: ClassVar[str]

    def to_dict(self) -> dict: ...


@dataclass(frozen=True)
class _Base:
    kind: ClassVar[str] = "event"

    def to_dict(self) -> dict:
        return {"type": self.kind, **asdict(self)}


@dataclass(frozen=True)
class StageEvent(_Base):
    """A stage started, finished or failed (status: started | completed | failed | skipped)."""

    kind: ClassVar[str] = "stage"
    stage: str
    status: str
    message: str = ""


@dataclass(frozen=True)
class DownloadProgress(_Base):
    kind: ClassVar[str] = "download"
    source: str
    bytes_done: int
    bytes_total: int | None = None


@dataclass(frozen=True)
class TrainingProgress(_Base):
    """One training step as SimpleTuner reported it."""

    kind: ClassVar[str] = "progress"
    step: int
    total_steps: int
    loss: float | None = None
    learning_rate: float | None = None
    eta_s: float | None = None
    percent: float | None = None


@dataclass(frozen=True)
class EvalLoss(_Base):
    """SimpleTuner's evaluation loss on the held-out images (dataset eval/ or eval_share) at a step."""

    kind: ClassVar[str] = "eval_loss"
    step: int
    loss: float


@dataclass(frozen=True)
class ExpertStarted(_Base):
    """One expert of a two-expert model starts training (a job training both runs SimpleTuner once per expert)."""

    kind: ClassVar[str] = "expert"
    index: int
    """1 for the first expert trained."""
    count: int
    name: str
    """high | low"""
    label: str
    """high-noise | low-noise"""
    finished_at: int | None = None
    """An earlier job finished this expert at this step: it is not trained again."""


@dataclass(frozen=True)
class CaptionProgress(_Base):
    """One image captioned by the caption model (core/generation/captioning.py)."""

    kind: ClassVar[str] = "caption_progress"
    done: int
    total: int
    eta_s: float | None = None
    image: str = ""


@dataclass(frozen=True)
class CheckpointSaved(_Base):
    kind: ClassVar[str] = "checkpoint"
    path: str
    step: int | None = None
    is_final: bool = False


@dataclass(frozen=True)
class CheckpointUploaded(_Base):
    """A checkpoint reached the job's destination while training went on (core/publishing/checkpoints.py)."""

    kind: ClassVar[str] = "checkpoint_uploaded"
    step: int
    location: str
    """hf://user/repo/checkpoints/checkpoint-N or s3://bucket/prefix/checkpoints/checkpoint-N."""
    resume_from: str


@dataclass(frozen=True)
class TrainerStage(_Base):
    """A lifecycle stage inside SimpleTuner (model loading, caching, training_complete, ...)."""

    kind: ClassVar[str] = "trainer_stage"
    key: str
    status: str
    label: str = ""


@dataclass(frozen=True)
class TrainerStarted(_Base):
    """SimpleTuner's process group started: what finds it again after the app that started it is gone (the leader's
    pid, the group's id, the leader's start time in clock ticks after boot, which tells a reused pid apart)."""

    kind: ClassVar[str] = "trainer_started"
    pid: int
    pgid: int
    started: int


@dataclass(frozen=True)
class LogLine(_Base):
    kind: ClassVar[str] = "log"
    message: str
    severity: str = "info"


@dataclass(frozen=True)
class ValidationImage(_Base):
    kind: ClassVar[str] = "validation_image"
    path: str
    step: int | None = None
    prompt: str = ""


@dataclass(frozen=True)
class TrainerFailed(_Base):
    kind: ClassVar[str] = "error"
    title: str
    message: str


@dataclass(frozen=True)
class JobWarning(_Base):
    """Something a user can act on that does not stop the job."""

    kind: ClassVar[str] = "warning"
    message: str
    field: str | None = None


EventSink = Callable[[Event], None]

WEBHOOK_EVENTS = ("started", "progress", "checkpoint", "sample", "completed", "partial", "failed")
"""What a job's webhook may be sent (core/publishing/webhook.py maps the events above and the result to them)."""


def ignore_event(event: Event) -> None:
    """The default sink."""
