"""Downloads of dataset files: http(s) (presigned URLs included) and s3://, streamed to disk.

http(s): a size limit, retries with exponential backoff, resume with HTTP Range after a dropped connection, each
redirect checked against the address policy, throttled DownloadProgress events. A server that sends no byte for
DOWNLOAD_STALL_S is dropped (and retried); a cancel or the job's deadline stops a download within a second, even one
stuck waiting for the server's headers or for a byte: a watcher, started before the first request, shuts every socket
the download opened. s3://: boto3 with credentials from AWS_* or RunPod's BUCKET_* variables; the client and its
typed errors are core/adapters/s3.py's; its byte callback looks at the cancel, so a cancel stops it at the next chunk
read.
A URL appears in events and errors only without its query string (presigned signatures) or user info.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import requests
from urllib3.exceptions import ProtocolError, ReadTimeoutError

from core.adapters.address_policy import check_url, guarded_session, public_url
from core.adapters.s3 import S3Config, s3_client, s3_error, s3_failures
from core.cancel import Cancel
from core.errors import AddressRefused, DatasetError, DownloadError
from core.events import DownloadProgress, EventSink, ignore_event
from core.settings import Settings

CHUNK = 1024 * 1024
PROBE_BUDGET_S = 10.0
"""How long the question "what is at this URL now" may take before the answer is "unknown"."""
MAX_REDIRECTS = 5
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
PROGRESS_INTERVAL_S = 0.5
WATCH_S = 0.2
"""How often a download in progress looks at its Cancel while its read may be blocked."""


Written = Callable[[Path, int], None]
"""on_written(path, size): the file being downloaded holds `size` bytes now."""


class _Progress:
    """Throttled DownloadProgress events; safe to call from boto3's transfer threads."""

    def __init__(self, *, source: str, on_event: EventSink, total: int | None = None):
        self.source, self.on_event, self.total = source, on_event, total
        self.done = 0
        self._last = 0.0
        self._lock = threading.Lock()

    def set(self, done: int, *, total: int | None = None, force: bool = False) -> None:
        with self._lock:
            self.done = done
            if total is not None:
                self.total = total
            now = time.monotonic()
            if not force and now - self._last < PROGRESS_INTERVAL_S:
                return
            self._last = now
            event = DownloadProgress(source=self.source, bytes_done=self.done, bytes_total=self.total)
        self.on_event(event)

    def add(self, count: int) -> None:
        self.set(self.done + count)


def file_name(url: str, *, default: str = "download") -> str:
    """A safe local file name from the URL's last path segment."""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:120]
    return name or default


def download(
    url: str,
    folder: Path,
    *,
    settings: Settings,
    on_event: EventSink = ignore_event,
    max_bytes: int,
    cancel: Cancel | None = None,
    retries: int = 4,
    backoff_s: float = 0.5,
    connect_timeout_s: float = 30.0,
    field: str = "dataset.url",
    on_written: Written | None = None,
) -> Path:
    """Download `url` (http, https or s3) into `folder`; return the file's path. Raises DownloadError/AddressRefused,
    or JobCancelled/JobTimeout when `cancel` stops it. `on_written(path, size)`: called (http only) from the
    download's thread each time the file being written has grown to `size` bytes, so that a reader can work on the
    bytes already there; a size smaller than the last one means the download started the file again."""
    cancel = Cancel.of(cancel)
    checked = check_url(url, allow_private=settings.allow_private_urls, field=field)
    cancel.check(f"before downloading {checked.public}")
    folder.mkdir(parents=True, exist_ok=True)
    if checked.scheme == "s3":
        return _download_s3(url, folder, config=settings.s3, on_event=on_event, max_bytes=max_bytes, cancel=cancel,
                            field=field)
    return _download_http(
        url, folder, public=checked.public, allow_private=settings.allow_private_urls, on_event=on_event,
        max_bytes=max_bytes, cancel=cancel, retries=retries, backoff_s=backoff_s,
        timeouts=(connect_timeout_s, settings.download_stall_s), field=field, on_written=on_written,
    )


