"""A job's webhook: its events and its result, told to the caller's receiver as signed deliveries (docs/webhooks.md).

Which webhook: the job's own (`webhook`), else the endpoint's (WEBHOOK_URL, WEBHOOK_SECRET, WEBHOOK_EVENTS). What it
is sent, from the pipeline's events (core/events.py) and the result (core/result.py):

    started      the job began                         {base_model, model_family, hub_repo}
    progress     a training step, at most one per PROGRESS_EVERY_S (and the last)   {step, total_steps, loss, ...}
    checkpoint   a checkpoint saved in the job's folder {step, name, uploaded: false}, and again once it reached
                 the job's destination                  {step, name, uploaded: true, location, resume_from}
    sample       a published sample image               {step, prompt, file, url}
    completed    the job succeeded                      {status, hub, model_checkpoint, metrics, ...}
    partial      training stopped early, resumable      {status, resume_from, ...}
    failed       the job ended with an error            {error: {code, stage, message, field}}

The sender (core/adapters/webhooks.py) is a background thread with a bounded queue: a slow or dead receiver loses
messages, never a training step; the result counts them (`webhook: {delivered, failed, dropped}`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from core.adapters import WebhookSender, check_webhook_url, signing_key
from core.errors import DownloadError, ErrorCode, JobError, SetupError, SpecError
from core.events import CheckpointSaved, CheckpointUploaded, Event, EventSink, TrainingProgress
from core.outputs import checkpoint_name
from core.result import JobResult
from core.settings import Settings
from core.spec import JobSpec

PROGRESS_EVERY_S = 10.0
"""At most one `progress` delivery this often (and the last step's)."""
RESULT_KEYS = ("status", "hub", "model_type", "model_checkpoint", "comfyui_checkpoint", "training_logs", "metrics",
               "checkpoints", "resume_from", "warnings", "experts")
"""What `completed` and `partial` carry of the API's output (not its file list or preflight report)."""


@dataclass(frozen=True)
class ChosenWebhook:
    url: str
    key: bytes
    events: frozenset[str]


def webhook_of(spec: JobSpec, settings: Settings) -> ChosenWebhook | None:
    """The job's webhook, else the endpoint's, checked: an http(s) URL the address policy allows (AddressRefused
    naming webhook.url or WEBHOOK_URL) and a `whsec_` secret (SpecError naming webhook.secret, SetupError naming
    WEBHOOK_SECRET). None when neither names one."""
    if spec.webhook is not None:
        _check_address(spec.webhook.url, settings=settings, field="webhook.url")
        if spec.webhook.secret is None:
            raise SpecError("give the secret (whsec_<base64 key>) that signs the deliveries", field="webhook.secret")
        return ChosenWebhook(url=spec.webhook.url, key=signing_key(spec.webhook.secret.get_secret_value()),
                             events=frozenset(spec.webhook.events))
    if not settings.webhook_url:
        return None
    _check_address(settings.webhook_url, settings=settings, field="WEBHOOK_URL")
    if settings.webhook_secret is None:
        raise SetupError("WEBHOOK_URL is set without WEBHOOK_SECRET (whsec_<base64 key>), which signs the deliveries",
                         field="WEBHOOK_SECRET")
    try:
        key = signing_key(settings.webhook_secret.get_secret_value())
    except ValueError as exc:
        raise SetupError(f"WEBHOOK_SECRET {exc}", field="WEBHOOK_SECRET") from None
    return ChosenWebhook(url=settings.webhook_url, key=key, events=frozenset(settings.webhook_events))


def _check_address(url: str, *, settings: Settings, field: str) -> None:
    """Refuse a URL whose host resolves to an address the policy refuses. A name that does not resolve now is let
    through: a webhook is no reason to refuse a training, and each delivery is checked again as it connects."""
    try:
        check_webhook_url(url, allow_private=settings.allow_private_urls, field=field)
    except DownloadError:
        pass


class JobWebhook:
    """One job's deliveries. `watching(sink)` sends what the events say; `finished` or `failed` at the end, then
    `close` (bounded) gives the counts."""

    def __init__(self, sender: WebhookSender, *, events: frozenset[str], job_id: str,
                 progress_every_s: float = PROGRESS_EVERY_S, clock: Callable[[], float] = time.monotonic):
        self.sender, self.events, self.job_id = sender, events, job_id
        self._every_s, self._clock = progress_every_s, clock
        self._last_progress: float | None = None

    @classmethod
    def for_job(cls, spec: JobSpec, settings: Settings, *, job_id: str,
                secrets: Sequence[str] = ()) -> JobWebhook | None:
        """The job's webhook (webhook_of), its sender started; None when it has none."""
        chosen = webhook_of(spec, settings)
        if chosen is None:
            return None
        sender = WebhookSender(chosen.url, key=chosen.key, allow_private=settings.allow_private_urls, secrets=secrets)
        return cls(sender, events=chosen.events, job_id=job_id)

    def send(self, kind: str, data: dict[str, Any]) -> None:
        if kind in self.events:
            self.sender.send(kind, data, job_id=self.job_id)

    def started(self, spec: JobSpec) -> None:
        self.send("started", {"base_model": spec.base_model, "model_family": spec.model_family,
                              "hub_repo": spec.hub.repo_id if spec.hub else None})

    def watching(self, sink: EventSink) -> EventSink:
        """`sink`, plus the deliveries its events make. Cheap: nothing here waits on the network."""
        def watch(event: Event) -> None:
            sink(event)
            self.on_event(event)
        return watch

    def on_event(self, event: Event) -> None:
        if isinstance(event, TrainingProgress):
            now = self._clock()
            last = event.step >= event.total_steps
            if last or self._last_progress is None or now - self._last_progress >= self._every_s:
                self._last_progress = now
                self.send("progress", {"step": event.step, "total_steps": event.total_steps, "loss": event.loss,
                                       "learning_rate": event.learning_rate, "eta_s": event.eta_s,
                                       "percent": event.percent})
        elif isinstance(event, CheckpointSaved):
            self.send("checkpoint", {"step": event.step, "name": checkpoint_name(event.step) if event.step is not None
                                     else None, "uploaded": False, "final": event.is_final})
        elif isinstance(event, CheckpointUploaded):
            self.send("checkpoint", {"step": event.step, "name": checkpoint_name(event.step), "uploaded": True,
                                     "location": event.location, "resume_from": event.resume_from})

    def finished(self, result: JobResult) -> None:
        """The published samples (with their URLs), then `completed`, or `partial` for a run stopped early."""
        output = result.to_output()
        sent: set[str] = set()
        for group in output.get("samples") or []:
            for image in group.get("images") or []:
                if image.get("url") and image["url"] not in sent:
                    sent.add(image["url"])
                    self.send("sample", {"step": group.get("step"), "prompt": image.get("prompt"),
                                         "file": image.get("file"), "url": image["url"]})
        for image in output.get("validation") or []:
            if image.get("url") and image["url"] not in sent:
                sent.add(image["url"])
                self.send("sample", {"step": None, "prompt": image.get("prompt"), "file": image.get("path"),
                                     "url": image["url"]})
        self.send("partial" if result.status == "partial" else "completed",
                  {key: output[key] for key in RESULT_KEYS if key in output})

    def failed(self, error: BaseException) -> None:
        payload = error.to_payload() if isinstance(error, JobError) else {
            "code": ErrorCode.INTERNAL_ERROR.value, "stage": "job", "message": type(error).__name__, "field": None}
        self.send("failed", {"error": payload})

    def close(self) -> dict[str, Any]:
        """Wait (bounded) for what is queued; {url (no query or user info), delivered, failed, dropped}."""
        return {"url": self.sender.public, **self.sender.close().to_dict()}
