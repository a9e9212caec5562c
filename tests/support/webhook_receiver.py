"""Loopback webhook receivers: one that records every delivery (and answers 204, or a scripted status), and one
that takes connections and never answers.

    with receiving_webhooks() as receiver:
        receiver.url                          # http://127.0.0.1:PORT/hooks
        receiver.fail_status = [503]          # the next delivery is answered 503
        receiver.deliveries                   # [Delivery(headers, body, at), ...] in arrival order
    with silent_receiver() as url: ...        # connects, then not one byte back
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tests.support.loopback import LoopbackServer, QuietHandler, serving


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def payload(self) -> dict:
        return json.loads(self.body)


def verified(delivery: Delivery, secret: str) -> bool:
    """What a receiver does (README, "Webhooks"): HMAC-SHA256 of "id.timestamp.body" with the decoded key, compared
    with each `v1,` signature of the header. Written here from the Standard Webhooks text, not from the project."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{delivery.headers['webhook-id']}.{delivery.headers['webhook-timestamp']}.".encode() + delivery.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(part.removeprefix("v1,"), expected)
               for part in delivery.headers["webhook-signature"].split() if part.startswith("v1,"))


class WebhookReceiver(LoopbackServer):
    def __init__(self) -> None:
        super().__init__(_Handler)
        self.deliveries: list[Delivery] = []
        self.fail_status: list[int] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"{self.base}/hooks"

    def kinds(self) -> list[str]:
        with self.lock:
            return [delivery.payload["type"] for delivery in self.deliveries]


class _Handler(QuietHandler):
    server: WebhookReceiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            status = self.server.fail_status.pop(0) if self.server.fail_status else 204
            if status < 300:
                self.server.deliveries.append(Delivery(headers={k.lower(): v for k, v in self.headers.items()},
                                                       body=body, at=time.monotonic()))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


@contextmanager
def receiving_webhooks() -> Iterator[WebhookReceiver]:
    with serving(WebhookReceiver(), name="webhook-receiver") as server:
        yield server


@contextmanager
def silent_receiver() -> Iterator[str]:
    """A URL whose server accepts connections (the kernel's backlog) and never sends a byte."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/hooks"
    finally:
        listener.close()
