"""A process group named so that it can be found again by another process (a restarted app): its leader's pid, the
group's id and the leader's start time from /proc/<pid>/stat, which tells a reused pid apart.

    mark = ProcessMark.of(process.pid)       # right after start; None where /proc cannot say
    mark.alive()                             # the same group still has a process in it
    mark.stop(grace_s=5.0)                   # SIGTERM the group, SIGKILL what is left

Linux keeps a pid that is still some group's id from being given to a new process, so while any member of the group
lives its id names this group; once the group is empty, a new process with the leader's pid has another start time.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PROC = Path("/proc")
POLL_S = 0.1


@dataclass(frozen=True)
class ProcStat:
    """What /proc/<pid>/stat says of one process."""

    pid: int
    state: str
    pgid: int
    started: int
    """Start time in clock ticks after boot (field 22)."""


def read_stat(pid: int, *, proc: Path = PROC) -> ProcStat | None:
    """The process's stat line, parsed; None when there is no such process (or /proc is not Linux's)."""
    try:
        text = (proc / str(pid) / "stat").read_text()
    except (OSError, ValueError):
        return None
    return parse_stat(text)


def parse_stat(text: str) -> ProcStat | None:
    """A /proc/<pid>/stat line. The command name (field 2) is in parentheses and may itself hold spaces and
    parentheses: the fields after it start at its last ')'."""
    head, sep, tail = text.rpartition(")")
    fields = tail.split()
    if not sep or len(fields) < 20 or "(" not in head:
        return None
    try:
        return ProcStat(pid=int(head.split("(", 1)[0]), state=fields[0], pgid=int(fields[2]),
                        started=int(fields[19]))
    except ValueError:
        return None


@dataclass(frozen=True)
class ProcessMark:
    pid: int
    """The group's leader (its own process group: start_new_session)."""
    pgid: int
    started: int
    """The leader's start time in clock ticks after boot."""

    @classmethod
    def of(cls, pid: int, *, proc: Path = PROC) -> ProcessMark | None:
        """The mark of a live process (None when it is gone or /proc cannot say)."""
        stat = read_stat(pid, proc=proc)
        return None if stat is None else cls(pid=stat.pid, pgid=stat.pgid, started=stat.started)

    @classmethod
    def from_dict(cls, data: Any) -> ProcessMark | None:
        """A mark as a record holds it; None for anything else."""
        try:
            return cls(pid=int(data["pid"]), pgid=int(data["pgid"]), started=int(data["started"]))
        except (TypeError, KeyError, ValueError):
            return None

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def members(self, *, proc: Path = PROC) -> list[int]:
        """The live processes of this group: none once the leader's pid names another process."""
        leader = read_stat(self.pid, proc=proc)
        if leader is not None and leader.started != self.started:
            return []  # the pid was given to another process: the group is long gone
        found = []
        for entry in proc.iterdir() if proc.is_dir() else []:
            if not entry.name.isdigit():
                continue
            stat = read_stat(int(entry.name), proc=proc)
            if stat is not None and stat.pgid == self.pgid and stat.state != "Z" and stat.started >= self.started:
                found.append(stat.pid)
        return sorted(found)

    def alive(self, *, proc: Path = PROC) -> bool:
        leader = read_stat(self.pid, proc=proc)
        if leader is not None and leader.started == self.started and leader.state != "Z":
            return True  # the usual case, without reading every process's stat
        return bool(self.members(proc=proc))

    def stop(self, *, grace_s: float = 5.0) -> bool:
        """SIGTERM the group, SIGKILL what is left after `grace_s`; True when there was something to stop."""
        if not self.alive():
            return False
        _signal_group(self.pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and self.alive():
            time.sleep(POLL_S)
        if self.alive():
            _signal_group(self.pgid, signal.SIGKILL)
            while time.monotonic() < deadline + grace_s and self.alive():
                time.sleep(POLL_S)
        return True


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # gone meanwhile, or not ours
