"""hub.json and tests.json, checked against the schema RunPod's Hub publishing guide documents.

Written from RunPod's documentation (tests/test_runpod_hub.py applies it to the files in .runpod/):
- Hub publishing guide (hub.json and tests.json reference): https://docs.runpod.io/hub/publishing-guide
- GPU types and GPU pools (the values of gpuIds and gpuTypeId): https://docs.runpod.io/references/gpu-types
- allowedCudaVersions values: the enum of PodCreateInput.allowedCudaVersions in RunPod's REST API reference,
  https://docs.runpod.io/api-reference (the Hub passes the list on to the endpoint it creates).
Each problem is one string that starts with the field it concerns (`config.env[3].input.default: ...`).
"""

from __future__ import annotations

import re
from typing import Any

# -- what the guide documents -----------------------------------------------------------------------------------

CATEGORIES = {"audio", "embedding", "language", "video", "image"}
INPUT_TYPES = {"string", "number", "boolean", "huggingface"}
# GPU pools (the guide: gpuIds is "comma-separated pool IDs with optional GPU ID negations"), with their GPU IDs.
GPU_POOLS = {
    "AMPERE_16": {"NVIDIA RTX A4000", "NVIDIA RTX A4500", "NVIDIA RTX 4000 Ada Generation",
                  "NVIDIA RTX 2000 Ada Generation"},
    "AMPERE_24": {"NVIDIA L4", "NVIDIA RTX A5000", "NVIDIA GeForce RTX 3090"},
    "ADA_24": {"NVIDIA GeForce RTX 4090"},
    "AMPERE_48": {"NVIDIA RTX A6000", "NVIDIA A40"},
    "ADA_48_PRO": {"NVIDIA L40", "NVIDIA L40S", "NVIDIA RTX 6000 Ada Generation"},
    "AMPERE_80": {"NVIDIA A100 80GB PCIe", "NVIDIA A100-SXM4-80GB"},
    "ADA_80_PRO": {"NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe"},
    "HOPPER_141": {"NVIDIA H200"},
}
GPU_IDS = set().union(*GPU_POOLS.values()) | {
    "NVIDIA A30", "NVIDIA B200", "NVIDIA B300 SXM6 AC", "NVIDIA GeForce RTX 3070", "NVIDIA GeForce RTX 3080",
    "NVIDIA GeForce RTX 3080 Ti", "NVIDIA GeForce RTX 3090 Ti", "NVIDIA GeForce RTX 4070 Ti", "NVIDIA GeForce RTX 4080",
    "NVIDIA GeForce RTX 4080 SUPER", "NVIDIA GeForce RTX 5080", "NVIDIA GeForce RTX 5090", "NVIDIA H100 NVL",
    "NVIDIA H200 NVL", "NVIDIA RTX 4000 SFF Ada Generation", "NVIDIA RTX 5000 Ada Generation", "NVIDIA RTX A2000",
    "NVIDIA RTX PRO 4500 Blackwell", "NVIDIA RTX PRO 6000 Blackwell Server Edition",
    "NVIDIA RTX PRO 6000 Blackwell Workstation Edition", "NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition",
    "Tesla V100-PCIE-16GB", "Tesla V100-SXM2-16GB", "Tesla V100-SXM2-32GB",
}
CUDA_VERSIONS = ["11.8", "12.0", "12.1", "12.2", "12.3", "12.4", "12.5", "12.6", "12.7", "12.8", "12.9", "13.0"]
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

Problems = list[str]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _keys(problems: Problems, where: str, obj: Any, *, required: set[str], optional: set[str] = frozenset()) -> bool:
    """Required keys present, no key the guide does not document (a typo'd key is silently ignored by the Hub);
    whether the object can be looked into further."""
    if not isinstance(obj, dict):
        problems.append(f"{where or 'top level'}: must be an object, got {type(obj).__name__}")
        return False
    for key in sorted(required - obj.keys()):
        problems.append(f"{where + '.' if where else ''}{key}: required, missing")
    for key in sorted(obj.keys() - required - optional):
        problems.append(f"{where + '.' if where else ''}{key}: not a field the guide documents")
    return required <= obj.keys()


