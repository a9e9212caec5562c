"""No server path on a page (app/data_path.py): the Train summary and the Runs details name a run's folder
relative to the data folder."""

from __future__ import annotations

from pathlib import Path

from app.data_path import in_data_folder


def test_a_path_in_the_data_folder_is_shown_relative_to_it_and_any_other_by_its_name(tmp_path: Path):
    data = tmp_path / "data"
    assert in_data_folder(data / "jobs" / "run-1", data_root=data) == "jobs/run-1"
    assert in_data_folder(str(data / "jobs" / "run-1" / "output" / "x.safetensors"), data_root=data) == \
        "jobs/run-1/output/x.safetensors"
    assert in_data_folder("/srv/elsewhere/run-2", data_root=data) == "run-2"
    assert str(tmp_path) not in in_data_folder(data / "jobs" / "r", data_root=data)
