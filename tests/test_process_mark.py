"""core/adapters/process_mark.py: a process group found again from its record (pid, group id, start time), a reused
pid told apart, and a stop that ends the whole group. Real processes where /proc is at hand; a fake /proc for a
pid given to another process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.adapters import ProcessMark
from core.adapters.process_mark import parse_stat

# A leader that ignores SIGTERM (only the stop's SIGKILL ends it) with a child in its group.
GROUP = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
         "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); time.sleep(600)")


def stat_line(pid: int, comm: str, *, state: str = "S", pgid: int = 0, started: int = 0) -> str:
    fields = [state, "1", str(pgid), str(pgid), "0", "-1", "4194304", *["0"] * 12, str(started), "0", "0"]
    return f"{pid} ({comm}) {' '.join(fields)}\n"


def fake_proc(root: Path, *lines: str) -> Path:
    for line in lines:
        folder = root / line.split(" ", 1)[0]
        folder.mkdir(parents=True)
        (folder / "stat").write_text(line)
    return root


def test_a_stat_line_parses_whatever_the_command_name_holds():
    parsed = parse_stat(stat_line(42, "python) (x y", pgid=40, started=123456))
    assert parsed is not None and (parsed.pid, parsed.pgid, parsed.started, parsed.state) == (42, 40, 123456, "S")
    assert parse_stat("not a stat line") is None and parse_stat("1 (short) S 0") is None


def test_a_reused_pid_is_not_the_group_of_the_record(tmp_path):
    mark = ProcessMark(pid=100, pgid=100, started=5000)
    same = fake_proc(tmp_path / "a", stat_line(100, "python", pgid=100, started=5000),
                     stat_line(101, "pt_main_thread", pgid=100, started=5100))
    assert mark.members(proc=same) == [100, 101]
    reused = fake_proc(tmp_path / "b", stat_line(100, "bash", pgid=100, started=9000))
    assert mark.members(proc=reused) == [] and not mark.alive(proc=reused)
    # The leader exited, its worker lives on: the group is still there (Linux does not reuse a live group's id).
    orphaned = fake_proc(tmp_path / "c", stat_line(101, "pt_main_thread", pgid=100, started=5100))
    assert mark.alive(proc=orphaned)
    zombie = fake_proc(tmp_path / "d", stat_line(100, "python", state="Z", pgid=100, started=5000))
    assert not mark.alive(proc=zombie)


def test_a_mark_survives_its_record_and_refuses_what_is_not_one():
    mark = ProcessMark(pid=7, pgid=7, started=99)
    assert ProcessMark.from_dict(mark.to_dict()) == mark
    assert ProcessMark.from_dict(None) is None and ProcessMark.from_dict({"pid": "x"}) is None


def test_a_live_group_is_found_and_stopped_whole(tmp_path):
    leader = subprocess.Popen([sys.executable, "-c", GROUP], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        mark = ProcessMark.of(leader.pid)
        while mark is not None and len(mark.members()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mark is not None and mark.pgid == leader.pid and len(mark.members()) == 2
        stopped = mark.stop(grace_s=0.5)  # SIGTERM is ignored: only the SIGKILL after the grace ends it
        leader.wait(timeout=10)
        assert stopped and not mark.alive() and not mark.stop()
        assert ProcessMark.of(leader.pid) is None
    finally:
        try:
            os.killpg(leader.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        leader.wait()
