"""`python -m worker [runpod's flags]`: the RunPod serverless worker.

runpod reads its own flags from the command line: `--rp_serve_api --rp_api_host H --rp_api_port N` (a local
/runsync API), `--test_input '{"input": ...}'` (one job, then exit 0, or 1 on an error; without it and without
RunPod's job API variables, ./test_input.json), `--rp_log_level INFO|DEBUG|...`. Under RunPod (RUNPOD_WEBHOOK_*
set) it runs runpod's worker loop: take a job, run it, post its result, take the next.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any


def local_api(argv: list[str]) -> bool:
    """runpod's local FastAPI (--rp_serve_api, or its realtime mode) takes a job's error only as text."""
    return "--rp_serve_api" in argv or bool(os.environ.get("RUNPOD_REALTIME_PORT"))


def lazy_handler(name: str) -> Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]:
    """worker.handler's `name`, imported with the first job: `import runpod` alone takes about 1.8 s here (1.1 s of it
    py-cpuinfo, docs/runpod-notes.md), so the worker asks for its first job before loading pydantic and the core."""

    async def handler(job: dict[str, Any]) -> dict[str, Any]:
        from worker import handler as jobs

        return await getattr(jobs, name)(job)

    return handler


def main() -> None:
    # runpod logs at DEBUG unless told otherwise, and its DEBUG lines print whole jobs, whose input may hold a
    # hub.token: INFO by default (--rp_log_level or RUNPOD_LOG_LEVEL still choose).
    os.environ.setdefault("RUNPOD_LOG_LEVEL", "INFO")
    # Decided now: runpod removes its own flags from sys.argv when it starts.
    chosen = "local_api_handler" if local_api(sys.argv[1:]) else "handler"
    import runpod

    runpod.serverless.start({"handler": lazy_handler(chosen)})


if __name__ == "__main__":
    main()
