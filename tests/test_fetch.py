"""Downloads against real local servers: the loopback http server (Range, drops, failures) and moto_server (S3)."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from core.adapters.fetch import download, file_name, parse_s3_url
from core.adapters.s3 import S3Config, s3_config
from core.cancel import Cancel
from core.errors import AddressRefused, DatasetError, DownloadError, JobCancelled, JobTimeout
from core.events import DownloadProgress
from core.settings import Settings
from tests.support.http_server import serve_files
from tests.support.s3_server import moto_s3, with_s3
from tests.support.throttle import throttled

OPEN = Settings.from_env({"ALLOW_PRIVATE_URLS": "1"})
LIMIT = 1 << 30


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def served(tmp_path: Path) -> Path:
    folder = tmp_path / "served"
    folder.mkdir()
    (folder / "blob.bin").write_bytes(os.urandom(5 * 1024 * 1024 + 123))
    (folder / "small.bin").write_bytes(b"hello")
    return folder


def test_plain_download_streams_to_disk_with_progress(tmp_path, served):
    events: list = []
    with serve_files(served) as server:
        path = download(server.url("blob.bin"), tmp_path / "dl", settings=OPEN, on_event=events.append,
                        max_bytes=LIMIT)
    assert path == tmp_path / "dl" / "blob.bin"
    assert digest(path) == digest(served / "blob.bin")
    assert not list((tmp_path / "dl").glob("*.part"))
    progress = [e for e in events if isinstance(e, DownloadProgress)]
    assert progress[0].bytes_done == 0 and progress[0].bytes_total == path.stat().st_size
    assert progress[-1].bytes_done == progress[-1].bytes_total == path.stat().st_size
    assert [e.bytes_done for e in progress] == sorted(e.bytes_done for e in progress)


def test_a_dropped_connection_resumes_with_range(tmp_path, served):
    with serve_files(served) as server:
        server.drop_halfway["blob.bin"] = 2
        path = download(server.url("blob.bin"), tmp_path / "dl", settings=OPEN, max_bytes=LIMIT, backoff_s=0.01)
        gets = [r for method, name, r in server.requests if method == "GET" and name == "blob.bin"]
    assert digest(path) == digest(served / "blob.bin")
    assert len(gets) == 3
    assert gets[0] is None
    resumed_at = [int(r.split("=")[1].rstrip("-")) for r in gets[1:]]
    assert 0 < resumed_at[0] < resumed_at[1] < path.stat().st_size  # each attempt continues where the last stopped


def test_a_server_without_range_support_restarts_cleanly(tmp_path, served):
    with serve_files(served, ranges=False) as server:
        server.drop_halfway["blob.bin"] = 1
        path = download(server.url("blob.bin"), tmp_path / "dl", settings=OPEN, max_bytes=LIMIT, backoff_s=0.01)
    assert digest(path) == digest(served / "blob.bin")


def test_transient_errors_are_retried_and_permanent_ones_are_not(tmp_path, served):
    with serve_files(served) as server:
        server.fail_status["small.bin"] = [503, 429]
        path = download(server.url("small.bin"), tmp_path / "a", settings=OPEN, max_bytes=LIMIT, backoff_s=0.01)
        assert path.read_bytes() == b"hello"
        assert len([r for r in server.requests if r[1] == "small.bin"]) == 3
        with pytest.raises(DownloadError, match=r"nothing\.bin: HTTP 404 not found"):
            download(server.url("nothing.bin"), tmp_path / "b", settings=OPEN, max_bytes=LIMIT, backoff_s=0.01)
        assert len([r for r in server.requests if r[1] == "nothing.bin"]) == 1
        server.fail_status["small.bin"] = [500] * 10
        with pytest.raises(DownloadError, match=r"failed after 3 attempts \(HTTP 500\)"):
            download(server.url("small.bin"), tmp_path / "c", settings=OPEN, max_bytes=LIMIT, retries=2,
                     backoff_s=0.01)
    assert not list((tmp_path / "c").glob("*"))


def test_size_limit_is_checked_before_the_body(tmp_path, served):
    with serve_files(served) as server:
        with pytest.raises(DownloadError, match="over the 1000000-byte download limit"):
            download(server.url("blob.bin"), tmp_path / "dl", settings=OPEN, max_bytes=1_000_000)
    assert not list((tmp_path / "dl").glob("*"))


def test_redirects_are_followed_and_each_target_is_checked(tmp_path, served):
    with serve_files(served) as server:
        server.redirects["old.bin"] = "/small.bin"
        server.redirects["to-file"] = "file:///etc/passwd"
        server.redirects["to-metadata"] = "http://169.254.169.254/latest/meta-data/iam/"
        path = download(server.url("old.bin"), tmp_path / "a", settings=OPEN, max_bytes=LIMIT)
        assert path.read_bytes() == b"hello" and path.name == "old.bin"
        with pytest.raises(AddressRefused, match="'file://' URLs are not allowed"):
            download(server.url("to-file"), tmp_path / "b", settings=OPEN, max_bytes=LIMIT)
        with pytest.raises(AddressRefused, match="metadata"):
            download(server.url("to-metadata"), tmp_path / "c", settings=OPEN, max_bytes=LIMIT)


def test_the_policy_refuses_before_connecting(tmp_path, served):
    strict = Settings.from_env({})
    with serve_files(served) as server:
        with pytest.raises(AddressRefused, match="loopback"):
            download(server.url("small.bin"), tmp_path / "dl", settings=strict, max_bytes=LIMIT)
        assert server.requests == []


def test_a_cancel_stops_a_trickling_download_within_a_second(tmp_path, served):
    cancel = Cancel()
    with serve_files(served) as server:
        server.trickle["blob.bin"] = 2000  # 5 MB at 2 kB/s: 45 minutes
        threading.Timer(0.5, cancel.set).start()
        started = time.monotonic()
        with pytest.raises(JobCancelled) as caught:
            download(server.url("blob.bin"), tmp_path / "dl", settings=OPEN, max_bytes=LIMIT, cancel=cancel)
    assert time.monotonic() - started < 2
    assert caught.value.code == "cancelled" and "blob.bin" in caught.value.message
    assert list((tmp_path / "dl").iterdir()) == []  # the partial file goes too


def test_a_cancel_stops_a_download_waiting_on_a_silent_server(tmp_path, served):
    cancel = Cancel()
    with serve_files(served) as server:
        server.trickle["blob.bin"] = 0  # headers, then not one byte: the read blocks
        threading.Timer(0.5, cancel.set).start()
        started = time.monotonic()
        with pytest.raises(JobCancelled):
            download(server.url("blob.bin"), tmp_path / "dl", settings=OPEN, max_bytes=LIMIT, cancel=cancel)
    assert time.monotonic() - started < 2  # not the 60 s stall timeout


@contextmanager
def silent_server() -> Iterator[str]:
    """A loopback server that accepts connections, reads nothing and never answers: not even headers."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except (TimeoutError, OSError):
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/set.zip"
    finally:
        stop.set()
        thread.join()
        for sock in [*held, listener]:
            sock.close()


