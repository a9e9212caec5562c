"""bench/gpu_check.py's plan, on a machine without a GPU, and tools/gpu_wheels.py's folder: under 60 MB, and with
it a Python that has only a PyTorch machine's packages imports SimpleTuner's trainer and the project's CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECK = ROOT / "bench" / "gpu_check.py"
WHEELS_TOOL = ROOT / "tools" / "gpu_wheels.py"
TRAINER_VENV = ROOT / ".venv-trainer"
sys.path.insert(0, str(ROOT / "tools"))

import gpu_wheels  # noqa: E402


def dry_run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CHECK), "--dry-run", "--out", str(tmp_path / "out"), *args],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False)


def planned(stdout: str) -> dict[str, tuple[str, dict]]:
    """run name -> (what the line says before the settings, the settings)."""
    runs = {}
    for line in stdout.splitlines():
        if line.startswith("- "):
            head, _, settings = line[2:].partition(": {")
            name, _, said = head.partition(": ")
            runs[name] = (said, json.loads("{" + settings))
    return runs


def test_the_dry_run_lists_every_run_with_its_settings_and_timeout_without_a_gpu(tmp_path):
    done = dry_run(tmp_path, "--run-timeout", "123", "--families", "sdxl,flux,wan")
    assert done.returncode == 0, done.stderr
    runs = planned(done.stdout)
    bnb = "nf4-bnb included" in done.stdout
    assert list(runs) == ["sdxl-bf16", "flux-bf16", "wan-bf16", "sdxl-int8-quanto", "sdxl-int8-torchao",
                          *(["sdxl-nf4-bnb"] if bnb else []), "sdxl-previews-captions", "sdxl-all-gpus-mixed-aspect",
                          "sdxl-reuse-first", "sdxl-reuse-second"]
    assert all(said.endswith("timeout 123 s") for said, _ in runs.values())
    for name in ("sdxl-bf16", "flux-bf16", "wan-bf16"):  # the CUDA recipe
        config = runs[name][1]["config"]
        assert config["mixed_precision"] == "bf16" and config["optimizer"] == "adamw_bf16", name
        assert "base_model_precision" not in config
    assert runs["flux-bf16"][1]["config"]["model_flavour"] == "dev"
    assert runs["sdxl-int8-torchao"][1]["config"]["base_model_precision"] == "int8-torchao"
    previews = runs["sdxl-previews-captions"][1]
    assert previews["captioning"]["mode"] == "all" and previews["samples"]["every"] == 2
    assert previews["config"]["max_train_steps"] == 3  # step 2 by SimpleTuner, step 3 by the generate tool
    assert runs["sdxl-all-gpus-mixed-aspect"][0].startswith("all GPUs (with 2 or more), mixed dataset")
    assert runs["sdxl-reuse-second"][1]["config"]["learning_rate"] == 3e-4
    assert "no CUDA device here" in done.stdout
    assert not (tmp_path / "out").exists(), "a dry run writes nothing"


def test_the_plan_can_be_split_and_bad_arguments_are_named(tmp_path):
    only = dry_run(tmp_path, "--only", "sdxl-int8-quanto,sdxl-bf16", "--no-reuse")
    assert only.returncode == 0 and list(planned(only.stdout)) == ["sdxl-bf16", "sdxl-int8-quanto"]
    for args, named in ((["--families", "sdxl,dalle"], "--families: no tiny model for dalle"),
                        (["--only", "everything"], "--only: no run named everything"),
                        (["--run-timeout", "0"], "--run-timeout")):
        done = dry_run(tmp_path, *args)
        assert done.returncode == 2 and named in done.stderr, (args, done.stderr)


def test_without_a_gpu_the_check_says_so_and_exits_2(tmp_path):
    if subprocess.run(["sh", "-c", "nvidia-smi -L"], capture_output=True, check=False).returncode == 0:
        pytest.skip("this machine has a GPU")
    done = subprocess.run([sys.executable, str(CHECK), "--out", str(tmp_path / "out"), "--only", "sdxl-bf16"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and "no CUDA device" in done.stderr


# -- the wheels ----------------------------------------------------------------------------------------------------


def machine_site(folder: Path, site: Path) -> Path:
    """A PyTorch machine's packages (gpu_wheels.MACHINE_HAS and what they require), as links into the trainer env's
    site-packages; requests and urllib3 from this env, where they are as new as a machine's (the trainer env pins
    urllib3 1.26)."""
    from packaging.requirements import Requirement

    found = gpu_wheels.installed(site)
    own = gpu_wheels.installed(Path(next(p for p in sys.path if p.endswith("site-packages"))))
    names, todo = set(), [gpu_wheels.normalized(name) for name in gpu_wheels.MACHINE_HAS]
    while todo:
        name = todo.pop()
        if name in names or name not in found:
            continue
        names.add(name)
        metadata = (found[name].dist_info / "METADATA").read_text(errors="replace")
        for line in re.findall(r"^Requires-Dist:\s*(.+)$", metadata, re.MULTILINE):
            requirement = Requirement(line)
            if not requirement.marker or requirement.marker.evaluate({"extra": ""}):
                todo.append(gpu_wheels.normalized(requirement.name))
    names -= {gpu_wheels.normalized(name) for name in gpu_wheels.WHEELS}  # what the machine lacks, as stated
    folder.mkdir()
    for name in sorted(names):
        dist = own[name] if name in ("requests", "urllib3") and name in own else found[name]
        for top in {path.split("/")[0] for path in dist.files()} | {dist.dist_info.name}:
            if (dist.site / top).exists() and not (folder / top).exists():
                (folder / top).symlink_to(dist.site / top)
    return folder


@pytest.mark.trainer_env
def test_the_wheels_are_under_60_mb_and_import_the_trainer_and_the_cli_on_a_torch_machine(tmp_path):
    if not (TRAINER_VENV / "bin" / "python").exists():
        pytest.skip("needs the trainer env (make setup) to pack the wheels from")
    wheels = tmp_path / "wheels"
    done = subprocess.run([sys.executable, str(WHEELS_TOOL), str(wheels)], capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    total = sum(path.stat().st_size for path in wheels.glob("*.whl"))
    assert 10e6 < total < 60e6 and f"{total / 1e6:7.2f} MB  total" in done.stdout
    assert len(list(wheels.glob("*.whl"))) == len(gpu_wheels.WHEELS)

    # As on the CUDA machine: pip installs them into a folder, offline, without dependencies.
    target = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                                "--target", str(target), *map(str, sorted(wheels.glob("*.whl")))],
                               capture_output=True, text=True, timeout=300, check=False)
    assert installed.returncode == 0, installed.stderr
    # A Python with nothing installed (a venv of the trainer env's base interpreter) + the machine's packages.
    base = re.search(r"^home\s*=\s*(.+)$", (TRAINER_VENV / "pyvenv.cfg").read_text(), re.MULTILINE)
    assert base is not None
    bare = tmp_path / "bare"
    subprocess.run([str(Path(base.group(1).strip()) / "python3"), "-m", "venv", "--without-pip", str(bare)],
                   check=True, timeout=120)
    machine = machine_site(tmp_path / "machine", gpu_wheels.site_packages(TRAINER_VENV))
    probe = ("import simpletuner.helpers.training.trainer, optimum.quanto, torchao, diffusers, core.__main__, "
             "core.pipeline; print('imported')")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(target), str(machine), str(ROOT)])}
    imported = subprocess.run([str(bare / "bin" / "python"), "-c", probe], capture_output=True, text=True,
                              timeout=600, env=env, cwd=tmp_path, check=False)
    assert imported.returncode == 0 and "imported" in imported.stdout, imported.stderr[-3000:]


def test_a_run_past_its_timeout_is_stopped_and_its_log_and_json_are_kept(tmp_path, tiny_model, demo_dataset):
    """The per-run timeout on a real run (on the CPU here): the CLI and the trainer it started are stopped, the
    run fails naming its timeout, and its log and the JSON so far stay in --out."""
    sys.path.insert(0, str(ROOT / "bench"))
    import gpu_check

    run = gpu_check.plan(["sdxl"], steps=2, resolution=128, gpu_count=1, bnb=False, reuse=False, timeout_s=20)[0]
    env = {**os.environ, "TRAINER_DEVICE": "cpu", "DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1"}
    started = time.monotonic()
    gpu_check.execute(run, gpus=[], model=tiny_model, dataset=demo_dataset, folder=tmp_path / "out" / run.name,
                      env=env)
    assert time.monotonic() - started < 60
    assert run.passed is False and run.error == "stopped at its timeout (20 s)"
    log = Path(run.log)
    assert log.parent == tmp_path / "out" and "[loading] starting SimpleTuner" in log.read_text()  # it was training
    gpu_check.save([run], tmp_path / "out" / gpu_check.RESULT_FILE)
    saved = json.loads((tmp_path / "out" / gpu_check.RESULT_FILE).read_text())
    assert saved[0]["name"] == "sdxl-bf16" and saved[0]["error"] == run.error and saved[0]["log"] == str(log)
    left = subprocess.run(["pgrep", "-f", str(tmp_path / "out")], capture_output=True, text=True, check=False)
    assert left.stdout.strip() == "", "the run's processes are all stopped"
