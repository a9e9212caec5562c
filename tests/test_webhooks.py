"""Webhook deliveries (core/adapters/webhooks.py) and a job's webhook (core/publishing/webhook.py,
core/spec/webhook.py): Standard Webhooks signatures, retries, a bounded queue that loses messages rather than time,
the address policy, validation that names the field and never echoes the secret, and what each pipeline event becomes.
Against loopback receivers (tests/support/webhook_receiver.py); the training through the worker is
tests/test_webhooks_worker.py."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from core.adapters import WebhookSender, signature, signing_key
from core.errors import AddressRefused, JobError, SetupError, SpecError
from core.events import CheckpointSaved, CheckpointUploaded, StageEvent, TrainingProgress
from core.pipeline import run_job
from core.publishing import JobWebhook, webhook_of
from core.result import JobResult
from core.settings import Settings
from core.spec import parse_job
from tests.support.webhook_receiver import receiving_webhooks, silent_receiver, verified

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
TOKEN = "hf_WebhookUnitToken0123456789abcdefXYZ"


def job(**webhook) -> dict:
    return {"dataset_url": "https://example.com/d.zip", "config": {"model_family": "sdxl", "model_name": "a/b"},
            "webhook": webhook}


def settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"DATA_DIR": str(tmp_path), **env}, mountinfo="")


def test_the_signature_is_the_standard_webhooks_one():
    # The Standard Webhooks specification's own example: secret, message id, timestamp, body and signature.
    key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    assert signature(key, message_id="msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp=1614265330,
                     body=b'{"test": 2432232314}') == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_deliveries_are_signed_retried_and_counted():
    with receiving_webhooks() as receiver:
        receiver.fail_status = [503, 500]  # the first message gets through on its third try
        sender = WebhookSender(receiver.url, key=signing_key(SECRET), allow_private=True, backoff_s=0.05,
                               secrets=[TOKEN])
        presigned = "https://bucket.example.com/a.png?X-Amz-Signature=abc123def456&X-Amz-Expires=600"
        sender.send("started", {"note": f"token {TOKEN}", "sample": presigned, "other": "hf_" + "x" * 30,
                                "hub_token": "kept out"}, job_id="j1")
        sender.send("completed", {"status": "succeeded"}, job_id="j1")
        counts = sender.close(wait_s=10)
    assert counts.to_dict() == {"delivered": 2, "failed": 0, "dropped": 0}
    assert [d.payload["type"] for d in receiver.deliveries] == ["started", "completed"]
    assert all(verified(d, SECRET) for d in receiver.deliveries)
    assert not verified(receiver.deliveries[0], "whsec_" + base64.b64encode(b"another key, 16+ bytes").decode())
    first = receiver.deliveries[0]
    assert first.payload["job_id"] == "j1" and TOKEN not in first.body.decode()
    # A presigned output URL is the caller's answer and stays whole; tokens and secret-named keys do not.
    assert first.payload["data"] == {"note": "token ***", "sample": presigned, "other": "***"}
    assert abs(int(first.headers["webhook-timestamp"]) - time.time()) < 60


def test_a_receiver_that_never_answers_costs_bounded_time_and_is_counted(tmp_path):
    with silent_receiver() as url:
        sender = WebhookSender(url, key=signing_key(SECRET), allow_private=True, queue_size=2, attempts=2,
                               backoff_s=0.05, timeout_s=(0.5, 0.3))
        started = time.monotonic()
        for step in range(5):  # sending never waits: the queue holds 2, the rest are dropped
            sender.send("progress", {"step": step}, job_id="j")
        assert time.monotonic() - started < 0.5
        counts = sender.close(wait_s=1.0)
        waited = time.monotonic() - started
    assert counts.delivered == 0 and counts.failed >= 1 and counts.dropped >= 2
    assert counts.failed + counts.dropped == 5
    assert waited < 2.5


def test_an_address_the_policy_refuses_is_never_posted_to():
    with receiving_webhooks() as receiver:
        sender = WebhookSender(receiver.url, key=signing_key(SECRET), allow_private=False, attempts=1)
        sender.send("started", {}, job_id="j")
        counts = sender.close(wait_s=5)
    assert counts.failed == 1 and receiver.deliveries == []


@pytest.mark.parametrize(("url", "said"), [
    ("file:///etc/passwd", "'file://' URLs are not allowed"),
    ("example.com/hooks", "no scheme"),
    ("s3://bucket/hooks", "cannot receive webhooks"),
    ("http:///hooks", "has no host"),
])
def test_a_bad_webhook_url_is_refused_naming_the_field(url, said):
    with pytest.raises(SpecError) as caught:
        parse_job(job(url=url, secret=SECRET))
    assert caught.value.field == "webhook.url" and said in caught.value.message


@pytest.mark.parametrize("url", ["http://10.1.2.3/hooks", "http://127.0.0.1:9/hooks", "http://169.254.169.254/x",
                                 "http://[::ffff:192.168.0.1]/hooks"])
def test_a_private_or_metadata_address_is_refused_before_the_job_starts(tmp_path, url):
    spec = parse_job(job(url=url, secret=SECRET))
    events: list = []
    with pytest.raises(AddressRefused) as caught:
        run_job(spec, tmp_path / "job", events.append, settings=settings(tmp_path))
    assert caught.value.field == "webhook.url" and caught.value.stage == "validate"
    assert events == [StageEvent(stage="validate", status="failed", message=caught.value.message)]
    assert not (tmp_path / "job").exists()  # refused before anything was written
    # Metadata addresses stay refused even where private ones are allowed (the tests' loopback switch).
    if "169.254" in url:
        with pytest.raises(AddressRefused):
            webhook_of(spec, settings(tmp_path, ALLOW_PRIVATE_URLS="1"))


@pytest.mark.parametrize("secret", ["not-a-whsec", "whsec_!!!notbase64", "whsec_" + base64.b64encode(b"short").decode(),
                                    TOKEN])
def test_a_secret_not_in_whsec_form_is_refused_and_never_echoed(secret):
    with pytest.raises(SpecError) as caught:
        parse_job(job(url="https://example.com/hooks", secret=secret))
    assert caught.value.field == "webhook.secret"
    assert secret not in json.dumps(caught.value.to_payload())


def test_the_secret_is_never_shown_or_exported_and_a_webhook_needs_one(tmp_path):
    spec = parse_job(job(url="https://example.com/hooks", secret=SECRET, events=["completed", "failed"]))
    assert SECRET not in repr(spec) and SECRET not in json.dumps(spec.to_job_json())
    again = parse_job(spec.to_job_json())  # an exported job (the UI's history) has no secret left to send with
    with pytest.raises(SpecError) as caught:
        webhook_of(again, settings(tmp_path))
    assert caught.value.field == "webhook.secret"
    with pytest.raises(SpecError) as caught:
        parse_job(job(url="https://example.com/hooks", secret=SECRET, events=["done"]))
    assert caught.value.field == "webhook.events" and "'done'" in caught.value.message


def test_the_endpoints_webhook_serves_jobs_without_their_own(tmp_path):
    spec = parse_job({**job(url="https://example.com/hooks"), "webhook": None})
    assert webhook_of(spec, settings(tmp_path)) is None
    chosen = webhook_of(spec, settings(tmp_path, WEBHOOK_URL="https://example.com/all", WEBHOOK_SECRET=SECRET,
                                       WEBHOOK_EVENTS="completed, failed"))
    assert chosen is not None and chosen.url == "https://example.com/all"
    assert chosen.events == {"completed", "failed"}
    with pytest.raises(SetupError) as caught:
        webhook_of(spec, settings(tmp_path, WEBHOOK_URL="https://example.com/all"))
    assert caught.value.field == "WEBHOOK_SECRET"
    with pytest.raises(SetupError) as caught:
        webhook_of(spec, settings(tmp_path, WEBHOOK_URL="https://example.com/all", WEBHOOK_SECRET="plain-secret"))
    assert caught.value.field == "WEBHOOK_SECRET" and "plain-secret" not in caught.value.message
    with pytest.raises(AddressRefused) as caught:
        webhook_of(spec, settings(tmp_path, WEBHOOK_URL="http://192.168.1.9/x", WEBHOOK_SECRET=SECRET))
    assert caught.value.field == "WEBHOOK_URL"
    with pytest.raises(SetupError) as caught:
        settings(tmp_path, WEBHOOK_EVENTS="started,finished")
    assert caught.value.field == "WEBHOOK_EVENTS"
    assert SECRET not in repr(settings(tmp_path, WEBHOOK_SECRET=SECRET))


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []
        self.public = "http://receiver/hooks"

    def send(self, kind: str, data: dict, *, job_id: str) -> None:
        self.sent.append((kind, data))


def test_pipeline_events_become_webhook_events_progress_throttled(tmp_path):
    recorder, now = Recorder(), [0.0]
    hooks = JobWebhook(recorder, events=frozenset({"progress", "checkpoint", "sample", "completed"}),  # type: ignore[arg-type]
                       job_id="j", progress_every_s=10, clock=lambda: now[0])
    seen: list = []
    sink = hooks.watching(seen.append)
    for step in range(1, 6):
        now[0] = step * 4.0  # steps every 4 s: the first, the one 10 s after, and the last are sent
        sink(TrainingProgress(step=step, total_steps=5, loss=0.5))
    sink(CheckpointSaved(path=str(tmp_path / "output" / "checkpoint-4"), step=4))
    sink(CheckpointUploaded(step=4, location="hf://me/repo/checkpoints/checkpoint-4",
                            resume_from="hf://me/repo/checkpoints/checkpoint-4"))
    sink(StageEvent(stage="train", status="completed"))
    assert len(seen) == 8  # every event still reaches the job's own sink
    assert [(kind, data.get("step")) for kind, data in recorder.sent] == [
        ("progress", 1), ("progress", 4), ("progress", 5), ("checkpoint", 4), ("checkpoint", 4)]
    assert recorder.sent[3][1] == {"step": 4, "name": "checkpoint-4", "uploaded": False, "final": False}
    assert recorder.sent[4][1]["location"] == "hf://me/repo/checkpoints/checkpoint-4"
    result = JobResult(status="succeeded", job_dir=tmp_path, validation=[("validation_images/a.png", "sks dog")],
                       hub={"repo_id": "me/repo", "url": "https://hub/me/repo",
                            "files": {"validation_images/a.png": "https://hub/me/repo/resolve/main/a.png"}})
    hooks.finished(result)
    assert recorder.sent[-2] == ("sample", {"step": None, "prompt": "sks dog", "file": "validation_images/a.png",
                                            "url": "https://hub/me/repo/resolve/main/a.png"})
    kind, data = recorder.sent[-1]
    assert kind == "completed" and data["status"] == "succeeded" and data["hub"]["repo_id"] == "me/repo"
    hooks.failed(JobError("boom"))  # not wanted: not sent
    assert recorder.sent[-1][0] == "completed"


def test_a_result_counts_its_deliveries_in_the_api_output(tmp_path):
    result = JobResult(status="succeeded", job_dir=tmp_path,
                       webhook={"url": "https://example.com/hooks", "delivered": 3, "failed": 1, "dropped": 0})
    assert result.to_output()["webhook"] == {"url": "https://example.com/hooks", "delivered": 3, "failed": 1,
                                             "dropped": 0}
    assert "webhook" not in JobResult(status="succeeded", job_dir=tmp_path).to_output()


def test_the_ui_form_sends_a_webhook_from_its_other_job_fields():
    from app.job_form import form_to_job, spec_from_form

    values = {"base_model": "a/b", "model_family": "sdxl", "dataset": '{"url": "https://example.com/d.zip"}',
              "extra_job": json.dumps({"webhook": {"url": "https://example.com/hooks", "secret": SECRET}})}
    spec = spec_from_form(values)
    assert spec.webhook is not None and spec.webhook.url == "https://example.com/hooks"
    assert spec.webhook.secret is not None and spec.webhook.secret.get_secret_value() == SECRET
    assert form_to_job(values)["webhook"]["url"] == "https://example.com/hooks"
