"""start.sh, run for real from this checkout on a CPU machine: face choice, GPU check, paths, and the faces starting.

START_DRY_RUN=1 makes start.sh print what it resolved and the command it would exec, then exit: that is how the
choices are checked without starting a face. The faces themselves are started for real where they exist.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
START_SH = ROOT / "start.sh"
APP_VENV = ROOT / ".venv"
# Variables start.sh reads: each test starts from none of them, whatever the machine running the tests has set.
READ_BY_START_SH = {
    "MODE", "APP_VENV", "TRAINER_VENV", "ALLOW_CPU", "TRAINER_DEVICE", "HF_HOME", "PORT", "GRADIO_SERVER_PORT",
    "GRADIO_SERVER_NAME", "START_DRY_RUN", "START_FACE_FILE", "RUNPOD_VOLUME", "WORKSPACE_DIR", "PYTHONPATH",
    "MOUNTINFO", "VOLUME_DIR",
}


def gpu_present() -> bool:
    if shutil.which("nvidia-smi") is None:
        return False
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
    return listed.returncode == 0 and "GPU" in listed.stdout


HAS_GPU = gpu_present()


def image_venv(path: str) -> bool:
    return Path(path, "bin", "python").exists()


def clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in READ_BY_START_SH and not key.startswith("RUNPOD_")}
    # No volume and no /workspace unless a test makes one: the machine's own folders must not decide the outcome.
    env["RUNPOD_VOLUME"] = str(tmp_path / "no-volume")
    env["WORKSPACE_DIR"] = str(tmp_path / "no-workspace")
    env["START_FACE_FILE"] = str(tmp_path / "face")
    env.update(extra)
    return env


def run(args: list[str], env: dict[str, str], *, timeout: float = 60, cwd: Path | None = None):
    return subprocess.run([str(START_SH), *args], env=env, capture_output=True, text=True, timeout=timeout,
                          cwd=cwd or ROOT)


def dry_run(args: list[str], env: dict[str, str]) -> dict[str, str]:
    """start.sh's resolved settings (KEY=value lines) in dry mode."""
    done = run(args, {**env, "START_DRY_RUN": "1"})
    assert done.returncode == 0, f"start.sh {args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the GPU check ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(HAS_GPU, reason="a GPU is present: the no-GPU refusal cannot happen here")
def test_without_a_gpu_and_without_permission_it_refuses_and_names_allow_cpu(tmp_path):
    done = run(["ui"], clean_env(tmp_path))
    assert done.returncode == 3
    assert "no NVIDIA GPU found" in done.stderr
    assert "ALLOW_CPU=1" in done.stderr and "TRAINER_DEVICE=cpu" in done.stderr
    assert done.stdout == ""
    assert not (tmp_path / "face").exists(), "nothing may start when the GPU check fails"


@pytest.mark.skipif(HAS_GPU, reason="a GPU is present")
def test_trainer_device_cuda_without_a_gpu_is_refused_even_with_allow_cpu(tmp_path):
    done = run(["worker"], clean_env(tmp_path, ALLOW_CPU="1", TRAINER_DEVICE="cuda"))
    assert done.returncode == 3
    assert "TRAINER_DEVICE=cuda" in done.stderr


@pytest.mark.parametrize("permission", [{"ALLOW_CPU": "1"}, {"ALLOW_CPU": "true"}, {"TRAINER_DEVICE": "cpu"}])
def test_cpu_runs_when_asked(tmp_path, permission):
    resolved = dry_run(["ui"], clean_env(tmp_path, **permission))
    assert resolved["MODE"] == "ui"
    if not HAS_GPU:
        assert resolved["DEVICE"].startswith("gpu=none")


@pytest.mark.skipif(not HAS_GPU, reason="needs a GPU")
def test_a_gpu_is_found_and_named(tmp_path):
    resolved = dry_run(["worker"], clean_env(tmp_path))
    names = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                           text=True, check=True).stdout.split("\n")[0].strip()
    assert resolved["DEVICE"].startswith("gpu=") and names in resolved["DEVICE"]


