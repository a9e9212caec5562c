"""The Dockerfile, read as text: no Docker engine runs here, so everything around the build is checked instead.

What a build on RunPod would trip over (a missing COPY source, a requirements file not copied, a context that
leaves a needed file out) and what would break at run time (venv paths start.sh does not know, the wrong
entrypoint, a CUDA base that does not match the locked torch) fails here first.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
START_SH = ROOT / "start.sh"
TRAINER_SITE = ROOT / ".venv-trainer" / "lib" / "python3.12" / "site-packages"


def instructions() -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction; continuation lines joined, comment lines dropped (as Docker does)."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = pending + stripped
        pending = ""
        keyword, _, args = whole.partition(" ")
        result.append((keyword.upper(), args.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return result


def args_of(keyword: str) -> list[str]:
    return [args for kw, args in instructions() if kw == keyword]


def exec_form(args: str) -> list[str]:
    assert args.startswith("["), f"expected the JSON (exec) form, got {args!r}"
    return json.loads(args)


def env_vars() -> dict[str, str]:
    """Every ENV key=value (later ones win, as in the image)."""
    values: dict[str, str] = {}
    for args in args_of("ENV"):
        for token in shlex.split(args):
            key, sep, value = token.partition("=")
            assert sep, f"ENV {args!r}: use key=value (the legacy 'ENV key value' form is ambiguous)"
            values[key] = value
    return values


def copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context (not --from another stage)."""
    result = []
    for args in args_of("COPY"):
        parts = exec_form(args) if args.startswith("[") else shlex.split(args)
        if any(part.startswith("--from") for part in parts):
            continue
        parts = [part for part in parts if not part.startswith("--")]
        result.append((parts[:-1], parts[-1]))
    return result


def ignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as (negated, regex) pairs, by Docker's rules: anchored at the context root, `**` spans folders."""
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((negated, re.compile(regex)))
    return rules


