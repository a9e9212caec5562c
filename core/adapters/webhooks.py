"""Webhook deliveries: signed as the Standard Webhooks specification says, sent by a thread of their own.

Each delivery is a POST of a JSON body with three headers: `webhook-id` (unique per message, the same on every retry
of it), `webhook-timestamp` (seconds since the epoch) and `webhook-signature` (`v1,<base64 HMAC-SHA256 of
"id.timestamp.body">`), keyed with the secret given as `whsec_<base64 key>` (the key is the decoded part).

A delivery never slows the job that makes it: `send` only puts the message on a bounded queue (a full queue drops
it), and one thread posts them in order, each tried a bounded number of times with backoff, through the same address
policy as downloads (core/adapters/address_policy.py: no private or metadata address unless ALLOW_PRIVATE_URLS; a
redirect is not followed). `close` waits a bounded time for what is left; the counts say what was delivered, failed
(every try refused or unanswered) or dropped (never tried: the queue was full, or the job ended first). Every body is
scrubbed of the job's secrets and of token-looking values before it leaves; URLs stay whole (a presigned sample URL
is what the caller asked for, as in the API's output).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import requests

from core.adapters.address_policy import CheckedUrl, check_url, guarded_session
from core.errors import AddressRefused, JobError
from core.secrets import scrub_keeping_urls

SECRET_PREFIX = "whsec_"  # noqa: S105 (the form's prefix, not a secret)
MIN_KEY_BYTES = 16
"""The shortest signing key taken (the specification asks for 24 to 64 bytes; 16 still resists guessing)."""
QUEUE_SIZE = 64
"""Messages waiting at most; a receiver that cannot keep up loses the newest, never a training step."""
ATTEMPTS = 3
"""Tries per message: the first and two retries."""
BACKOFF_S = 1.0
"""The wait before the first retry; doubled before each next one."""
TIMEOUT_S = (5.0, 5.0)
"""Connect and read timeout of one try: a receiver that never answers costs a message ATTEMPTS times this."""
DRAIN_S = 15.0
"""How long `close` waits for the messages still queued when the job ends."""
RETRY_STATUS = frozenset({408, 409, 425, 429})
"""4xx answers worth another try; any 5xx is too. Any other 4xx is the receiver's final word."""
USER_AGENT = "simpletuner-lora-trainer-webhooks/1"


def signing_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret. ValueError saying what is wrong (never the secret itself)."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"must be '{SECRET_PREFIX}' followed by a base64 key (the Standard Webhooks form)")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the part after '{SECRET_PREFIX}' is not valid base64") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"the key after '{SECRET_PREFIX}' must decode to at least {MIN_KEY_BYTES} bytes")
    return key


def signature(key: bytes, *, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header's value: `v1,` and the base64 HMAC-SHA256 of "id.timestamp.body"."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def check_webhook_url(url: str, *, allow_private: bool, resolve: bool = True,
                      field: str = "webhook.url") -> CheckedUrl:
    """An http(s) URL whose host the address policy allows (AddressRefused naming `field` otherwise)."""
    checked = check_url(url, allow_private=allow_private, field=field, resolve=resolve)
    if checked.scheme not in ("http", "https"):
        raise AddressRefused(f"'{checked.scheme}://' URLs cannot receive webhooks; use http or https", field=field)
    return checked


@dataclass(frozen=True)
class Message:
    id: str
    type: str
    body: bytes


@dataclass
class DeliveryCounts:
    delivered: int = 0
    failed: int = 0
    dropped: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"delivered": self.delivered, "failed": self.failed, "dropped": self.dropped}


class WebhookSender:
    """The deliveries of one job to one URL. `send` from any thread; `close` once, when the job ends."""

    def __init__(self, url: str, *, key: bytes, allow_private: bool, secrets: Iterable[str] = (),
                 queue_size: int = QUEUE_SIZE, attempts: int = ATTEMPTS, backoff_s: float = BACKOFF_S,
                 timeout_s: tuple[float, float] = TIMEOUT_S, clock: Callable[[], float] = time.time):
        self.public = check_webhook_url(url, allow_private=allow_private, resolve=False).public
        self._url, self._key, self._secrets = url, key, list(secrets)
        self._attempts, self._backoff_s, self._timeout_s, self._clock = attempts, backoff_s, timeout_s, clock
        self._session = guarded_session(allow_private=allow_private)
        self._queue: queue.Queue[Message | None] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._in_flight = False
        self.counts = DeliveryCounts()
        self._thread = threading.Thread(target=self._run, daemon=True, name="webhook-sender")
        self._thread.start()

    def send(self, kind: str, data: dict[str, Any], *, job_id: str) -> None:
        """Queue one message (never blocks): `{"type", "timestamp", "job_id", "data"}`, scrubbed of secrets."""
        payload = {"type": kind, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._clock())),
                   "job_id": job_id, "data": data}
        body = json.dumps(scrub_keeping_urls(payload, secrets=self._secrets), separators=(",", ":")).encode()
        message = Message(id=f"msg_{uuid.uuid4().hex}", type=kind, body=body)
        with self._lock:
            if self._closed.is_set():
                self.counts.dropped += 1
                return
            try:
                self._queue.put_nowait(message)
            except queue.Full:
                self.counts.dropped += 1

    def close(self, *, wait_s: float = DRAIN_S) -> DeliveryCounts:
        """Let the queued messages go for at most `wait_s`; then what is left is dropped (and the one being tried,
        failed). The counts, final."""
        deadline = time.monotonic() + wait_s
        try:
            self._queue.put(None, timeout=wait_s)
        except queue.Full:
            pass
        self._thread.join(max(deadline - time.monotonic(), 0.0))
        with self._lock:
            self._closed.set()
            while True:
                try:
                    left = self._queue.get_nowait()
                except queue.Empty:
                    break
                if left is not None:
                    self.counts.dropped += 1
            if self._in_flight:
                self.counts.failed += 1
                self._in_flight = False
            return DeliveryCounts(**self.counts.to_dict())

    def _run(self) -> None:
        while (message := self._queue.get()) is not None:
            with self._lock:
                if self._closed.is_set():
                    return
                self._in_flight = True
            delivered = self._deliver(message)
            with self._lock:
                if self._closed.is_set():
                    return  # close() counted it already
                self._in_flight = False
                if delivered:
                    self.counts.delivered += 1
                else:
                    self.counts.failed += 1

    def _deliver(self, message: Message) -> bool:
        """Try one message up to `attempts` times; True once the receiver answered 2xx."""
        for attempt in range(self._attempts):
            if attempt and self._closed.wait(self._backoff_s * 2 ** (attempt - 1)):
                return False
            timestamp = int(self._clock())
            headers = {"content-type": "application/json", "user-agent": USER_AGENT, "webhook-id": message.id,
                       "webhook-timestamp": str(timestamp),
                       "webhook-signature": signature(self._key, message_id=message.id, timestamp=timestamp,
                                                      body=message.body)}
            try:
                answer = self._session.post(self._url, data=message.body, headers=headers, timeout=self._timeout_s,
                                            allow_redirects=False)
            except (requests.RequestException, JobError, OSError):  # refused address, unresolved name, no answer
                continue
            if 200 <= answer.status_code < 300:
                return True
            if answer.status_code < 500 and answer.status_code not in RETRY_STATUS:
                return False
        return False