# --- the face ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("runpod_env", "face"), [
    ({"RUNPOD_WEBHOOK_GET_JOB": "http://127.0.0.1:1/v2/ep/job-take/$ID?gpu=cpu"}, "worker"),
    ({"RUNPOD_ENDPOINT_ID": "abc123"}, "worker"),
    ({"RUNPOD_POD_ID": "pod123"}, "ui"),  # a pod is not serverless: it gets the UI
    ({}, "ui"),
])
@pytest.mark.parametrize("how", ["default", "MODE=auto", "argument"])
def test_auto_picks_the_worker_under_runpod_serverless_and_the_ui_otherwise(tmp_path, runpod_env, face, how):
    env = clean_env(tmp_path, ALLOW_CPU="1", **runpod_env)
    args = ["auto"] if how == "argument" else []
    if how == "MODE=auto":
        env["MODE"] = "auto"
    resolved = dry_run(args, env)
    assert resolved["MODE"] == face
    module = "app" if face == "ui" else "worker"
    assert shlex.split(resolved["EXEC"])[1:4] == ["-P", "-m", module]


def test_the_argument_beats_mode(tmp_path):
    env = clean_env(tmp_path, ALLOW_CPU="1", MODE="worker")
    assert dry_run([], env)["MODE"] == "worker"
    assert dry_run(["ui"], env)["MODE"] == "ui"


def test_an_unknown_mode_is_refused_by_name(tmp_path):
    done = run([], clean_env(tmp_path, ALLOW_CPU="1", MODE="trainer"))
    assert done.returncode == 2
    assert "MODE must be ui, worker or auto, got 'trainer'" in done.stderr


def test_extra_arguments_reach_the_face_unchanged(tmp_path):
    job = json.dumps({"input": {"dataset_url": "https://example.com/a b.zip", "dry_run": True}})
    args = ["--rp_serve_api", "--rp_api_host", "127.0.0.1", "--rp_api_port", "8123", "--test_input", job]
    resolved = dry_run(["worker", *args], clean_env(tmp_path, ALLOW_CPU="1"))
    command = shlex.split(resolved["EXEC"])
    assert command[1:4] == ["-P", "-m", "worker"]
    assert command[4:] == args


# --- paths ---------------------------------------------------------------------------------------------------------


def test_venvs_default_to_the_image_paths_else_the_checkout(tmp_path):
    resolved = dry_run(["ui"], clean_env(tmp_path, ALLOW_CPU="1"))
    expect_app = "/opt/venv" if image_venv("/opt/venv") else str(ROOT / ".venv")
    expect_trainer = "/opt/venv-trainer" if image_venv("/opt/venv-trainer") else str(ROOT / ".venv-trainer")
    assert resolved["APP_VENV"] == expect_app
    assert resolved["TRAINER_VENV"] == expect_trainer
    assert shlex.split(resolved["EXEC"])[0] == f"{expect_app}/bin/python"


def test_venv_paths_can_be_overridden(tmp_path):
    venv = tmp_path / "my-venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    env = clean_env(tmp_path, ALLOW_CPU="1", APP_VENV=str(venv), TRAINER_VENV=str(tmp_path / "no-trainer"),
                    START_DRY_RUN="1")
    done = run(["worker"], env)
    assert done.returncode == 0, done.stderr
    resolved = dict(line.split("=", 1) for line in done.stdout.splitlines())
    assert resolved["APP_VENV"] == str(venv)
    assert shlex.split(resolved["EXEC"])[0] == f"{venv}/bin/python"
    assert resolved["TRAINER_VENV"] == str(tmp_path / "no-trainer")
    assert f"TRAINER_VENV={tmp_path / 'no-trainer'} has no bin/python" in done.stderr


def test_a_missing_app_env_is_refused_by_name(tmp_path):
    done = run(["ui"], clean_env(tmp_path, ALLOW_CPU="1", APP_VENV=str(tmp_path / "nowhere")))
    assert done.returncode == 1
    assert f"APP_VENV={tmp_path / 'nowhere'} has no bin/python" in done.stderr
    assert "make setup" in done.stderr


