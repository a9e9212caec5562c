"""The committed flag list is SimpleTuner's real one: regenerated from the installed SimpleTuner, it is the same."""

from __future__ import annotations

import json
import subprocess

import pytest

from core.spec.job import FLAGS_FILE
from tests.conftest import ROOT


@pytest.mark.trainer_env
def test_the_committed_flag_list_matches_the_installed_simpletuner(settings):
    done = subprocess.run([str(settings.trainer_python), "-P", str(ROOT / "tools" / "dump_simpletuner_flags.py")],
                          capture_output=True, text=True, timeout=300, check=False,
                          env={"PATH": f"{settings.trainer_bin}:/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": "",
                               "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    installed = json.loads(done.stdout)
    committed = json.loads(FLAGS_FILE.read_text())
    assert installed["simpletuner_version"] == committed["simpletuner_version"] == "4.10.1"
    assert installed["flags"] == committed["flags"], "run `make flags` and commit core/data/simpletuner_flags.json"