def probe(url: str, *, settings: Settings, field: str = "dataset.url", cancel: Cancel | None = None,
          budget_s: float = PROBE_BUDGET_S) -> str | None:
    """What identifies the content at `url` now, without downloading it: the server's ETag or Last-Modified (with
    the size), the key of a cached copy (core/cache/store.py). None when the server gives neither, or cannot be asked
    within `budget_s` (a server that trickles its headers is a miss, not a wait): the caller then treats the content
    as unknown. The job's cancel or deadline ends it at once (JobCancelled, JobTimeout). A GET of one byte, not HEAD:
    a presigned URL is signed for GET."""
    checked = check_url(url, allow_private=settings.allow_private_urls, field=field)
    job = Cancel.of(cancel)
    stop = Cancel.of(job, timeout_s=budget_s)
    try:
        if checked.scheme == "s3":
            bucket, key = parse_s3_url(url, field=field)
            head = s3_client(settings.s3).head_object(Bucket=bucket, Key=key)
            tag, modified = head.get("ETag"), head.get("LastModified")
            size = head.get("ContentLength")
        else:
            sockets = _Sockets()
            with (_watched_session(allow_private=settings.allow_private_urls, sockets=sockets) as session,
                  _shut_on_cancel(sockets, stop)):
                response = _get(session, url, headers={"Range": "bytes=0-0", "Accept-Encoding": "identity"},
                                allow_private=settings.allow_private_urls, timeouts=(budget_s, budget_s),
                                field=field)
                with response:
                    if response.status_code not in (200, 206):
                        return None
                    tag, modified = response.headers.get("ETag"), response.headers.get("Last-Modified")
                    span = _content_range(response.headers.get("Content-Range"))
                    size = span[1] if span else response.headers.get("Content-Length")
            if tag and tag.startswith("W/"):
                tag = None  # a weak ETag says "equivalent", not "the same bytes"
    except s3_failures(DatasetError, requests.RequestException):
        job.check(f"while asking {public_url(url)} what it holds")
        return None
    job.check(f"while asking {public_url(url)} what it holds")
    if stop.is_set() or (not tag and not modified):
        return None
    return f"etag={tag or ''};modified={modified or ''};size={size}"


class _Retryable(Exception):
    """A failure worth another attempt (dropped connection, 5xx, 429)."""


def _get(
    session: requests.Session, url: str, *, headers: dict[str, str], allow_private: bool,
    timeouts: tuple[float, float], field: str
) -> requests.Response:
    """GET with redirects followed by hand, each target checked against the address policy first."""
    for _ in range(MAX_REDIRECTS + 1):
        checked = check_url(url, allow_private=allow_private, field=field)
        if checked.scheme not in ("http", "https"):
            raise AddressRefused(f"a redirect to a '{checked.scheme}://' URL is not followed", field=field)
        response = session.get(url, headers=headers, stream=True, timeout=timeouts, allow_redirects=False)
        if response.is_redirect:
            url = urljoin(url, response.headers["location"])
            response.close()
            continue
        return response
    raise DownloadError(f"more than {MAX_REDIRECTS} redirects", field=field)