@pytest.mark.parametrize(("make", "given", "expected"), [
    (["volume", "workspace"], {}, "{volume}/huggingface-cache"),  # the network volume wins
    (["volume"], {}, "{volume}/huggingface-cache"),
    (["workspace"], {}, "{workspace}/huggingface"),
    ([], {}, "{root}/data/huggingface"),  # a checkout without /workspace
    (["volume", "workspace"], {"HF_HOME": "{tmp}/mine"}, "{tmp}/mine"),  # an explicit HF_HOME always wins
])
def test_hf_home_resolution(tmp_path, make, given, expected):
    places = {"volume": tmp_path / "no-volume", "workspace": tmp_path / "no-workspace"}
    for name in make:
        places[name].mkdir()
    names = {"volume": places["volume"], "workspace": places["workspace"], "root": ROOT, "tmp": tmp_path}
    env = clean_env(tmp_path, ALLOW_CPU="1", **{key: value.format(**names) for key, value in given.items()})
    resolved = dry_run(["worker"], env)
    assert resolved["HF_HOME"] == expected.format(**names)
    if not expected.startswith("{root}"):
        assert not Path(resolved["HF_HOME"]).exists(), "a dry run must not create the cache folder"


def test_a_read_only_workspace_is_passed_over(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    workspace = tmp_path / "no-workspace"
    workspace.mkdir(mode=0o555)
    resolved = dry_run(["worker"], clean_env(tmp_path, ALLOW_CPU="1"))
    assert resolved["HF_HOME"] == f"{ROOT}/data/huggingface"


def test_port_becomes_gradio_server_port_for_the_ui(tmp_path):
    assert dry_run(["ui"], clean_env(tmp_path, ALLOW_CPU="1", PORT="7999"))["GRADIO_SERVER_PORT"] == "7999"
    both = clean_env(tmp_path, ALLOW_CPU="1", PORT="7999", GRADIO_SERVER_PORT="7001")
    assert dry_run(["ui"], both)["GRADIO_SERVER_PORT"] == "7001"


# --- the start block (what RunPod's logs show) ------------------------------------------------------------------------

SECRETS = {"HF_TOKEN": "hf_StartShTestToken0123456789abcdef", "BUCKET_SECRET_ACCESS_KEY": "bucket-secret-0123456789",
           "UI_PASSWORD": "ui-password-0123456789"}


def start_block(stderr: str) -> dict[str, str]:
    """The one block of `start.sh:` lines printed at start, as key -> rest of the line; it must be one block."""
    lines = [line.removeprefix("start.sh: ") for line in stderr.splitlines() if line.startswith("start.sh: ")]
    opening = [i for i, line in enumerate(lines) if line.startswith("---- SimpleTuner LoRA trainer")]
    assert len(opening) == 1, stderr
    block = lines[opening[0] + 1:]
    assert "----" in block, stderr
    block = block[:block.index("----")]
    return {line.split("=", 1)[0].split(" ", 1)[0].rstrip(":"): line for line in block}


def installed_version(venv: Path, name: str) -> str:
    if not (venv / "bin" / "python").exists():
        return "absent"  # `make test-fast` runs without the trainer env
    done = subprocess.run([str(venv / "bin" / "python"), "-I", "-c",
                           f"import importlib.metadata as m; print(m.version({name!r}))"],
                          capture_output=True, text=True, timeout=60)
    return done.stdout.strip() if done.returncode == 0 else "absent"


@pytest.mark.parametrize("face", ["worker", "ui"])
def test_the_start_block_says_what_runs_on_what_and_where_the_cache_is(tmp_path, face):
    (tmp_path / "no-volume").mkdir()  # a network volume is mounted there (the mount table says so)
    mounts = tmp_path / "mountinfo"
    mounts.write_text("1 0 0:1 / / rw - overlay overlay rw\n"
                      f"2 1 0:2 / {tmp_path / 'no-volume'} rw - fuse.mfs mfs#h rw\n")
    env = clean_env(tmp_path, ALLOW_CPU="1", START_DRY_RUN="1", DATA_DIR=str(tmp_path / "data"),
                    HF_TOKEN=SECRETS["HF_TOKEN"], UI_PASSWORD=SECRETS["UI_PASSWORD"], MOUNTINFO=str(mounts))
    done = run([face], env)
    assert done.returncode == 0, done.stderr
    block = start_block(done.stderr)
    assert block["face"] == f"face={face} (python -m {'app' if face == 'ui' else 'worker'})"
    if not HAS_GPU:
        assert block["gpu"].startswith("gpu=none (CPU allowed")
    trainer = ROOT / ".venv-trainer"
    versions = block["versions"]
    assert f"runpod={installed_version(APP_VENV, 'runpod')} " in versions
    assert f"gradio={installed_version(APP_VENV, 'gradio')} " in versions
    assert f"simpletuner={installed_version(trainer, 'simpletuner')} " in versions
    assert f"torch={installed_version(trainer, 'torch')} " in versions
    assert f"python={sys.version_info.major}.{sys.version_info.minor}." in versions
    if (trainer / "bin" / "python").exists():
        torch_cuda = subprocess.run([str(trainer / "bin" / "python"), "-I", "-c",
                                     "import torch; print(torch.version.cuda or 'cpu')"],
                                    capture_output=True, text=True, timeout=120, check=True).stdout.strip()
        assert f"torch_cuda={torch_cuda} " in versions
    assert block["hf_home"].startswith(f"hf_home={tmp_path / 'no-volume'}/huggingface-cache (network volume")
    assert " free)" in block["hf_home"]
    assert block["Storage"] == (f"Storage: {tmp_path / 'no-volume'} is a network volume (fuse.mfs, persistent): the "
                                "cache and kept outputs go there")
    assert block["data_dir"].startswith(f"data_dir={tmp_path / 'data'} ")
    secrets = block["secrets"]
    assert "HF_TOKEN set" in secrets and "BUCKET_SECRET_ACCESS_KEY not set" in secrets
    assert ("UI_PASSWORD set" in secrets) == (face == "ui")
    if face == "ui":
        assert block["ui"] == "ui=http://127.0.0.1:7860"
    for value in SECRETS.values():
        assert value not in done.stdout + done.stderr


def test_the_start_block_says_when_the_cache_is_lost_with_the_container(tmp_path):
    env = clean_env(tmp_path, ALLOW_CPU="1", START_DRY_RUN="1", HF_HOME=str(tmp_path / "cache"),
                    IMAGE_VERSION="v1.2.3")
    stderr = run(["worker"], env).stderr
    block = start_block(stderr)
    assert block["hf_home"].startswith(f"hf_home={tmp_path / 'cache'} (no volume: base models are downloaded again")
    assert "start.sh: ---- SimpleTuner LoRA trainer v1.2.3 ----" in stderr.splitlines()


def test_a_bare_volume_folder_is_no_network_volume_in_the_start_block(tmp_path):
    """RunPod makes /runpod-volume for its model cache even without a network volume: the cache is read there, but
    the block says nothing there outlives the worker."""
    (tmp_path / "no-volume").mkdir()
    mounts = tmp_path / "mountinfo"
    mounts.write_text("1 0 0:1 / / rw - overlay overlay rw\n")
    block = start_block(run(["worker"], clean_env(tmp_path, ALLOW_CPU="1", START_DRY_RUN="1",
                                                  MOUNTINFO=str(mounts))).stderr)
    assert block["hf_home"].startswith(f"hf_home={tmp_path / 'no-volume'}/huggingface-cache (RunPod's model cache "
                                       "folder, no network volume")
    assert block["Storage"] == (f"Storage: no network volume: {tmp_path / 'no-volume'} is a folder of the "
                                "container's disk, not a network volume; outputs not published are lost when the pod "
                                "or worker stops")


def test_the_start_block_works_without_the_envs_installed(tmp_path):
    """A broken image still says what it is: absent packages read 'absent', and nothing fails."""
    venv = tmp_path / "bare-venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    env = clean_env(tmp_path, ALLOW_CPU="1", START_DRY_RUN="1", APP_VENV=str(venv),
                    TRAINER_VENV=str(tmp_path / "no-trainer"))
    done = run(["worker"], env)
    assert done.returncode == 0, done.stderr
    assert start_block(done.stderr)["versions"] == (
        "versions: simpletuner=absent torch=absent torch_cuda=absent runpod=absent gradio=absent python=absent")


