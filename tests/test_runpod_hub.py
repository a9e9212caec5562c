"""The RunPod Hub files (.runpod/): hub.json and tests.json against the schema RunPod's Hub publishing guide
(https://docs.runpod.io/hub/publishing-guide) documents, so that a bad edit fails `make test` instead of the Hub's build
after a release; the project's own rules on top of it; and .runpod/handler.py really answering the Hub's test
requests under runpod's local API. The schema itself, with its sources, is tests/support/runpod_hub_schema.py;
docs/runpod-hub.md explains the files and the choices made in them.
"""

from __future__ import annotations

import ast
import copy
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from core.endpoint import job_defaults
from core.generation.demo import write_demo_dataset
from core.settings import Settings
from tests.support.announced import UVICORN, announced_url
from tests.support.http_server import serve_files
from tests.support.processes import stop_process_group
from tests.support.runpod_hub_schema import GPU_POOLS, hub_problems, suite_problems

ROOT = Path(__file__).resolve().parent.parent
RUNPOD_DIR = ROOT / ".runpod"
HUB_JSON = RUNPOD_DIR / "hub.json"
TESTS_JSON = RUNPOD_DIR / "tests.json"
HANDLER = RUNPOD_DIR / "handler.py"


def load(path: Path) -> Any:
    return json.loads(path.read_text())


# -- the checked-in files pass -----------------------------------------------------------------------------------


def test_hub_json_follows_the_guide():
    assert hub_problems(load(HUB_JSON)) == []


def test_tests_json_follows_the_guide():
    assert suite_problems(load(TESTS_JSON)) == []


def test_the_hub_finds_the_files_it_asks_for():
    """The guide: hub.json and tests.json in .runpod/; handler.py, Dockerfile and README.md in .runpod/ or the root
    (.runpod/ wins). The image is the root Dockerfile: a .runpod/Dockerfile would silently replace it on the Hub."""
    for name in ("hub.json", "tests.json", "handler.py"):
        assert (RUNPOD_DIR / name).is_file(), f".runpod/{name} is missing"
    assert (ROOT / "Dockerfile").is_file() and (ROOT / "README.md").is_file()
    assert not (RUNPOD_DIR / "Dockerfile").exists() and not (RUNPOD_DIR / "README.md").exists()


# -- a bad edit is caught, by field ---------------------------------------------------------------------------------


def _set(path: str, value: Any) -> Callable[[dict], None]:
    """A mutation: sets (or, for value ..., deletes) the dotted/indexed path in a copy of the file."""
    parts = [int(part) if part.isdigit() else part for part in re.split(r"\.|\[|\]\.?", path) if part != ""]

    def mutate(doc: dict) -> None:
        target = doc
        for part in parts[:-1]:
            target = target[part]
        if value is ...:
            del target[parts[-1]]
        else:
            target[parts[-1]] = value

    return mutate


def _env_index(key: str) -> int:
    return next(i for i, entry in enumerate(load(HUB_JSON)["config"]["env"]) if entry["key"] == key)


HUB_EDITS = {
    "no category": (_set("category", ...), "category"),
    "a category the Hub lacks": (_set("category", "images"), "category"),
    "type misspelt": (_set("type", "Serverless"), "type"),
    "a top-level typo": (_set("presets", []), "presets"),
    "disk as text": (_set("config.containerDiskInGb", "100"), "config.containerDiskInGb"),
    "no GPU count on a GPU listing": (_set("config.gpuCount", ...), "config.gpuCount"),
    "a GPU pool that does not exist": (_set("config.gpuIds", "ADA_24,RTX4090"), "config.gpuIds"),
    "CUDA as one string": (_set("config.allowedCudaVersions", "13.0"), "config.allowedCudaVersions"),
    "a CUDA version RunPod lacks": (_set("config.allowedCudaVersions", ["13"]), "config.allowedCudaVersions[0]"),
    "an env entry with value and input": (
        _set(f"config.env[{_env_index('MODE')}].input", {"name": "m", "type": "string", "description": "d"}),
        f"config.env[{_env_index('MODE')}]"),
    "an input type the Hub lacks": (
        _set(f"config.env[{_env_index('HF_TOKEN')}].input.type", "secret"),
        f"config.env[{_env_index('HF_TOKEN')}].input.type"),
    "a number default above its max": (
        _set(f"config.env[{_env_index('JOB_DEFAULT_LORA_RANK')}].input.default", 512),
        f"config.env[{_env_index('JOB_DEFAULT_LORA_RANK')}].input.default"),
    "a number input with options": (
        _set(f"config.env[{_env_index('JOB_DEFAULT_LORA_RANK')}].input.options", [{"label": "a", "value": "1"}]),
        f"config.env[{_env_index('JOB_DEFAULT_LORA_RANK')}].input.options"),
    "a preset of a variable that is not there": (
        _set("config.presets[0].defaults.JOB_DEFAULT_MODLE", "x/y"), "config.presets[0].defaults.JOB_DEFAULT_MODLE"),
    "a preset number written as text": (
        _set("config.presets[0].defaults.JOB_DEFAULT_RESOLUTION", "1024"),
        "config.presets[0].defaults.JOB_DEFAULT_RESOLUTION"),
    "a preset without a name": (_set("config.presets[1].name", ...), "config.presets[1].name"),
}