def test_a_cancel_stops_a_download_from_a_server_that_never_sends_headers(tmp_path):
    cancel = Cancel()
    with silent_server() as url:
        threading.Timer(0.5, cancel.set).start()
        started = time.monotonic()
        with pytest.raises(JobCancelled) as caught:
            download(url, tmp_path / "dl", settings=OPEN, max_bytes=LIMIT, cancel=cancel)
    assert time.monotonic() - started < 3  # not the 60 s stall timeout, nor four retries of it
    assert caught.value.code == "cancelled" and "set.zip" in caught.value.message
    assert list((tmp_path / "dl").iterdir()) == []


def test_the_jobs_deadline_stops_a_trickling_download(tmp_path, served):
    with serve_files(served) as server:
        server.trickle["blob.bin"] = 2000
        started = time.monotonic()
        with pytest.raises(JobTimeout) as caught:
            download(server.url("blob.bin"), tmp_path / "dl", settings=OPEN, max_bytes=LIMIT,
                     cancel=Cancel(timeout_s=1))
    assert 0.9 < time.monotonic() - started < 2.5
    assert caught.value.code == "timeout" and "timeout_s=1" in caught.value.message


def test_a_server_that_stops_sending_is_dropped_after_the_stall_timeout(tmp_path, served):
    stall = Settings.from_env({"ALLOW_PRIVATE_URLS": "1", "DOWNLOAD_STALL_S": "0.5"})
    with serve_files(served) as server:
        server.trickle["blob.bin"] = 0
        started = time.monotonic()
        with pytest.raises(DownloadError, match=r"failed after 2 attempts \(no data for 0.5 s") as caught:
            download(server.url("blob.bin"), tmp_path / "dl", settings=stall, max_bytes=LIMIT, retries=1,
                     backoff_s=0.01)
        gets = [r for r in server.requests if r[0] == "GET"]
    assert time.monotonic() - started < 3
    assert len(gets) == 2 and caught.value.field == "dataset.url"
    assert Settings.from_env({}).download_stall_s == 60


def test_a_retry_backoff_ends_at_a_cancel(tmp_path, served):
    cancel = Cancel()
    with serve_files(served) as server:
        server.fail_status["small.bin"] = [503] * 10
        threading.Timer(0.5, cancel.set).start()
        started = time.monotonic()
        with pytest.raises(JobCancelled):
            download(server.url("small.bin"), tmp_path / "dl", settings=OPEN, max_bytes=LIMIT, backoff_s=30,
                     cancel=cancel)
    assert time.monotonic() - started < 2