# --- health ----------------------------------------------------------------------------------------------------------


def test_health_passes_for_a_worker_which_has_no_port(tmp_path):
    (tmp_path / "face").write_text("worker\n")
    done = run(["health"], clean_env(tmp_path, GRADIO_SERVER_PORT=str(free_port())))
    assert done.returncode == 0, done.stderr


def test_health_fails_when_the_ui_does_not_answer(tmp_path):
    (tmp_path / "face").write_text("ui\n")
    port = free_port()
    done = run(["health"], clean_env(tmp_path, GRADIO_SERVER_PORT=str(port)))
    assert done.returncode == 1
    assert f"http://127.0.0.1:{port}/" in done.stderr


def test_health_without_a_record_follows_the_environment(tmp_path):
    port = str(free_port())
    assert run(["health"], clean_env(tmp_path, RUNPOD_ENDPOINT_ID="ep", GRADIO_SERVER_PORT=port)).returncode == 0
    assert run(["health"], clean_env(tmp_path, GRADIO_SERVER_PORT=port)).returncode == 1


# --- the faces, started for real -------------------------------------------------------------------------------------


def make_dataset(folder: Path) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    for index, colour in enumerate(["red", "green", "blue", "yellow"]):
        Image.new("RGB", (128, 128), colour).save(folder / f"img{index}.png")
        (folder / f"img{index}.txt").write_text(f"a {colour} square")


