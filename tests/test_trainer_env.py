"""core/adapters/trainer_env.py with real subprocesses: a tools-like script run to its end under `python -P`, the
environment policy (nothing of ours reaches the child unless allowed or passed), a timeout and a stop that end the
whole process group, and the one SetupError of a missing env."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from core.adapters import TrainerEnv
from core.errors import SetupError
from core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
FAKE_TOKEN = "hf_" + "fAkEtOkEn" * 4  # never a real token: this test reads the child's environment back
# Prints what the child sees: the names of its variables, the values of the ones asked for, and how it was started.
REPORT_SCRIPT = """
import json, sys, os
asked = sys.argv[1:]
print("some library's chatter")
print(json.dumps({"names": sorted(os.environ), "values": {name: os.environ.get(name) for name in asked},
                  "safe_path": bool(sys.flags.safe_path), "prefix": sys.prefix, "path0": sys.path[0]}))
"""
# Starts a grandchild in its own process group's tree, says both pids, then waits: `ignore_term` makes it ignore
# SIGTERM, so only the stop's SIGKILL can end it.
GROUP_SCRIPT = """
import json, signal, subprocess, sys, time
if "--ignore-term" in sys.argv:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                          "time.sleep(600)"])
print(json.dumps({"pids": [child.pid]}), flush=True)
time.sleep(600)
"""


def script(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def stand_in(tmp_path: Path) -> Settings:
    """A trainer env whose python is this test's interpreter: the adapter's process handling, without the real env's
    libraries (the test marked trainer_env runs the real one)."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(sys.executable)
    return Settings(trainer_venv=tmp_path / "venv", data_root=tmp_path / "data")


def report(done: subprocess.CompletedProcess[str]) -> dict:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def gone(pid: int) -> bool:
    """No such process any more (or only its zombie, waiting for a parent to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def kill_group(process: subprocess.Popen) -> None:
    """The test's own cleanup, independent of the adapter: nothing of the group outlives the test."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def wait_until(check, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


@pytest.mark.trainer_env
def test_a_tools_script_runs_to_its_end_under_the_trainer_envs_python_with_P(settings, tmp_path):
    trainer = TrainerEnv(settings, base={"PATH": "/usr/bin:/bin"})
    tool = script(tmp_path, "report.py", REPORT_SCRIPT)
    # A module beside the script that would shadow a library's: -P keeps the script's folder off sys.path.
    (tmp_path / "json.py").write_text("raise SystemExit('the project shadowed a library')\n")
    done = trainer.run(tool, ["VIRTUAL_ENV"], timeout_s=60)
    seen = report(done)
    assert seen["safe_path"] and seen["path0"] != str(tmp_path)
    assert Path(seen["prefix"]).resolve() == settings.trainer_venv.resolve()
    assert seen["values"]["VIRTUAL_ENV"] == str(settings.trainer_venv)
    assert done.stdout.startswith("some library's chatter")
    failed = trainer.run(script(tmp_path, "fails.py", "import sys; sys.exit('no model family x')"), timeout_s=60)
    assert failed.returncode == 1 and "no model family x" in failed.stderr


def test_the_child_gets_the_allow_list_and_never_a_secret_it_was_not_given(stand_in, tmp_path):
    base = {"PATH": "/usr/bin:/bin", "HOME": "/home/runner", "LANG": "C.UTF-8", "HF_HOME": "/cache/hf",
            "HF_TOKEN": FAKE_TOKEN, "HUGGING_FACE_HUB_TOKEN": FAKE_TOKEN, "BUCKET_SECRET_ACCESS_KEY": "s3cret",
            "RUNPOD_AI_API_KEY": "rp", "UI_PASSWORD": "pw", "SOME_UNKNOWN_SETTING": "x", "PYTHONPATH": "/evil",
            "LD_PRELOAD": "/evil.so", "CUDA_AUTH_TOKEN": "c"}
    trainer = TrainerEnv(stand_in, base=base)
    tool = script(tmp_path, "report.py", REPORT_SCRIPT)
    asked = ["HOME", "LANG", "HF_HOME", "CUDA_VISIBLE_DEVICES", "HF_HUB_OFFLINE", "PATH", "CONFIG_PATH", "HF_TOKEN"]
    seen = report(trainer.run(tool, asked, timeout_s=60))
    for withheld in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "BUCKET_SECRET_ACCESS_KEY", "RUNPOD_AI_API_KEY",
                     "UI_PASSWORD", "SOME_UNKNOWN_SETTING", "PYTHONPATH", "LD_PRELOAD", "CUDA_AUTH_TOKEN"):
        assert withheld not in seen["names"], withheld
    values = seen["values"]
    assert (values["HOME"], values["LANG"], values["HF_HOME"]) == ("/home/runner", "C.UTF-8", "/cache/hf")
    assert values["CUDA_VISIBLE_DEVICES"] == "" and values["HF_HUB_OFFLINE"] == "1"  # the CPU, offline by default
    assert values["PATH"] == f"{stand_in.trainer_venv / 'bin'}{os.pathsep}/usr/bin:/bin"
    # Given on purpose (a gated base model; SimpleTuner's own settings): then, and only then, it is there.
    given = report(trainer.run(tool, asked, timeout_s=60, device="cuda", hf_token=FAKE_TOKEN,
                               extra_env={"CONFIG_PATH": "/job/config"}))
    assert given["values"]["HF_TOKEN"] == FAKE_TOKEN and given["values"]["CONFIG_PATH"] == "/job/config"
    assert "CUDA_VISIBLE_DEVICES" not in given["names"]
    assert "HUGGING_FACE_HUB_TOKEN" not in given["names"] and "BUCKET_SECRET_ACCESS_KEY" not in given["names"]