def _text(problems: Problems, where: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{where}: must be a non-empty string")


def _cuda_versions(problems: Problems, where: str, value: Any) -> None:
    if not isinstance(value, list) or not value:
        problems.append(f"{where}: must be a non-empty array of version strings like \"13.0\"")
        return
    for index, version in enumerate(value):
        if version not in CUDA_VERSIONS:
            problems.append(f"{where}[{index}]: {version!r} is not a CUDA version RunPod lists ({CUDA_VERSIONS})")
    if len(set(map(str, value))) != len(value):
        problems.append(f"{where}: lists a version twice")


def _gpu_ids(problems: Problems, where: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{where}: must be a comma-separated string of GPU pool IDs")
        return
    items = [item.strip() for item in value.split(",")]
    for item in items:
        name = item.removeprefix("-")
        if item.startswith("-") and name not in GPU_IDS:
            problems.append(f"{where}: {item!r} negates {name!r}, which is not a GPU ID RunPod lists")
        elif not item.startswith("-") and name not in GPU_POOLS and name not in GPU_IDS:
            problems.append(f"{where}: {item!r} is neither a GPU pool ({sorted(GPU_POOLS)}) nor a GPU ID")
    if not [item for item in items if not item.startswith("-")]:
        problems.append(f"{where}: names no pool to run on (only negations)")


def _input(problems: Problems, where: str, spec: Any) -> None:  # noqa: C901 (one check per documented rule of the schema)
    common = {"name", "type", "description"}
    kind = spec.get("type") if isinstance(spec, dict) else None
    extra = {"string": {"options"}, "number": {"min", "max"}, "boolean": {"trueValue", "falseValue"}}.get(kind, set())
    if not _keys(problems, where, spec, required=common, optional={"default", "advanced", "required"} | extra):
        return
    _text(problems, f"{where}.name", spec["name"])
    _text(problems, f"{where}.description", spec["description"])
    if kind not in INPUT_TYPES:
        problems.append(f"{where}.type: {kind!r} is not one of {sorted(INPUT_TYPES)}")
        return
    for flag in ("advanced", "required"):
        if flag in spec and not isinstance(spec[flag], bool):
            problems.append(f"{where}.{flag}: must be true or false")
    if "options" in spec:
        options = spec["options"]
        if not isinstance(options, list) or not options:
            problems.append(f"{where}.options: must be a non-empty array of {{label, value}}")
        else:
            for index, option in enumerate(options):
                if _keys(problems, f"{where}.options[{index}]", option, required={"label", "value"}):
                    _text(problems, f"{where}.options[{index}].label", option["label"])
    if "default" in spec:
        _value(problems, f"{where}.default", spec["default"], spec)
    for bound in ("min", "max"):
        if bound in spec and not _is_number(spec[bound]):
            problems.append(f"{where}.{bound}: must be a number")
    if _is_number(spec.get("min")) and _is_number(spec.get("max")) and spec["min"] > spec["max"]:
        problems.append(f"{where}: min {spec['min']} is above max {spec['max']}")
    for flag in ("trueValue", "falseValue"):
        if flag in spec and not isinstance(spec[flag], str):
            problems.append(f"{where}.{flag}: must be a string (the variable's value)")


def _value(problems: Problems, where: str, value: Any, spec: dict) -> None:
    """A default or a preset value, checked against the input it fills."""
    kind = spec.get("type")
    if kind == "number":
        if not _is_number(value):
            problems.append(f"{where}: must be a number, got {value!r}")
            return
        if _is_number(spec.get("min")) and value < spec["min"]:
            problems.append(f"{where}: {value} is below the input's min {spec['min']}")
        if _is_number(spec.get("max")) and value > spec["max"]:
            problems.append(f"{where}: {value} is above the input's max {spec['max']}")
    elif kind == "boolean":
        if not isinstance(value, bool):
            problems.append(f"{where}: must be true or false, got {value!r}")
    elif not isinstance(value, str):
        problems.append(f"{where}: must be a string, got {value!r}")
    elif isinstance(spec.get("options"), list):
        allowed = [option.get("value") for option in spec["options"] if isinstance(option, dict)]
        if value not in allowed:
            problems.append(f"{where}: {value!r} is not one of the input's options {allowed}")


def _env(problems: Problems, where: str, env: Any, *, inputs_allowed: bool) -> dict[str, dict]:
    """Checks an env array; returns key -> entry for the well-formed entries."""
    entries: dict[str, dict] = {}
    if not isinstance(env, list):
        problems.append(f"{where}: must be an array of {{key, value}} or {{key, input}}")
        return entries
    for index, entry in enumerate(env):
        here = f"{where}[{index}]"
        if not isinstance(entry, dict):
            problems.append(f"{here}: must be an object")
            continue
        has = {"value", "input"} & entry.keys()
        if len(has) != 1 or (not inputs_allowed and "input" in entry):
            wanted = "exactly one of value and input" if inputs_allowed else "a value"
            problems.append(f"{here}: needs {wanted}, has {sorted(has) or 'neither'}")
            continue
        if not _keys(problems, here, entry, required={"key"} | has):
            continue
        key = entry["key"]
        if not isinstance(key, str) or not ENV_NAME.fullmatch(key):
            problems.append(f"{here}.key: {key!r} is not an environment variable name")
            continue
        if key in entries:
            problems.append(f"{here}.key: {key} is defined twice")
        if "value" in entry and not (isinstance(entry["value"], str | bool) or _is_number(entry["value"])):
            problems.append(f"{here}.value: must be a string, number or boolean")
        if "input" in entry:
            _input(problems, f"{here}.input", entry["input"])
        entries[key] = entry
    return entries


def _presets(problems: Problems, where: str, presets: Any, env: dict[str, dict]) -> None:
    if not isinstance(presets, list):
        problems.append(f"{where}: must be an array of {{name, defaults}}")
        return
    names = set()
    for index, preset in enumerate(presets):
        here = f"{where}[{index}]"
        if not _keys(problems, here, preset, required={"name", "defaults"}):
            continue
        _text(problems, f"{here}.name", preset["name"])
        if preset["name"] in names:
            problems.append(f"{here}.name: {preset['name']!r} is used twice")
        names.add(preset["name"])
        defaults = preset["defaults"]
        if not isinstance(defaults, dict) or not defaults:
            problems.append(f"{here}.defaults: must be a non-empty object of variable -> value")
            continue
        for key, value in defaults.items():
            spec = env.get(key, {}).get("input")
            if not isinstance(spec, dict):
                problems.append(f"{here}.defaults.{key}: no input of that key in config.env to preset")
            else:
                _value(problems, f"{here}.defaults.{key}", value, spec)


def hub_problems(hub: Any) -> Problems:  # noqa: C901 (one check per documented rule of the schema)
    """hub.json against the guide's 'hub.json reference'; each problem starts with the field it concerns."""
    problems: Problems = []
    _keys(problems, "", hub, required={"title", "description", "type", "category", "config"}, optional={"iconUrl"})
    if not isinstance(hub, dict):
        return problems
    _text(problems, "title", hub.get("title"))
    _text(problems, "description", hub.get("description"))
    if hub.get("type") != "serverless":
        problems.append(f"type: must be \"serverless\", got {hub.get('type')!r}")
    if hub.get("category") not in CATEGORIES:
        problems.append(f"category: {hub.get('category')!r} is not one of {sorted(CATEGORIES)}")
    if "iconUrl" in hub and not re.fullmatch(r"https?://[^\s/]+/\S*", str(hub["iconUrl"])):
        problems.append(f"iconUrl: {hub['iconUrl']!r} is not a URL")
    config = hub.get("config")
    runs_on = config.get("runsOn") if isinstance(config, dict) else None
    needed = {"GPU": {"gpuCount", "gpuIds"}, "CPU": {"cpuFlavor"}}.get(runs_on, set())
    optional = {"endpointType", "allowedCudaVersions", "env", "presets", "gpuCount", "gpuIds", "cpuFlavor"}
    _keys(problems, "config", config, required={"runsOn", "containerDiskInGb"} | needed, optional=optional)
    if not isinstance(config, dict):
        return problems
    if runs_on not in ("GPU", "CPU"):
        problems.append(f"config.runsOn: must be \"GPU\" or \"CPU\", got {runs_on!r}")
    if not _is_int(config.get("containerDiskInGb")) or config["containerDiskInGb"] < 1:
        disk = config.get("containerDiskInGb")
        problems.append(f"config.containerDiskInGb: must be a whole number of GB, got {disk!r}")
    if "gpuCount" in config and (not _is_int(config["gpuCount"]) or config["gpuCount"] < 1):
        problems.append(f"config.gpuCount: must be a whole number >= 1, got {config['gpuCount']!r}")
    if "gpuIds" in config:
        _gpu_ids(problems, "config.gpuIds", config["gpuIds"])
    if "cpuFlavor" in config:
        _text(problems, "config.cpuFlavor", config["cpuFlavor"])
    if "endpointType" in config and config["endpointType"] != "LB":
        problems.append(f"config.endpointType: the only documented value is \"LB\", got {config['endpointType']!r}")
    if "allowedCudaVersions" in config:
        _cuda_versions(problems, "config.allowedCudaVersions", config["allowedCudaVersions"])
    env = _env(problems, "config.env", config.get("env", []), inputs_allowed=True)
    _presets(problems, "config.presets", config.get("presets", []), env)
    return problems


def suite_problems(tests: Any) -> Problems:  # noqa: C901 (one check per documented rule of the schema)
    """tests.json against the guide's 'tests.json reference'."""
    problems: Problems = []
    _keys(problems, "", tests, required={"tests"}, optional={"config"})
    if not isinstance(tests, dict):
        return problems
    cases = tests.get("tests")
    if "tests" in tests and (not isinstance(cases, list) or not cases):
        problems.append("tests: must be a non-empty array of test cases")
    if not isinstance(cases, list):
        cases = []
    names = set()
    for index, case in enumerate(cases):
        here = f"tests[{index}]"
        if not _keys(problems, here, case, required={"name", "input"}, optional={"timeout"}):
            continue
        _text(problems, f"{here}.name", case["name"])
        if case["name"] in names:
            problems.append(f"{here}.name: {case['name']!r} is used twice")
        names.add(case["name"])
        if not isinstance(case["input"], dict):
            problems.append(f"{here}.input: must be an object (the job's input)")
        if "timeout" in case and (not _is_int(case["timeout"]) or case["timeout"] < 1):
            problems.append(f"{here}.timeout: must be a whole number of milliseconds, got {case['timeout']!r}")
    config = tests.get("config", {})
    optional = {"gpuTypeId", "gpuCount", "cpuFlavor", "env", "allowedCudaVersions"}
    if not _keys(problems, "config", config, required=set(), optional=optional):
        return problems
    if "gpuTypeId" in config and config["gpuTypeId"] not in GPU_IDS:
        problems.append(f"config.gpuTypeId: {config['gpuTypeId']!r} is not a GPU ID RunPod lists")
    if "gpuCount" in config and (not _is_int(config["gpuCount"]) or config["gpuCount"] < 1):
        problems.append(f"config.gpuCount: must be a whole number >= 1, got {config['gpuCount']!r}")
    if ("gpuTypeId" in config) != ("gpuCount" in config):
        problems.append("config: a GPU test names both gpuTypeId and gpuCount")
    if "cpuFlavor" in config:
        _text(problems, "config.cpuFlavor", config["cpuFlavor"])
    _env(problems, "config.env", config.get("env", []), inputs_allowed=False)
    if "allowedCudaVersions" in config:
        _cuda_versions(problems, "config.allowedCudaVersions", config["allowedCudaVersions"])
    return problems