@pytest.mark.parametrize("edit", sorted(HUB_EDITS))
def test_a_bad_hub_json_edit_is_named_by_field(edit):
    mutate, field = HUB_EDITS[edit]
    hub = copy.deepcopy(load(HUB_JSON))
    mutate(hub)
    problems = hub_problems(hub)
    assert any(problem.startswith(f"{field}:") or problem.startswith(f"{field}.") for problem in problems), problems


TESTS_EDITS = {
    "no tests": (_set("tests", []), "tests"),
    "a test without input": (_set("tests[0].input", ...), "tests[0].input"),
    "a timeout in seconds as a float": (_set("tests[0].timeout", 300.0), "tests[0].timeout"),
    "two tests of one name": (_set("tests[1].name", load(TESTS_JSON)["tests"][0]["name"]), "tests[1].name"),
    "a GPU type by its display name": (_set("config.gpuTypeId", "RTX 4090"), "config.gpuTypeId"),
    "an env entry with an input": (
        _set("config.env[0].input", {"name": "m", "type": "string", "description": "d"}), "config.env[0]"),
    "a misspelt config key": (_set("config.allowedCudaVersion", ["13.0"]), "config.allowedCudaVersion"),
}


@pytest.mark.parametrize("edit", sorted(TESTS_EDITS))
def test_a_bad_tests_json_edit_is_named_by_field(edit):
    mutate, field = TESTS_EDITS[edit]
    tests = copy.deepcopy(load(TESTS_JSON))
    mutate(tests)
    problems = suite_problems(tests)
    assert any(problem.startswith(f"{field}:") or problem.startswith(f"{field}.") for problem in problems), problems


# -- the project's own rules on top of the guide ------------------------------------------------------------------