def test_file_name_is_safe():
    assert file_name("https://x.org/a/b/My%20Set%20(1).zip?sig=abc") == "My_Set_1_.zip"
    assert file_name("https://x.org/") == "download"
    assert file_name("https://x.org/..%2F..%2Fetc%2Fpasswd") == "etc_passwd"


def test_s3_config_reads_bucket_and_aws_variables():
    runpod = s3_config({"BUCKET_ENDPOINT_URL": "http://minio:9000", "BUCKET_ACCESS_KEY_ID": "bk",
                        "BUCKET_SECRET_ACCESS_KEY": "bs", "AWS_ACCESS_KEY_ID": "ak", "AWS_SECRET_ACCESS_KEY": "as"})
    assert (runpod.endpoint_url, runpod.access_key_id, runpod.secret_access_key) == ("http://minio:9000", "bk", "bs")
    aws = s3_config({"AWS_ACCESS_KEY_ID": "ak", "AWS_SECRET_ACCESS_KEY": "top-secret", "AWS_REGION": "eu-west-1",
                     "AWS_SESSION_TOKEN": "session-secret"})
    assert aws == S3Config(endpoint_url=None, access_key_id="ak", secret_access_key="top-secret",
                           session_token="session-secret", region="eu-west-1")
    assert "secret" not in repr(aws)
    assert s3_config({}) == S3Config()
    assert parse_s3_url("s3://bucket/a/b.zip") == ("bucket", "a/b.zip")
    for bad in ("s3://bucket", "s3://bucket/", "s3:///key"):
        with pytest.raises(DatasetError, match="s3://bucket/key"):
            parse_s3_url(bad)


def test_s3_download_presigned_url_and_errors(tmp_path):
    payload = os.urandom(3 * 1024 * 1024)
    with moto_s3() as s3:
        client = s3.client()
        client.create_bucket(Bucket="data")
        client.put_object(Bucket="data", Key="dir/set.zip", Body=payload)
        events: list = []
        path = download("s3://data/dir/set.zip", tmp_path / "a", settings=with_s3(Settings.from_env({}), s3.env),
                        on_event=events.append, max_bytes=LIMIT)
        assert path.read_bytes() == payload and path.name == "set.zip"
        progress = [e for e in events if isinstance(e, DownloadProgress)]
        assert progress[-1].bytes_done == progress[-1].bytes_total == len(payload)
        assert progress[0].source == "s3://data/dir/set.zip"
        with pytest.raises(DownloadError, match=r"s3://data/missing\.zip: not found"):
            download("s3://data/missing.zip", tmp_path / "b", settings=with_s3(OPEN, s3.env), max_bytes=LIMIT)
        with pytest.raises(DownloadError, match="over the 1000-byte download limit"):
            download("s3://data/dir/set.zip", tmp_path / "c", settings=with_s3(OPEN, s3.env), max_bytes=1000)
        presigned = client.generate_presigned_url("get_object", Params={"Bucket": "data", "Key": "dir/set.zip"},
                                                  ExpiresIn=300)
        events = []
        path = download(presigned, tmp_path / "d", settings=OPEN, on_event=events.append, max_bytes=LIMIT)
        assert path.read_bytes() == payload
        assert all("Signature" not in e.source and "?" not in e.source for e in events)
        gone = client.generate_presigned_url("get_object", Params={"Bucket": "data", "Key": "gone.zip"},
                                             ExpiresIn=300)
        with pytest.raises(DownloadError, match=r"gone\.zip: HTTP 404") as caught:
            download(gone, tmp_path / "e", settings=OPEN, max_bytes=LIMIT)
        assert "Signature" not in str(caught.value)


def test_a_cancel_stops_an_s3_download_mid_transfer(tmp_path):
    payload = os.urandom(6 * 1024 * 1024)
    cancel = Cancel()
    cancelled_at: list[float] = []

    def on_event(event) -> None:
        if isinstance(event, DownloadProgress) and event.bytes_done and not cancelled_at:
            cancelled_at.append(time.monotonic())
            cancel.set()

    with moto_s3() as s3:
        s3.client().create_bucket(Bucket="data")
        s3.client().put_object(Bucket="data", Key="big.zip", Body=payload)
        port = urlsplit(s3.endpoint).port or 80
        with throttled(port, bytes_per_s=300_000) as link:  # 6 MB: 20 s through this link
            env = {**s3.env, "BUCKET_ENDPOINT_URL": link.base}
            with pytest.raises(JobCancelled) as caught:
                download("s3://data/big.zip", tmp_path / "dl", settings=with_s3(OPEN, env), on_event=on_event,
                         max_bytes=LIMIT, cancel=cancel)
            stopped = time.monotonic()
    assert cancelled_at and stopped - cancelled_at[0] < 3
    assert caught.value.code == "cancelled" and "s3://data/big.zip" in caught.value.message
    assert [p.name for p in (tmp_path / "dl").iterdir() if p.stat().st_size] == []  # no partial file left
