"""Runs a command tied to the process that started it: when that process dies (even by SIGKILL), the whole process
group of the command is stopped. core/adapters/trainer_env.py starts every trainer-env process through it.

    python -P watchdog.py <fd> -- <command...>

<fd> is the read end of a pipe whose only write end the starting process holds: the kernel closes it when that
process ends, however it ends, so a read here returns end-of-file. Then the group (this process is its leader) gets
SIGTERM, and SIGKILL after a grace period. A parent-death signal (prctl PR_SET_PDEATHSIG) would not do: it fires when
the starting *thread* ends and reaches only the direct child, not the group's other processes (accelerate's
training process, data loader workers). The command shares this process's group, stdio and working directory; its
exit code is this process's exit code. Standard library only: it runs before anything of the command loads.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

GRACE_S = 10.0


def watch(fd: int, child: subprocess.Popen) -> None:
    """Wait for the starting process to end; then stop the group, unless the command ended first."""
    try:
        while os.read(fd, 4096):
            pass
    except OSError:
        pass
    if child.poll() is not None:
        return
    os.killpg(0, signal.SIGTERM)  # this process ignores it (see main): the command and its workers stop
    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.1)
    os.killpg(0, signal.SIGKILL)  # what ignored SIGTERM, and this process with it


def main() -> int:
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        print("usage: watchdog.py <fd> -- <command...>", file=sys.stderr)
        return 2
    fd, command = int(sys.argv[1]), sys.argv[3:]
    # A stop of the group (SIGTERM, SIGINT) reaches the command too: this process waits for its end and exits with
    # its code. A handler, not SIG_IGN: an ignored signal would stay ignored in the command after exec.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    child = subprocess.Popen(command)  # close_fds: the command never holds the pipe
    threading.Thread(target=watch, args=(fd, child), daemon=True).start()
    code = child.wait()
    if code < 0:  # ended by a signal: end the same way, so the starting process reads the same status
        if -code != signal.SIGKILL:
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    return code


if __name__ == "__main__":
    sys.exit(main())