def image_cuda() -> str:
    """major.minor of the Dockerfile's CUDA base image (the default build)."""
    match = re.search(r"^FROM nvidia/cuda:(\d+\.\d+)\.\d+-", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert match, "the Dockerfile's FROM is not an nvidia/cuda image"
    return match.group(1)


def _version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


def test_cuda_versions_allowed_are_the_images_or_newer():
    """RunPod matches a host's CUDA exactly against the list: the image's own version must be in it, and an older one
    would place jobs on hosts whose driver cannot run the image's torch."""
    hub_versions = load(HUB_JSON)["config"]["allowedCudaVersions"]
    assert image_cuda() in hub_versions
    assert all(_version(v) >= _version(image_cuda()) for v in hub_versions), hub_versions
    tests_versions = load(TESTS_JSON)["config"].get("allowedCudaVersions", hub_versions)
    assert set(tests_versions) <= set(hub_versions), "the Hub's tests would run on hosts the endpoint never gets"


def test_the_hubs_test_gpu_is_one_the_listing_runs_on():
    hub, tests = load(HUB_JSON)["config"], load(TESTS_JSON)["config"]
    pools = [item.strip() for item in hub["gpuIds"].split(",")]
    allowed = set().union(*(GPU_POOLS.get(item, {item}) for item in pools if not item.startswith("-")))
    allowed -= {item[1:] for item in pools if item.startswith("-")}
    assert tests["gpuTypeId"] in allowed
    assert tests["gpuCount"] == hub["gpuCount"]


def test_every_hub_test_is_a_dry_run_with_a_timeout_in_milliseconds():
    """The Hub's tests must pass without a token or a GPU minute of training: dry runs. A timeout under 10 s is a
    number of seconds written where milliseconds belong (the image's cold start alone takes longer)."""
    for case in load(TESTS_JSON)["tests"]:
        assert case["input"].get("dry_run") is True, case["name"]
        assert case.get("timeout", 0) >= 10_000, case["name"]


def test_every_variable_the_listing_sets_is_one_the_project_reads():
    code = [path for folder in ("core", "worker", "app") for path in (ROOT / folder).rglob("*.py")]
    sources = " ".join(path.read_text() for path in code)
    sources += (ROOT / "start.sh").read_text()
    keys = [entry["key"] for entry in load(HUB_JSON)["config"]["env"]]
    keys += [entry["key"] for entry in load(TESTS_JSON)["config"].get("env", [])]
    for key in keys:
        assert re.search(rf"\b{key}\b", sources), f"{key} is set by the Hub files but read nowhere in the project"


SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|API_KEY|ACCESS_KEY", re.IGNORECASE)


def test_secrets_are_inputs_left_empty():
    env = load(HUB_JSON)["config"]["env"] + load(TESTS_JSON)["config"].get("env", [])
    secret = [entry for entry in env if SECRET_NAME.search(entry["key"])]
    assert {entry["key"] for entry in secret} >= {"HF_TOKEN", "BUCKET_SECRET_ACCESS_KEY"}
    for entry in secret:
        assert "value" not in entry, f"{entry['key']}: a secret must not be a fixed value in a public listing"
        assert entry["input"].get("default", "") == "", f"{entry['key']}: a secret's default must be empty"


def test_mode_is_the_worker_as_start_sh_spells_it():
    static = {entry["key"]: entry["value"] for entry in load(HUB_JSON)["config"]["env"] if "value" in entry}
    assert static.get("MODE") == "worker"
    assert re.search(r"\bui \| worker\)", (ROOT / "start.sh").read_text()), "start.sh no longer takes MODE=worker"


@pytest.mark.parametrize("index", range(len(load(HUB_JSON)["config"]["presets"])))
def test_each_preset_is_accepted_by_the_worker(index):
    """RunPod sets a preset's values as environment variables (text); the worker reads them as job defaults."""
    preset = load(HUB_JSON)["config"]["presets"][index]
    env = {key: json.dumps(value) if not isinstance(value, str) else value for key, value in preset["defaults"].items()}
    defaults = job_defaults(Settings.from_env(env))
    assert defaults["pretrained_model_name_or_path"] == preset["defaults"]["JOB_DEFAULT_MODEL"]
    assert len(defaults) == len(preset["defaults"])


# -- .runpod/handler.py: thin, and the real worker behind it ------------------------------------------------------


def test_handler_is_only_a_way_into_the_worker():
    """No second copy of the job logic: the file imports worker's main and calls it, nothing more."""
    tree = ast.parse(HANDLER.read_text())
    defined = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef
                                                                | ast.ClassDef)]
    assert defined == []
    imported = {(node.module, alias.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                for alias in node.names}
    assert ("worker.__main__", "main") in imported
    assert len(HANDLER.read_text().splitlines()) < 40


@pytest.fixture(scope="module")
def hub_worker(tmp_path_factory):
    """`.runpod/handler.py --rp_serve_api` on 127.0.0.1, started from another folder, with the environment the Hub's
    tests get (tests.json config.env) and no token; any Hub call would go to a closed loopback port."""
    area = tmp_path_factory.mktemp("hub-worker")
    served = area / "served"
    served.mkdir()
    demo = write_demo_dataset(area / "seed", count=6, size=512)
    with zipfile.ZipFile(served / "seed.zip", "w") as archive:
        for path in sorted(demo.iterdir()):
            archive.write(path, f"seed/{path.name}")
    env = {key: value for key, value in os.environ.items()
           if key not in ("HF_TOKEN", "DATASET_ROOT", "MODE") and not key.startswith(("RUNPOD_", "BUCKET_"))}
    env.update({entry["key"]: str(entry["value"]) for entry in load(TESTS_JSON)["config"].get("env", [])})
    env.update({"DATA_DIR": str(area / "data"), "HF_HOME": str(area / "hf-home"), "HF_HUB_OFFLINE": "1",
                "HF_ENDPOINT": "http://127.0.0.1:9", "ALLOW_PRIVATE_URLS": "1", "TRAINER_DEVICE": "cpu",
                "PYTHONUNBUFFERED": "1"})
    log = area / "worker.log"
    with serve_files(served) as files, log.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, str(HANDLER), "--rp_serve_api", "--rp_api_host", "127.0.0.1", "--rp_api_port", "0"],
            cwd=area, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            # Port 0: uvicorn binds a port the OS picks and logs it.
            base = announced_url(process, log, UVICORN, timeout_s=60, name="the worker's API")
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, log.read_text()[-3000:]
                try:
                    if requests.get(f"{base}/docs", timeout=2).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass  # not listening yet
                assert time.monotonic() < deadline, f"the handler's API did not come up:\n{log.read_text()[-3000:]}"
                time.sleep(0.2)
            yield {"base": base, "files": files, "area": area, "log": log}
        finally:
            stop_process_group(process, grace_s=15)


