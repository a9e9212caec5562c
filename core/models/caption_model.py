"""The caption model a job downloads: which one (a Hub model, on a machine that downloads) and its download, with the
base model's rules (byte progress, retries, resumable, into the Hugging Face cache on the volume)."""

from __future__ import annotations

from pathlib import Path

from core.adapters import CancelFlag, is_offline
from core.events import EventSink
from core.models.base_model import fetch_repo
from core.settings import Settings
from core.spec import CaptioningSpec


def caption_download(captioning: CaptioningSpec | None, *, settings: Settings) -> str | None:
    """The Hub id a job that captions downloads into the cache: a Hub model on a machine that downloads
    (TRAINER_ONLINE, HF_HUB_OFFLINE unset); None otherwise (no captioning, a local folder, offline)."""
    if captioning is None or Path(captioning.model_id).is_absolute() or not settings.online or is_offline():
        return None
    return captioning.model_id


def fetch_caption_model(model: str, *, settings: Settings, token: str | None, on_event: EventSink,
                        cancel: CancelFlag | None) -> Path:
    """The same download as the base model's: byte progress, retries, resumable, into the cache on the volume; its
    errors name captioning.model."""
    return fetch_repo(model, field="captioning.model", cache_dir=settings.hub_cache, token=token,
                      on_event=on_event, cancel=cancel)