def test_offline_follows_the_settings_unless_the_tool_never_downloads(tmp_path, stand_in):
    online = TrainerEnv(Settings(trainer_venv=stand_in.trainer_venv, data_root=tmp_path, online=True),
                        base={"PATH": "/usr/bin"})
    tool = script(tmp_path, "report.py", REPORT_SCRIPT)
    assert "HF_HUB_OFFLINE" not in report(online.run(tool, timeout_s=60))["names"]
    forced = report(online.run(tool, ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"],
                               timeout_s=60, offline=True))["values"]
    assert forced == {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def test_the_default_base_is_our_own_environment_and_its_token_stays_here(stand_in, tmp_path):
    """The adapter as a face uses it: os.environ of a process that holds HF_TOKEN (Settings reads it too)."""
    tool = script(tmp_path, "report.py", REPORT_SCRIPT)
    code = (f"from core.adapters import TrainerEnv; from core.settings import Settings; "
            f"settings = Settings.from_env(); "
            f"done = TrainerEnv(settings).run({str(tool)!r}, ['LANG'], timeout_s=60); "
            f"print(done.stdout, end='')")
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HF_TOKEN": FAKE_TOKEN, "SOME_UNKNOWN_SETTING": "x",
           "TRAINER_VENV": str(stand_in.trainer_venv), "DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    seen = report(done)
    assert seen["values"]["LANG"] == "C.UTF-8"
    assert "HF_TOKEN" not in seen["names"] and "SOME_UNKNOWN_SETTING" not in seen["names"]
    assert FAKE_TOKEN not in done.stdout


def test_stop_ends_the_whole_group_even_a_child_that_ignores_sigterm(stand_in, tmp_path):
    trainer = TrainerEnv(stand_in, base={"PATH": "/usr/bin:/bin"})
    tool = script(tmp_path, "group.py", GROUP_SCRIPT)
    process = trainer.start(tool, ["--ignore-term"], stdout=subprocess.PIPE, text=True)
    try:
        grandchild = json.loads(process.stdout.readline())["pids"][0]  # type: ignore[union-attr]
        assert os.getpgid(grandchild) == process.pid != os.getpgid(0)  # a group of its own, the grandchild in it
        assert trainer.running(process)
        # In a thread: a stop that never sends SIGKILL would wait forever on a process that ignores SIGTERM.
        stopper = threading.Thread(target=trainer.stop, args=(process,), kwargs={"grace_s": 0.5}, daemon=True)
        stopper.start()
        stopper.join(10)
        assert not stopper.is_alive(), "stop did not end a process that ignores SIGTERM"
        assert process.returncode is not None and wait_until(lambda: not trainer.running(process))
        assert wait_until(lambda: gone(grandchild))
    finally:
        kill_group(process)
        process.stdout.close()  # type: ignore[union-attr]


def test_a_run_past_its_timeout_is_stopped_with_its_group(stand_in, tmp_path):
    trainer = TrainerEnv(stand_in, base={"PATH": "/usr/bin:/bin"})
    pid_file = tmp_path / "pids.json"
    tool = script(tmp_path, "group.py", GROUP_SCRIPT.replace('print(json.dumps({"pids": [child.pid]}), flush=True)',
                                                             f'open({str(pid_file)!r}, "w").write(str(child.pid))'))
    started = time.monotonic()
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            trainer.run(tool, timeout_s=1.5)
        assert time.monotonic() - started < 10
        assert wait_until(lambda: gone(int(pid_file.read_text())))
    finally:
        if pid_file.exists():  # whatever the adapter did, this test leaves no process behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_a_missing_env_is_one_setup_error_naming_the_variable(tmp_path):
    trainer = TrainerEnv(Settings(trainer_venv=tmp_path / "nowhere", data_root=tmp_path), base={})
    tool = script(tmp_path, "marker.py", f"open({str(tmp_path / 'ran')!r}, 'w').write('ran')")
    for attempt in (lambda: trainer.run(tool), lambda: trainer.start(tool), trainer.require):
        with pytest.raises(SetupError) as caught:
            attempt()
        error = caught.value
        assert error.field == "TRAINER_VENV" and error.code == "setup_error"
        assert str(tmp_path / "nowhere") in error.message and "make setup" in error.message
    assert not (tmp_path / "ran").exists()


def test_a_program_or_package_the_env_lacks_is_the_same_setup_error(stand_in):
    trainer = TrainerEnv(stand_in, base={})
    for attempt in (lambda: trainer.program("accelerate", what="SimpleTuner"),
                    lambda: trainer.require_installed("simpletuner/train.py", what="SimpleTuner")):
        with pytest.raises(SetupError) as caught:
            attempt()
        assert caught.value.field == "TRAINER_VENV" and "SimpleTuner is not installed" in caught.value.message
        assert "make setup" in caught.value.message
    (trainer.bin / "accelerate").write_text("#!/bin/sh\n")
    for version in ("3.11", "3.12"):  # one env holds one Python; the last match wins either way
        package = trainer.venv / "lib" / f"python{version}" / "site-packages" / "simpletuner"
        package.mkdir(parents=True)
        (package / "train.py").write_text("")
    assert trainer.program("accelerate", what="SimpleTuner") == trainer.bin / "accelerate"
    assert trainer.require_installed("simpletuner/train.py", what="SimpleTuner") == \
        trainer.venv / "lib" / "python3.12" / "site-packages" / "simpletuner" / "train.py"


# Starts the adapter as an app does, prints the group's pids, then waits to be killed.
PARENT_SCRIPT = """
import json, subprocess, sys, time
from core.adapters import TrainerEnv
from core.settings import Settings
from pathlib import Path
settings = Settings(trainer_venv=Path(sys.argv[1]), data_root=Path(sys.argv[2]))
process = TrainerEnv(settings, base={"PATH": "/usr/bin:/bin"}) \\
    .start(sys.argv[3], stdout=subprocess.PIPE, text=True)
grandchild = json.loads(process.stdout.readline())["pids"][0]
print(json.dumps({"leader": process.pid, "grandchild": grandchild}), flush=True)
time.sleep(600)
"""


def test_the_group_ends_when_the_process_that_started_it_is_killed(stand_in, tmp_path):
    """A `kill -9` of the app (the parent here) closes the watchdog's pipe: the whole group stops, a grandchild that
    ignores SIGTERM included, and nothing is left to train on beside a restarted app."""
    tool = script(tmp_path, "group.py", GROUP_SCRIPT)
    parent = subprocess.Popen([sys.executable, "-c", PARENT_SCRIPT, str(stand_in.trainer_venv),
                               str(tmp_path / "data"), str(tool)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    pids: dict[str, int] = {}
    try:
        pids = json.loads(parent.stdout.readline())  # type: ignore[union-attr]
        assert not gone(pids["leader"]) and not gone(pids["grandchild"])
        assert os.getpgid(pids["grandchild"]) == pids["leader"] != os.getpgid(parent.pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        assert wait_until(lambda: gone(pids["grandchild"]) and gone(pids["leader"]), timeout_s=30)
    finally:
        kill_group(parent)
        for pid in pids.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        parent.stdout.close()  # type: ignore[union-attr]


def test_the_programs_exit_code_and_output_come_through_the_watchdog(stand_in, tmp_path):
    trainer = TrainerEnv(stand_in, base={"PATH": "/usr/bin:/bin"})
    done = trainer.run(script(tmp_path, "exits.py", "print('out'); import sys; sys.exit(3)"), timeout_s=60)
    assert (done.returncode, done.stdout) == (3, "out\n")
    killed = trainer.run(script(tmp_path, "killed.py", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"),
                         timeout_s=60)
    assert killed.returncode == -signal.SIGTERM
