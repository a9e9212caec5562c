"""The shape of core/: the vocabulary flat at its top, one package per stage, each package showing what the others may
use in its __init__, packages stacked with no import back up, and faces that import only the vocabulary and the
package faces (docs/architecture.md draws it)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "core"

VOCABULARY = {"errors", "events", "cancel", "settings", "secrets", "jobdir", "status", "result", "outputs"}
"""core/'s flat modules that every package may use: they import no package."""
TOP = {"pipeline", "endpoint", "__main__"}
"""The stages in order (core/pipeline.py), the worker endpoint's policy for a job (core/endpoint.py) and the command
line: they may use every package."""
LAYERS = [
    {"adapters"},
    {"simpletuner"},
    {"spec"},
    {"dataset", "models", "publishing"},
    {"cache", "training"},
    {"generation"},
]
"""Packages from the ground up: a package imports only the vocabulary and packages on lower layers."""
PACKAGES = set().union(*LAYERS)
FACES = [ROOT / "app", ROOT / "worker"]


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every `from core... import` and `import core...` in a file, nested ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return [(line, module) for line, module in found if module == "core" or module.startswith("core.")]


def _where(path: Path) -> str:
    """The vocabulary, 'top', or the package a core file belongs to."""
    parts = path.relative_to(CORE).with_suffix("").parts
    if len(parts) == 1:
        return "top" if parts[0] in TOP else "vocabulary"
    return parts[0]


def _layer(place: str) -> int:
    if place == "vocabulary":
        return -1
    if place == "top":
        return len(LAYERS)
    return next(i for i, layer in enumerate(LAYERS) if place in layer)


def _target(module: str) -> tuple[str, bool]:
    """(where an imported core module lives, whether it is a package's face or a flat module)."""
    parts = module.split(".")[1:]
    if not parts or parts[0] in VOCABULARY:
        return "vocabulary", True
    if parts[0] in TOP:
        return "top", True
    return parts[0], len(parts) == 1


def test_core_top_level_holds_only_the_vocabulary_and_the_stage_packages():
    modules = {p.stem for p in CORE.glob("*.py")} - {"__init__"}
    folders = {p.name for p in CORE.iterdir() if (p / "__init__.py").is_file()}
    assert modules == VOCABULARY | TOP
    assert folders == PACKAGES


def test_faces_import_only_the_vocabulary_and_package_faces():
    wrong = []
    for face in FACES:
        for path in sorted(face.rglob("*.py")):
            for line, module in _imports(path):
                place, is_face = _target(module)
                if not is_face:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module} (use core.{place})")
    assert wrong == []


def test_packages_stack_with_no_import_back_up_and_use_each_other_through_their_faces():
    wrong = []
    for path in sorted(CORE.rglob("*.py")):
        here = _where(path)
        for line, module in _imports(path):
            there, is_face = _target(module)
            if there == here:
                continue
            where = f"core/{path.relative_to(CORE)}:{line} imports {module}"
            if _layer(there) >= _layer(here):
                wrong.append(f"{where}: {there} is not below {here}")
            elif there in PACKAGES and not is_face:
                wrong.append(f"{where}: another package is used through its face (core.{there})")
    assert wrong == []


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_each_package_face_lists_what_it_shows_and_shows_only_that(package: str):
    init = CORE / package / "__init__.py"
    tree = ast.parse(init.read_text())
    assert ast.get_docstring(tree), f"core/{package}/__init__.py says what the package is for"
    imported = {alias.asname or alias.name for node in tree.body if isinstance(node, ast.ImportFrom)
                for alias in node.names}
    defined = [node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
    assert defined == [], "a package face hands names on; what it names is defined in a module of the package"
    face = importlib.import_module(f"core.{package}")
    assert sorted(face.__all__) == sorted(imported)
    for name in face.__all__:
        assert getattr(face, name) is not None


def test_every_name_a_face_or_another_package_uses_is_listed():
    """An import of a package face names only what its __all__ lists (a private name never crosses a package)."""
    wrong = []
    for path in sorted([*CORE.rglob("*.py"), *(p for face in FACES for p in face.rglob("*.py"))]):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("core.")):
                continue
            there, is_face = _target(node.module)
            if there not in PACKAGES or not is_face:
                continue
            shown = set(importlib.import_module(node.module).__all__)
            wrong += [f"{path.relative_to(ROOT)}:{node.lineno} {alias.name} from {node.module}"
                      for alias in node.names if alias.name not in shown]
    assert wrong == []