def _content_range(value: str | None) -> tuple[int, int | None] | None:
    """'bytes 100-199/1000' -> (100, 1000); '.../*' -> (100, None)."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", value or "")
    if not match:
        return None
    return int(match.group(1)), None if match.group(2) == "*" else int(match.group(2))


def _download_http(
    url: str,
    folder: Path,
    *,
    public: str,
    allow_private: bool,
    on_event: EventSink,
    max_bytes: int,
    cancel: Cancel,
    retries: int,
    backoff_s: float,
    timeouts: tuple[float, float],
    field: str,
    on_written: Written | None,
) -> Path:
    target = folder / file_name(url)
    part = target.with_name(target.name + ".part")
    part.unlink(missing_ok=True)  # resume only within this call: a stale part may be of another file
    progress = _Progress(source=public, on_event=on_event)
    doing = f"while downloading {public}"
    validator: str | None = None
    failures = 0
    sockets = _Sockets()
    try:
        with (_watched_session(allow_private=allow_private, sockets=sockets) as session,
              _shut_on_cancel(sockets, cancel)):
            while True:
                done = part.stat().st_size if part.exists() else 0
                headers = {"Accept-Encoding": "identity"}
                if done:
                    headers["Range"] = f"bytes={done}-"
                    if validator:
                        headers["If-Range"] = validator
                try:
                    response = _get(session, url, headers=headers, allow_private=allow_private, timeouts=timeouts,
                                    field=field)
                    with response:
                        validator = response.headers.get("ETag") or response.headers.get("Last-Modified") or validator
                        _write_body(response, part, done=done, public=public, progress=progress, max_bytes=max_bytes,
                                    cancel=cancel, stall_s=timeouts[1], field=field, on_written=on_written)
                    break
                except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                        _Retryable) as exc:
                    cancel.check(doing)  # a socket shut by the watcher ends the request this way
                    failures += 1
                    if failures > retries:
                        raise DownloadError(
                            f"{public}: failed after {failures} attempts ({_short(exc)})", field=field
                        ) from None
                    cancel.wait(backoff_s * 2 ** (failures - 1))
                    cancel.check(doing)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, target)
    progress.set(target.stat().st_size, force=True)
    return target


class _Sockets:
    """The connections a download's session opened, so that a cancel can shut their sockets from another thread."""

    def __init__(self) -> None:
        self._connections: list[Any] = []
        self._lock = threading.Lock()
        self.shut = False

    def add(self, connection: Any) -> None:
        with self._lock:
            self._connections.append(connection)
            late = self.shut
        if late:
            _shut(connection)

    def shut_all(self) -> None:
        with self._lock:
            self.shut = True
            connections = list(self._connections)
        for connection in connections:
            _shut(connection)


def _shut(connection: Any) -> None:
    sock = getattr(connection, "sock", None)  # the TLS-wrapped socket for https, set once connected
    try:
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except (OSError, ValueError):
        pass  # already closed: its read has ended by itself


def _watched_session(*, allow_private: bool, sockets: _Sockets) -> requests.Session:
    """guarded_session, whose connections are recorded in `sockets` as they connect."""
    session = guarded_session(allow_private=allow_private)
    adapters = (session.get_adapter("http://"), session.get_adapter("https://"))
    managers = {id(adapter.poolmanager): adapter.poolmanager
                for adapter in adapters if isinstance(adapter, requests.adapters.HTTPAdapter)}
    for manager in managers.values():
        manager.pool_classes_by_scheme = {scheme: _recording_pool(pool, sockets)
                                          for scheme, pool in manager.pool_classes_by_scheme.items()}
    return session


def _recording_pool(pool: type, sockets: _Sockets) -> type:
    class Recording(pool.ConnectionCls):  # type: ignore[name-defined]
        def connect(self) -> None:
            super().connect()
            sockets.add(self)

    return type(pool.__name__, (pool,), {"ConnectionCls": Recording})


