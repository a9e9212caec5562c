"""The machine's GPUs: CUDA_VISIBLE_DEVICES read as CUDA reads it, nvidia-smi's listing cut to what CUDA shows, a
job's num_processes choosing among them, and GPU_COUNT planning a pod from a machine without a GPU (nvidia-smi is
absent here: the parsing and choosing are pure and tested as such)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from core.adapters.gpus import parse_gpu_query, plan_device, select_visible, visible_devices
from core.errors import SetupError, SpecError
from core.settings import Settings

LISTING = parse_gpu_query(
    "0, GPU-aaaa1111-0000-0000-0000-000000000000, NVIDIA H100 80GB HBM3, 81559\n"
    "1, GPU-bbbb2222-0000-0000-0000-000000000000, NVIDIA H100 80GB HBM3, 81559\n"
    "2, GPU-cccc3333-0000-0000-0000-000000000000, NVIDIA L4, 23034\n"
    "garbage line\n")
BARE = Settings(trainer_venv=Path("/none"), data_root=Path("/none"))


def test_the_query_lists_index_uuid_name_and_exact_memory():
    assert [(gpu.index, gpu.name, gpu.memory_gb) for gpu in LISTING] == [
        (0, "NVIDIA H100 80GB HBM3", 79.65), (1, "NVIDIA H100 80GB HBM3", 79.65), (2, "NVIDIA L4", 22.49)]
    assert LISTING[2].uuid == "GPU-cccc3333-0000-0000-0000-000000000000"


@pytest.mark.parametrize("value,expected", [
    (None, None),  # unset: every GPU
    ("", []), ("-1", []),  # hides them all
    ("0,2", ["0", "2"]), (" 1 , 0 ", ["1", "0"]),
    ("0,x,2", ["0"]),  # CUDA stops at the first entry it cannot read
    ("GPU-cccc3333", ["GPU-cccc3333"]), ("MIG-1234abcd/1/0", ["MIG-1234abcd/1/0"]),
])
def test_cuda_visible_devices_is_read_as_cuda_reads_it(value, expected):
    assert visible_devices(value) == expected


def test_the_listing_is_cut_to_what_cuda_shows_each_gpu_with_the_id_that_names_it():
    assert [(entry, gpu.index) for entry, gpu in select_visible(LISTING, None)] == [("0", 0), ("1", 1), ("2", 2)]
    assert [(entry, gpu.index) for entry, gpu in select_visible(LISTING, ["0", "2"])] == [("0", 0), ("2", 2)]
    assert [(entry, gpu.index) for entry, gpu in select_visible(LISTING, ["GPU-cccc", "1"])] == [
        ("GPU-cccc", 2), ("1", 1)]
    assert select_visible(LISTING, ["1", "7", "0"])[-1][0] == "1"  # no GPU 7: CUDA shows only what came before
    assert select_visible(LISTING, ["1", "1"]) == select_visible(LISTING, ["1"])  # a GPU is shown once
    assert select_visible(LISTING, []) == []


def test_gpu_count_plans_several_gpus_for_a_dry_run_on_a_machine_without_one():
    planned = Settings.from_env({"GPU_COUNT": "2", "GPU_MEMORY_GB": "24"})
    device, gpu = plan_device(planned, dry_run=True)
    assert (device, gpu.count, gpu.memory_gb, gpu.ids, gpu.visible) == ("cuda", 2, 24.0, ("0", "1"), 2)
    device, gpu = plan_device(planned, dry_run=True, processes=1)
    assert (device, gpu.count, gpu.ids, gpu.visible) == ("cuda", 1, ("0",), 2)
    assert plan_device(planned, dry_run=False)[0] == "cpu"  # a real run trains on what is here
    assert plan_device(dataclasses.replace(planned, device="cpu"), dry_run=True)[0] == "cpu"


def test_more_processes_than_gpus_is_refused_naming_num_processes_and_where_the_count_came_from():
    planned = Settings.from_env({"GPU_COUNT": "2"})
    with pytest.raises(SpecError) as caught:
        plan_device(planned, dry_run=True, processes=4)
    assert caught.value.field == "config.num_processes"
    assert "config.num_processes 4 asks for more GPUs than the 2 visible (GPU_COUNT)" in caught.value.message


def test_a_forced_cuda_device_counts_the_cuda_visible_devices_list_and_uses_its_ids():
    forced = dataclasses.replace(BARE, device="cuda", cuda_visible_devices="0,2")
    device, gpu = plan_device(forced, dry_run=False)
    assert (device, gpu.count, gpu.ids) == ("cuda", 2, ("0", "2"))
    with pytest.raises(SpecError, match=r"3 asks for more GPUs than the 2 visible \(CUDA_VISIBLE_DEVICES=0,2\)"):
        plan_device(forced, dry_run=False, processes=3)
    assert plan_device(dataclasses.replace(forced, cuda_visible_devices=""), dry_run=False)[0] == "cpu"


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_a_bad_gpu_count_is_a_setup_error_naming_it(value):
    with pytest.raises(SetupError) as caught:
        Settings.from_env({"GPU_COUNT": value})
    assert caught.value.field == "GPU_COUNT"