def runsync(worker: dict, job_input: dict, *, timeout_s: float) -> tuple[dict, float]:
    started = time.monotonic()
    response = requests.post(f"{worker['base']}/runsync", json={"input": job_input}, timeout=timeout_s)
    assert response.status_code == 200, response.text  # the Hub counts a test as passed on a 200
    return response.json(), time.monotonic() - started


def assert_dry_run(answer: dict) -> dict:
    assert answer["status"] == "COMPLETED", answer
    output = answer["output"]
    assert output["status"] == "dry_run", output
    assert output["preflight"]["images_usable"] > 0 and output["preflight"]["errors"] == []
    return output


def test_the_seed_request_in_test_input_json_is_answered_as_a_dry_run(hub_worker):
    job_input = load(ROOT / "test_input.json")["input"]
    assert job_input.get("dry_run") is True, "test_input.json is the seed request as a dry run"
    output = assert_dry_run(runsync(hub_worker, job_input, timeout_s=120)[0])
    config = output["trainer_files"]["config.json"]
    assert config["--pretrained_model_name_or_path"] == job_input["config"]["model_name"]
    assert config["--learning_rate"] == job_input["config"]["learning_rate"]


def test_the_seed_request_with_a_dataset_url_is_answered_as_a_dry_run(hub_worker):
    job_input = {**load(ROOT / "test_input.json")["input"], "dataset_url": hub_worker["files"].url("seed.zip")}
    job_input.pop("dataset", None)
    output = assert_dry_run(runsync(hub_worker, job_input, timeout_s=120)[0])
    assert output["preflight"]["images_usable"] == 6


@pytest.mark.parametrize("name", [case["name"] for case in load(TESTS_JSON)["tests"]])
def test_each_hub_test_passes_within_its_timeout(hub_worker, name):
    case = next(case for case in load(TESTS_JSON)["tests"] if case["name"] == name)
    answer, elapsed = runsync(hub_worker, case["input"], timeout_s=case["timeout"] / 1000)
    assert_dry_run(answer)
    assert elapsed * 1000 < case["timeout"]
    hf_home = hub_worker["area"] / "hf-home"
    assert not hf_home.exists() or not any(path.is_file() for path in hf_home.rglob("*")), "a dry run downloaded"


def test_a_bad_request_is_named_by_field_as_python_m_worker_does(hub_worker):
    answer, _ = runsync(hub_worker, {"dataset": {"path": "demo"}, "config": {"lerning_rate": 1e-4}}, timeout_s=60)
    assert answer["status"] == "FAILED", answer
    error = json.loads(answer["error"])  # runpod's local API carries the error payload as JSON text
    assert error["code"] == "invalid_input" and error["field"] == "config.lerning_rate"
    assert "learning_rate" in error["message"]


# -- the README's deploy section agrees with the image ------------------------------------------------------------


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"^### {re.escape(title)}\n(.*?)(?=^##)", text, re.MULTILINE | re.DOTALL)
    assert match, f"README.md has no '### {title}' section"
    return match.group(1)


def test_the_readme_deploy_section_has_the_hub_badge_and_a_pod_template_that_fits_the_image():
    section = readme_section("Deploy on RunPod")
    badge = re.search(r"\[!\[Runpod\]\(https://api\.runpod\.io/badge/([\w.-]+/[\w.-]+)\)\]"
                      r"\(https://console\.runpod\.io/hub/([\w.-]+/[\w.-]+)\)", section)
    assert badge and badge.group(1) == badge.group(2)
    template = re.search(r"```text\n(.*?)```", section, re.DOTALL).group(1)
    fields = dict(re.findall(r"^([A-Z][\w ]+?):\s+(.*)$", template, re.MULTILINE))
    assert fields["Container image"].startswith(f"ghcr.io/{badge.group(1)}:latest")
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"EXPOSE {fields['Expose HTTP ports']}" in dockerfile
    assert "DATA_DIR=/workspace/data" in dockerfile and fields["Volume mount path"] == "/workspace"
    env = dict(re.findall(r"^\s+([A-Z_]+)\s+=\s+(.*)$", template, re.MULTILINE))
    assert env["MODE"] == "ui"
    for key in ("HF_TOKEN", "UI_PASSWORD"):
        assert re.fullmatch(r"\{\{ RUNPOD_SECRET_\w+ \}\}", env[key]), f"{key} must come from a RunPod secret"


def test_the_readme_says_which_hosts_and_why_no_cuda_12_8_build():
    hosts = readme_section("Hosts: CUDA 13.0 only")
    assert "driver 580 or newer" in hosts and f'"{image_cuda()}"' in hosts
    assert "No CUDA 12.8 build" in hosts
