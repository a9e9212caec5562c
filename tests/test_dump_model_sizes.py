"""tools/dump_model_sizes.py: a table entry from a local model's safetensors headers equals core/models' reading."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from core.generation.demo import TINY_FAMILIES
from core.models import model_sizes
from core.training.memory_plan import size_table
from tests.conftest import ROOT


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_the_tool_writes_the_tables_format_with_the_headers_counts(family, tiny_family_model, tmp_path):
    folder = tiny_family_model(family)  # built offline once per checkout (a clean clone builds it here)
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "dump_model_sizes.py"), "--hub-id",
                           f"Tiny/{folder.name}", "--folder", str(folder)], capture_output=True, text=True,
                          timeout=60, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    entry = json.loads(done.stdout)
    assert list(entry) == [f"tiny/{folder.name}"]
    components = entry[f"tiny/{folder.name}"]["components"]
    assert {name: part["params"] for name, part in components.items()} == \
        {name: size.params for name, size in model_sizes(folder).items()}
    assert all("safetensors headers" in part["source"] for part in components.values())
    committed = next(iter(size_table()["models"].values()))
    assert set(committed) == {"components"} and set(next(iter(committed["components"].values()))) == \
        {"params", "source"}


def test_a_folder_without_weights_is_an_error(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "dump_model_sizes.py"), "--hub-id", "a/b",
                           "--folder", str(tmp_path)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1 and "no safetensors weights" in done.stderr
