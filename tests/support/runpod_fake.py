"""A local stand-in for RunPod's job API, for runpod's real worker loop (docs/runpod-notes.md lists the calls).

The worker (`python -m worker` with `fake.env`) takes jobs from here, posts progress and results here, and long-polls
here for stop signals, exactly as it would on RunPod:

    with running_runpod_fake() as fake:
        worker = subprocess.Popen([python, "-m", "worker"], env={**os.environ, **fake.env})
        job_id = fake.queue({"dataset_url": ..., "config": {...}})
        fake.wait_for_progress(job_id, lambda p: p.get("step", 0) >= 2)
        fake.stop(job_id)                                   # what RunPod's /cancel does
        result = fake.wait_for_result(other_id)             # {"output": ...} or {"error": ...}

Calls served (all on 127.0.0.1; the URLs carry a '?' because the worker appends '&...'):
    GET  /v2/<ep>/job-take/<pod>?...&job_in_progress=0|1  -> 200 {"id", "input"} or 204 after a short long-poll
    GET  /v2/<ep>/job-stop/<pod>?...                       -> 200 {"jobsToStop": [...]} or 204 after a long-poll
    POST /v2/<ep>/job-done/<pod>/<id>?...&isStream=false   -> a progress update when its status is IN_PROGRESS,
                                                              else the job's final result
    POST /v2/<ep>/job-stream/<pod>/<id>?...                -> a streamed partial (recorded)
    GET  /v2/<ep>/ping/<pod>?...                           -> 200 (recorded)
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.loopback import LoopbackServer, QuietHandler, serving

ENDPOINT_ID = "ep-test"
POD_ID = "pod-test"
API_KEY = "rp-fake-api-key"


@dataclass
class Posted:
    at: float
    """time.monotonic() when it arrived."""
    body: dict[str, Any]


@dataclass
class RunpodFake:
    take_wait_s: float = 1.0
    stop_wait_s: float = 2.0
    endpoint: str = ""
    queued: list[dict[str, Any]] = field(default_factory=list)
    taken: dict[str, float] = field(default_factory=dict)
    """job id -> when the worker took it."""
    take_requests: list[tuple[float, dict[str, list[str]]]] = field(default_factory=list)
    progress: dict[str, list[Posted]] = field(default_factory=dict)
    results: dict[str, Posted] = field(default_factory=dict)
    streams: dict[str, list[Posted]] = field(default_factory=dict)
    pings: list[float] = field(default_factory=list)
    pending_stops: list[str] = field(default_factory=list)
    stops_sent: dict[str, float] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    # ---- what a test does ----------------------------------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        """The variables RunPod gives a serverless worker, pointing at this fake."""
        base = f"{self.endpoint}/v2/{ENDPOINT_ID}"
        return {
            "RUNPOD_WEBHOOK_GET_JOB": f"{base}/job-take/$ID?gpu=cpu",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base}/job-done/$RUNPOD_POD_ID/$ID?gpu=cpu",
            "RUNPOD_WEBHOOK_POST_STREAM": f"{base}/job-stream/$RUNPOD_POD_ID/$ID?gpu=cpu",
            "RUNPOD_WEBHOOK_PING": f"{base}/ping/$RUNPOD_POD_ID?gpu=cpu",
            "RUNPOD_POD_ID": POD_ID,
            "RUNPOD_ENDPOINT_ID": ENDPOINT_ID,
            "RUNPOD_AI_API_KEY": API_KEY,
            "RUNPOD_PING_INTERVAL": "2000",
            # Without these two runpod's fitness checks look for a GPU and real system limits, and hard-exit.
            "RUNPOD_SKIP_GPU_CHECK": "true",
            "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
        }

    def queue(self, job_input: Any, *, job_id: str | None = None) -> str:
        job_id = job_id or f"job-{uuid.uuid4().hex[:12]}"
        with self._changed:
            self.queued.append({"id": job_id, "input": job_input})
            self._changed.notify_all()
        return job_id

    def stop(self, job_id: str) -> None:
        """Ask the worker to stop a job, as RunPod does on /cancel or when a job's execution timeout passes."""
        with self._changed:
            self.pending_stops.append(job_id)
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[], Any], *, timeout_s: float, what: str) -> Any:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{what}: nothing after {timeout_s:g} s")
                self._changed.wait(min(left, 0.5))

    def wait_for_result(self, job_id: str, *, timeout_s: float = 120) -> dict[str, Any]:
        return self.wait_for(lambda: self.results.get(job_id), timeout_s=timeout_s,
                             what=f"the result of {job_id}").body

    def wait_for_progress(self, job_id: str, predicate: Callable[[dict[str, Any]], bool], *,
                          timeout_s: float = 120) -> dict[str, Any]:
        """The first progress update of the job whose output satisfies `predicate`."""
        def found():
            return next((p.body["output"] for p in self.progress.get(job_id, [])
                         if isinstance(p.body.get("output"), dict) and predicate(p.body["output"])), None)

        return self.wait_for(found, timeout_s=timeout_s, what=f"a matching progress update of {job_id}")

    def wait_for_take(self, job_id: str, *, timeout_s: float = 60) -> float:
        return self.wait_for(lambda: self.taken.get(job_id), timeout_s=timeout_s, what=f"the worker taking {job_id}")

    def progress_of(self, job_id: str) -> list[dict[str, Any]]:
        with self._changed:
            return [p.body.get("output") for p in self.progress.get(job_id, [])]

    # ---- what the worker calls (the handler's thread) --------------------------------------------------------
    def take(self, query: dict[str, list[str]]) -> dict[str, Any] | None:
        deadline = time.monotonic() + self.take_wait_s
        with self._changed:
            self.take_requests.append((time.monotonic(), query))
            self._changed.notify_all()
            while not self.queued:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left)
            job = self.queued.pop(0)
            self.taken[job["id"]] = time.monotonic()
            self._changed.notify_all()
            return job

    def take_stops(self) -> list[str]:
        deadline = time.monotonic() + self.stop_wait_s
        with self._changed:
            while not self.pending_stops:
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._changed.wait(left)
            stops, self.pending_stops = self.pending_stops, []
            for job_id in stops:
                self.stops_sent[job_id] = time.monotonic()
            self._changed.notify_all()
            return stops

    def record_done(self, job_id: str, body: dict[str, Any]) -> None:
        with self._changed:
            posted = Posted(time.monotonic(), body)
            if body.get("status") == "IN_PROGRESS":
                self.progress.setdefault(job_id, []).append(posted)
            else:
                self.results[job_id] = posted
            self._changed.notify_all()

    def record_stream(self, job_id: str, body: dict[str, Any]) -> None:
        with self._changed:
            self.streams.setdefault(job_id, []).append(Posted(time.monotonic(), body))
            self._changed.notify_all()

    def record_ping(self) -> None:
        with self._changed:
            self.pings.append(time.monotonic())
            self._changed.notify_all()