@pytest.mark.skipif(not (ROOT / "worker" / "__main__.py").exists(), reason="the worker face (worker/) is not here yet")
def test_worker_runs_a_dry_run_job_from_runpods_test_input(tmp_path):
    datasets = tmp_path / "datasets"
    make_dataset(datasets / "squares")
    job = {"input": {
        "dataset": {"path": str(datasets / "squares")},
        "config": {"model_family": "sdxl", "pretrained_model_name_or_path": "stabilityai/stable-diffusion-xl-base-1.0",
                   "resolution": 128, "max_train_steps": 2},
        "trigger_word": "sqr",
        "dry_run": True,
    }}
    env = clean_env(tmp_path, ALLOW_CPU="1", DATASET_ROOT=str(datasets), DATA_DIR=str(tmp_path / "data"),
                    HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", RUNPOD_SKIP_GPU_CHECK="true",
                    RUNPOD_SKIP_AUTO_SYSTEM_CHECKS="true")
    started = time.monotonic()
    done = run(["worker", "--rp_log_level", "INFO", "--test_input", json.dumps(job)], env, timeout=180, cwd=tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "completed successfully" in output, output[-4000:]
    assert "preflight" in output, "a dry run returns the preflight report"
    assert "face=worker" in done.stderr
    print(f"worker dry run through start.sh: {time.monotonic() - started:.1f} s")


def test_auto_mode_under_runpod_starts_the_worker_loop_which_takes_and_answers_a_job(tmp_path):
    """What a serverless endpoint does with the image: start.sh with no argument, RunPod's variables set."""
    from tests.support.runpod_fake import running_runpod_fake

    with running_runpod_fake() as fake:
        env = clean_env(tmp_path, ALLOW_CPU="1", DATA_DIR=str(tmp_path / "data"), HF_HOME=str(tmp_path / "hf"),
                        **fake.env)
        job_id = fake.queue({"dataset": {"path": "demo"}, "trigger_word": "sks", "dry_run": True,
                             "config": {"model_name": "stabilityai/stable-diffusion-xl-base-1.0"}})
        process = subprocess.Popen([str(START_SH)], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            result = fake.wait_for_result(job_id, timeout_s=120)
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            output = process.communicate(timeout=30)[0].decode(errors="replace")
    assert "face=worker" in output, output[-3000:]
    assert output.count("---- SimpleTuner LoRA trainer") == 1, "one start block, printed once"
    assert result["output"]["status"] == "dry_run", result
    assert result["output"]["preflight"]["images_usable"] == 8


@pytest.mark.skipif(not (ROOT / "app" / "__main__.py").exists(), reason="the UI face (app/) is not here yet")
def test_ui_answers_on_its_port_runs_as_the_started_process_and_stops_on_sigterm(tmp_path):
    port = free_port()
    env = clean_env(tmp_path, ALLOW_CPU="1", PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1",
                    DATA_DIR=str(tmp_path / "data"), HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    log = (tmp_path / "ui.log").open("w+")
    started = time.monotonic()
    process = subprocess.Popen([str(START_SH), "ui"], env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True, cwd=tmp_path)
    try:
        status, deadline = None, started + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    status = response.status
                    break
            except OSError:
                time.sleep(0.5)
        log.seek(0)
        assert status == 200, f"the UI did not answer on {port} within 60 s:\n{log.read()[-4000:]}"
        print(f"UI answered through start.sh in {time.monotonic() - started:.1f} s")
        # exec: the process we started is now Python running the app, not a shell waiting for it.
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
        assert [b"-P", b"-m", b"app"] == cmdline[1:4], cmdline
        assert (tmp_path / "face").read_text().strip() == "ui"
        assert run(["health"], env).returncode == 0
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) is not None
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        log.close()
