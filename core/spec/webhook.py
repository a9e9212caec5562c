"""A job's webhook: where its events are posted, which ones, and the secret that signs them
(core/publishing/webhook.py sends them; docs/webhooks.md)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from core.adapters import check_webhook_url, signing_key
from core.errors import JobError
from core.events import WEBHOOK_EVENTS


class WebhookSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    url: str = Field(min_length=1)
    """An http(s) URL; its host must resolve to a public address (ALLOW_PRIVATE_URLS allows private ones)."""
    events: list[str] = Field(default_factory=lambda: list(WEBHOOK_EVENTS))
    """The events wanted (WEBHOOK_EVENTS); all when left out."""
    secret: SecretStr | None = None
    """`whsec_<base64 key>`: signs every delivery. Required to send (never echoed, never in an exported job)."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        # The scheme and the host's form here; its addresses when the job runs, under the endpoint's policy.
        try:
            check_webhook_url(value, allow_private=True, resolve=False)
        except JobError as error:
            raise ValueError(error.message) from None
        return value

    @field_validator("events")
    @classmethod
    def _events(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in WEBHOOK_EVENTS]
        if unknown:
            raise ValueError(f"unknown event {unknown[0]!r}; choose from {', '.join(WEBHOOK_EVENTS)}")
        if not value:
            raise ValueError(f"name at least one event of {', '.join(WEBHOOK_EVENTS)} (or leave it out for all)")
        return list(dict.fromkeys(value))

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            signing_key(value.get_secret_value())  # its ValueError never quotes the secret
        return value