class _Handler(QuietHandler):
    fake: RunpodFake

    def _parts(self) -> tuple[list[str], dict[str, list[str]]]:
        split = urlsplit(self.path)
        return [part for part in split.path.split("/") if part], parse_qs(split.query)

    def _answer(self, status: int, body: Any = None) -> None:
        payload = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:  # http.server's name
        parts, query = self._parts()
        kind = parts[2] if len(parts) > 2 else ""
        if kind == "job-take":
            job = self.fake.take(query)
            if job:
                self._answer(200, job)
            else:
                self._answer(204)
        elif kind == "job-stop":
            stops = self.fake.take_stops()
            if stops:
                self._answer(200, {"jobsToStop": stops})
            else:
                self._answer(204)
        elif kind == "ping":
            self.fake.record_ping()
            self._answer(200, {})
        else:
            self.fake.unknown.append(f"GET {self.path}")
            self._answer(404, {"error": "unknown path"})

    def do_POST(self) -> None:  # http.server's name
        parts, _ = self._parts()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        kind = parts[2] if len(parts) > 2 else ""
        try:
            # runpod sends JSON under a form-urlencoded content type.
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self.fake.unknown.append(f"POST {self.path} (not JSON)")
            self._answer(400, {"error": "not JSON"})
            return
        if kind == "job-done" and len(parts) >= 5:
            self.fake.record_done(parts[4], body)
            self._answer(200, {})
        elif kind == "job-stream" and len(parts) >= 5:
            self.fake.record_stream(parts[4], body)
            self._answer(200, {})
        else:
            self.fake.unknown.append(f"POST {self.path}")
            self._answer(404, {"error": "unknown path"})


@contextmanager
def running_runpod_fake(*, take_wait_s: float = 1.0, stop_wait_s: float = 2.0) -> Iterator[RunpodFake]:
    """Serve a RunpodFake on 127.0.0.1 (a free port) for the duration of the block."""
    fake = RunpodFake(take_wait_s=take_wait_s, stop_wait_s=stop_wait_s)
    handler = type("BoundRunpodHandler", (_Handler,), {"fake": fake})
    with serving(LoopbackServer(handler), name="runpod-fake") as server:
        fake.endpoint = server.base
        yield fake
