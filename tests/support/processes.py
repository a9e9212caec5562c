"""Which processes are still at work in a folder: how the tests prove that no SimpleTuner process survives."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


def processes_working_in(folder: Path | str) -> list[int]:
    """Pids of live (not zombie) processes whose working directory is inside `folder`. SimpleTuner and its launcher
    run in the job's trainer folder; a folder removed meanwhile still counts ('.../trainer (deleted)')."""
    folder = Path(folder)
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if Path(os.readlink(proc / "cwd")).is_relative_to(folder):
                if "\nState:\tZ" not in (proc / "status").read_text():
                    found.append(int(proc.name))
        except OSError:
            continue  # gone meanwhile, or not ours to read
    return found


def stop_process_group(process: subprocess.Popen, *, grace_s: float = 20) -> None:
    """SIGTERM the group a test started (start_new_session=True), SIGKILL it if it outlives `grace_s`."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