@contextmanager
def _shut_on_cancel(sockets: _Sockets, cancel: Cancel) -> Iterator[None]:
    """From before the first request to the end of the body, a watcher shuts the download's sockets when the job is
    cancelled or out of time: a wait for headers or for a byte from a silent server returns at once instead of after
    the stall timeout."""
    finished = threading.Event()

    def watch() -> None:
        while not finished.wait(WATCH_S):
            if cancel.is_set():
                sockets.shut_all()
                return

    watcher = threading.Thread(target=watch, name="download-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        finished.set()
        watcher.join()


def _write_body(  # noqa: C901 (one HTTP answer: a case per status, then the guarded read loop)
    response: requests.Response, part: Path, *, done: int, public: str, progress: _Progress, max_bytes: int,
    cancel: Cancel, stall_s: float, field: str, on_written: Written | None = None
) -> None:
    status = response.status_code
    if status in RETRY_STATUS:
        raise _Retryable(f"HTTP {status}")
    if status == 416 and done:
        part.unlink()  # our partial file no longer matches: start again
        raise _Retryable("HTTP 416 on resume")
    if status >= 400 or status not in (200, 206):
        reason = "not found" if status == 404 else (response.reason or "error")
        raise DownloadError(f"{public}: HTTP {status} {reason}", field=field)
    length = response.headers.get("Content-Length")
    span = _content_range(response.headers.get("Content-Range")) if status == 206 else None
    if status == 206 and (span is None or span[0] != done):
        part.unlink(missing_ok=True)
        raise _Retryable("the server answered a range we did not ask for")
    if status == 200:
        done = 0  # the server ignored Range (or the file changed): the whole body follows
    total = span[1] if span else (int(length) if length and length.isdigit() else None)
    if total is not None and total > max_bytes:
        raise DownloadError(f"{public}: {total} bytes is over the {max_bytes}-byte download limit", field=field)
    progress.set(done, total=total, force=True)
    with part.open("ab" if done else "wb") as sink:
        if on_written is not None and not done:
            on_written(part, 0)  # a new file, or the same one started again
        while True:
            try:
                # read1: whatever has arrived (up to CHUNK), so a slow server still lets this loop look at `cancel`.
                chunk = response.raw.read1(CHUNK, decode_content=True)
            except ReadTimeoutError:
                cancel.check(f"while downloading {public}")
                raise _Retryable(f"no data for {stall_s:g} s (DOWNLOAD_STALL_S)") from None
            except ProtocolError as exc:
                cancel.check(f"while downloading {public}")  # a socket shut by the watcher ends the read this way
                raise _Retryable(f"connection lost ({_short(exc)})") from None
            cancel.check(f"while downloading {public}")
            if not chunk:
                break
            done += len(chunk)
            if done > max_bytes:
                raise DownloadError(f"{public}: over the {max_bytes}-byte download limit", field=field)
            sink.write(chunk)
            progress.set(done)
            if on_written is not None:
                sink.flush()  # the reader opens the file itself: the bytes must be in it
                on_written(part, done)
    if total is not None and done < total:
        raise _Retryable(f"connection closed after {done} of {total} bytes")


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 200 else text[:200] + "..."


def parse_s3_url(url: str, *, field: str = "dataset.url") -> tuple[str, str]:
    parts = urlsplit(url)
    bucket, key = parts.netloc, parts.path.lstrip("/")
    if not bucket or not key or key.endswith("/"):
        raise DatasetError(f"{public_url(url)}: give s3://bucket/key of an archive or an image", field=field)
    return bucket, key


def _download_s3(
    url: str, folder: Path, *, config: S3Config, on_event: EventSink, max_bytes: int, cancel: Cancel, field: str
) -> Path:
    bucket, key = parse_s3_url(url, field=field)
    source = f"s3://{bucket}/{key}"
    target = folder / file_name(key)
    client = s3_client(config)
    try:
        size = int(client.head_object(Bucket=bucket, Key=key)["ContentLength"])
        if size > max_bytes:
            raise DownloadError(f"{source}: {size} bytes is over the {max_bytes}-byte download limit", field=field)
        progress = _Progress(source=source, on_event=on_event, total=size)
        progress.set(0, force=True)

        def received(count: int) -> None:
            # On boto3's transfer threads, per chunk read: raising here ends the transfer (its temp file goes too).
            cancel.check(f"while downloading {source}")
            progress.add(count)

        client.download_file(bucket, key, str(target), Callback=received)
        cancel.check(f"while downloading {source}")
    except s3_failures() as exc:
        raise s3_error(exc, family=DownloadError, where=source, field=field, config=config, bucket=bucket) from None
    progress.set(target.stat().st_size, force=True)
    return target
