"""The accelerate config of one run: written into the job's config folder and passed to `accelerate launch` with
`--config_file`, so the launch is what the job planned. Without it accelerate reads
`$HF_HOME/accelerate/default_config.yaml`, and a file another tool left on a shared volume would silently switch the
run to DeepSpeed or FSDP, other GPUs, or another precision (docs/multi-gpu.md).

One process per GPU (data parallel: each rank holds the whole model and sees its share of every batch). On the CPU
(the tiny demo, the tests) several processes run the same data-parallel path with gloo: accelerate starts several
local processes only through its multi-GPU launcher (torchrun), and ACCELERATE_USE_CPU makes each one a MULTI_CPU
rank.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

CONFIG_NAME = "accelerate_config.json"
"""In the job's config folder; accelerate reads a .json config as JSON (its YAML otherwise)."""
CPU_RANKS_ENV = {"ACCELERATE_USE_CPU": "true"}
"""The environment of a run of several processes on the CPU: each process a gloo rank (see the module docstring)."""


def world_size(*, device: str, gpu_count: int, processes: int | None) -> int:
    """How many processes train: one per GPU on CUDA (the GPUs the device plan chose, num_processes included);
    on the CPU the job's num_processes, else one."""
    if device == "cuda":
        return max(gpu_count, 1)
    return max(processes or 1, 1)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for the ranks' rendezvous. Another program may take it before accelerate
    binds it; accelerate then finds a free one itself (its standalone mode on one machine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def accelerate_config(*, device: str, processes: int, gpu_ids: Sequence[str], mixed_precision: str,
                      port: int) -> dict[str, Any]:
    """accelerate's config for `processes` local processes: MULTI_GPU (DDP) for several, NO for one; on CUDA the
    GPUs `gpu_ids` names (accelerate sets CUDA_VISIBLE_DEVICES to them), on the CPU none."""
    cpu = device != "cuda"
    ids = list(gpu_ids)[:processes]
    return {
        "compute_environment": "LOCAL_MACHINE",
        "distributed_type": "MULTI_GPU" if processes > 1 else "NO",
        "num_processes": processes,
        "num_machines": 1,
        "machine_rank": 0,
        "gpu_ids": "all" if cpu or not ids else ",".join(ids),
        "use_cpu": cpu,
        "mixed_precision": mixed_precision,
        "main_process_ip": None,
        "main_process_port": port,
        "main_training_function": "main",
        "rdzv_backend": "static",
        "same_network": True,
        "dynamo_config": {},
        "debug": False,
        "downcast_bf16": "no",
        "enable_cpu_affinity": False,
        "tpu_env": [],
        "tpu_use_cluster": False,
        "tpu_use_sudo": False,
    }


def write_accelerate_config(folder: Path, config: dict[str, Any]) -> Path:
    """Write `config` into `folder` (the job's config folder); its path, for `--config_file`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CONFIG_NAME
    path.write_text(json.dumps(config, indent=2))
    return path