def excluded(path: str) -> bool:
    """Whether the build context leaves `path` out: it or a folder above it matches; the last matching rule wins."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    verdict = False
    for negated, regex in ignore_patterns():
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            verdict = not negated
    return verdict


def project_dir() -> str:
    """Where `COPY . <dir>` puts the project."""
    dirs = [dest for sources, dest in copies() if sources == ["."]]
    assert len(dirs) == 1, f"expected exactly one 'COPY . <dir>', found {dirs}"
    return dirs[0].rstrip("/")


def test_every_copy_source_exists_and_is_in_the_build_context():
    assert copies(), "the Dockerfile copies nothing"
    for sources, dest in copies():
        for source in sources:
            if source == ".":
                continue
            assert (ROOT / source).exists(), f"COPY {source} {dest}: {source} does not exist in the repo"
            assert not excluded(source), f"COPY {source} {dest}: .dockerignore leaves {source} out of the context"


def test_project_is_copied_last_after_every_install():
    kinds = instructions()
    keywords = [kw for kw, _ in kinds]
    project_copy = next(i for i, (kw, args) in enumerate(kinds) if kw == "COPY" and args.split()[0] == ".")
    installs = [i for i, (kw, args) in enumerate(kinds) if kw == "RUN" and "pip install" in args]
    assert installs and max(installs) < project_copy, "an environment is installed after the project is copied"
    assert "COPY" not in keywords[project_copy + 1 :], "the project must be the last thing copied"
    assert "RUN" not in keywords[project_copy + 1 :], "nothing should run after the project is copied"
    # SimpleTuner's layer comes before the app env's, so a change to requirements.txt does not reinstall it.
    trainer = next(i for i in installs if "requirements-trainer" in kinds[i][1])
    app = next(i for i in installs if re.search(r"requirements\.txt\b", kinds[i][1]))
    assert trainer < app


def test_requirements_files_installed_are_the_makefiles_and_were_copied_in():
    copied = {f"{dest.rstrip('/')}/{Path(source).name}" for sources, dest in copies() for source in sources}
    used: dict[str, str] = {}
    for args in args_of("RUN"):
        for flag, path in re.findall(r"(-r|-c|--override|--constraint)\s+(\S+)", args):
            assert path in copied, f"RUN uses {flag} {path}, which no earlier COPY puts there"
            used[Path(path).name] = flag
            assert (ROOT / Path(path).name).is_file(), f"{Path(path).name} does not exist in the repo"
    # The same files, in the same roles, as `make setup` (without the test tools of requirements-dev.txt), plus
    # the lock of the CUDA-only packages (`make trainer-lock` writes both locks).
    assert used == {
        "requirements-trainer.txt": "-r",
        "requirements-trainer.lock": "-c",
        "requirements-trainer-cuda.lock": "-c",
        "requirements.txt": "-r",
        "requirements-app.lock": "-c",
        "requirements-overrides.txt": "--override",
    }


def test_uv_pin_matches_the_makefile():
    makefile_pin = re.search(r"uv==([\w.]+)", (ROOT / "Makefile").read_text())
    dockerfile_pin = re.search(r"uv==([\w.]+)", DOCKERFILE.read_text())
    assert makefile_pin and dockerfile_pin
    assert dockerfile_pin.group(1) == makefile_pin.group(1)


def test_venv_paths_agree_with_start_sh_defaults():
    env = env_vars()
    script = START_SH.read_text()
    app_default = re.search(r'default_venv (\S+) "\$ROOT/\.venv"', script)
    trainer_default = re.search(r'default_venv (\S+) "\$ROOT/\.venv-trainer"', script)
    assert app_default and trainer_default, "start.sh no longer says where the image's venvs are"
    assert env["APP_VENV"] == app_default.group(1)
    assert env["TRAINER_VENV"] == trainer_default.group(1)
    runs = " ".join(args_of("RUN"))
    assert re.search(r'-m venv "?\$APP_VENV"?', runs), "the app env is not created at $APP_VENV"
    assert re.search(r'uv"? venv .*"?\$TRAINER_VENV"?', runs), "the trainer env is not created at $TRAINER_VENV"


def test_entrypoint_is_start_sh_of_the_copied_project():
    (entrypoint,) = args_of("ENTRYPOINT")
    assert exec_form(entrypoint) == [f"{project_dir()}/start.sh"]
    assert not excluded("start.sh")
    assert START_SH.stat().st_mode & 0o111, "start.sh must be executable (the image runs it directly)"
    staged = subprocess.run(["git", "ls-files", "-s", "start.sh"], cwd=ROOT, capture_output=True, text=True)
    if staged.returncode == 0 and staged.stdout:
        assert staged.stdout.startswith("100755"), f"git records start.sh without its exec bit: {staged.stdout}"


def test_ui_port_is_exposed_and_checked_by_the_healthcheck():
    exposed = " ".join(args_of("EXPOSE")).split()
    assert "7860" in exposed or "7860/tcp" in exposed
    assert env_vars()["GRADIO_SERVER_PORT"] == "7860"
    (health,) = args_of("HEALTHCHECK")
    assert "NONE" not in health.split()
    command = exec_form(health[health.index("CMD") + 3 :].strip())
    assert command == [f"{project_dir()}/start.sh", "health"]
    assert re.search(r"^\s*health\)", START_SH.read_text(), re.MULTILINE), "start.sh has no 'health' command"


def test_runtime_defaults_download_models_without_telemetry():
    env = env_vars()
    assert env["DATA_DIR"] == "/workspace/data"
    assert env["GRADIO_ANALYTICS_ENABLED"] == "False"
    assert env["HF_HUB_DISABLE_TELEMETRY"] == "1"
    assert "HF_HUB_OFFLINE" not in env, "the image downloads base models: it must not be offline"
    assert env["TRAINER_ONLINE"] == "1"


TOKEN_LIKE = [
    re.compile(r"hf_[A-Za-z0-9]{20,}"),  # Hugging Face
    re.compile(r"(AKIA|ASIA)[0-9A-Z]{16}"),  # AWS access key id
    re.compile(r"rpa_[A-Za-z0-9]{20,}"),  # RunPod API key
    re.compile(r"[A-Za-z0-9+/=_-]{40,}"),  # any long opaque string
]
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|PRIVATE_KEY", re.IGNORECASE)


def test_no_env_or_arg_holds_a_secret():
    pairs = list(env_vars().items())
    for args in args_of("ARG"):
        name, _, default = args.partition("=")
        pairs.append((name, default))
    assert pairs
    for name, value in pairs:
        assert not (SECRET_NAME.search(name) and value), f"{name} bakes a secret-looking value into the image"
        for pattern in TOKEN_LIKE:
            assert not pattern.search(value), f"{name}={value[:8]}...: looks like a token"
    for pattern in TOKEN_LIKE[:3]:
        assert not pattern.search(DOCKERFILE.read_text())


def test_build_context_leaves_out_envs_data_and_secrets_but_keeps_the_project():
    for path in [".venv/bin/python", ".venv-trainer/lib/python3.12/site-packages/torch/__init__.py",
                 "data/jobs/x/config.json", ".git/HEAD", ".env", ".env.local", "core/__pycache__/spec.cpython-312.pyc",
                 "tests/test_dockerfile.py"]:
        assert excluded(path), f".dockerignore lets {path} into the build context"
    for path in ["start.sh", "core/settings.py", "core/data/simpletuner_flags.json", "app/__main__.py",
                 "worker/__main__.py", "requirements.txt", "requirements-trainer.lock", ".runpod/hub.json"]:
        assert not excluded(path), f".dockerignore leaves {path} out of the image"


def test_base_image_is_cuda_runtime_with_cudnn_matching_the_locked_torch():
    (base,) = args_of("FROM")
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-cudnn-runtime-ubuntu24\.04", base)
    assert match, f"FROM {base}: expected nvidia/cuda:<x.y.z>-cudnn-runtime-ubuntu24.04"
    cuda = (int(match.group(1)), int(match.group(2)))
    assert cuda >= (12, 8)
    version_py = TRAINER_SITE / "torch" / "version.py"
    if not version_py.is_file():
        pytest.skip("no trainer env here to read torch's CUDA version from")
    torch_cuda = re.search(r"^cuda(?:: \S+)? = '(\d+)\.(\d+)'", version_py.read_text(), re.MULTILINE)
    assert torch_cuda, "torch/version.py has no CUDA version: the locked torch is not a CUDA build"
    assert cuda == (int(torch_cuda.group(1)), int(torch_cuda.group(2))), "base image CUDA != torch's CUDA build"


def test_python_312_and_the_trainer_extra_is_one_simpletuner_declares():
    runs = " ".join(args_of("RUN"))
    assert "python3.12" in runs
    extra = dict(arg.partition("=")[::2] for arg in args_of("ARG"))["TRAINER_EXTRA"]
    assert re.search(r"simpletuner\[\$\{?TRAINER_EXTRA\}?\]", runs), "TRAINER_EXTRA is not used in the install"
    assert re.search(r"^simpletuner\[\w+\]==[\d.]+$", (ROOT / "requirements-trainer.txt").read_text(), re.MULTILINE)
    metadata = next(TRAINER_SITE.glob("simpletuner-*.dist-info/METADATA"), None) if TRAINER_SITE.is_dir() else None
    if metadata is None:
        pytest.skip("no trainer env here to read SimpleTuner's extras from")
    declared = set(re.findall(r"^Provides-Extra: (\S+)$", metadata.read_text(), re.MULTILINE))
    assert extra in declared, f"SimpleTuner declares no extra '{extra}' (it has: {sorted(declared)})"


def test_the_image_version_is_a_build_arg_after_every_run_and_start_sh_shows_it():
    """The release workflow passes its tag as IMAGE_VERSION; declared after the last RUN, a new tag rebuilds no layer
    (an ARG's value is part of the cache key of every RUN after it)."""
    kinds = instructions()
    arg = next(i for i, (kw, args) in enumerate(kinds) if kw == "ARG" and args.startswith("IMAGE_VERSION="))
    assert max(i for i, (kw, _) in enumerate(kinds) if kw == "RUN") < arg
    assert env_vars()["IMAGE_VERSION"] == "${IMAGE_VERSION}"
    assert "${IMAGE_VERSION:-" in START_SH.read_text()
