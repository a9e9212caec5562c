"""The machine's GPUs: which device a job trains on, how many GPUs, their memory and name, and their CUDA ids.

NVIDIA GPUs when `nvidia-smi` lists any, else the CPU (TRAINER_DEVICE forces one). nvidia-smi lists every GPU of the
machine whatever CUDA_VISIBLE_DEVICES says, so the list is cut to what CUDA will see (`select_visible`, CUDA's own
rule). GPU_MEMORY_GB stands in for the memory and GPU_COUNT for the count on a machine planning for another (a dry
run on a CPU machine). A job's num_processes picks how many of the visible GPUs it trains on.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

from core.errors import SpecError
from core.settings import Settings

MIB_PER_GB = 1024
"""nvidia-smi's MiB per GB as this project states GPU memory (GiB, written GB as the card makers do)."""
QUERY = ["--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"]
PROCESSES_FIELD = "config.num_processes"
# One entry of CUDA_VISIBLE_DEVICES that CUDA accepts: an index, or (a prefix of) a GPU or MIG instance's UUID.
_DEVICE_ENTRY = re.compile(r"^(\d+|GPU-[0-9A-Fa-f-]+|MIG-[0-9A-Za-z/-]+)$")


@dataclass(frozen=True)
class GpuFacts:
    count: int
    """The GPUs this job trains on (one process each): num_processes when the job sets it, else every visible one."""
    memory_gb: float | None
    """Per GPU (the smallest when they differ), exact: nvidia-smi's MiB / 1024 (an L4's 23034 MiB is 22.49 GB);
    None when unknown."""
    source: str
    """"nvidia-smi", "GPU_MEMORY_GB" or "unknown"."""
    name: str | None = None
    """The card's name as nvidia-smi gives it ("NVIDIA H100 80GB HBM3"); None when unknown."""
    ids: tuple[str, ...] = ()
    """The CUDA ids of those GPUs, as accelerate's gpu_ids takes them (it sets CUDA_VISIBLE_DEVICES to them): the
    entries of CUDA_VISIBLE_DEVICES when it is set, else the indices 0..count-1."""
    visible: int = 0
    """The GPUs visible to this process (count may be fewer)."""


@dataclass(frozen=True)
class GpuListing:
    """One GPU as nvidia-smi lists it."""

    name: str
    memory_gb: float
    index: int | None = None
    uuid: str | None = None


def parse_gpu_listing(text: str) -> list[GpuListing]:
    """nvidia-smi's `name, memory.total` lines (MiB) -> one GpuListing per GPU, memory in exact GB (not rounded: a
    card just under a size must be compared as it is). Lines it cannot read are left out."""
    found = []
    for line in text.splitlines():
        name, _, mib = line.rpartition(",")
        try:
            found.append(GpuListing(name=name.strip() or "unknown GPU", memory_gb=round(float(mib) / MIB_PER_GB, 2)))
        except ValueError:
            continue
    return found


def parse_gpu_query(text: str) -> list[GpuListing]:
    """nvidia-smi's `index, uuid, name, memory.total` lines (QUERY) -> one GpuListing per GPU; lines it cannot read
    are left out."""
    found = []
    for line in text.splitlines():
        index, _, rest = line.partition(",")
        uuid, _, rest = rest.partition(",")
        if not index.strip().isdigit():
            continue
        for gpu in parse_gpu_listing(rest):
            found.append(GpuListing(name=gpu.name, memory_gb=gpu.memory_gb, index=int(index), uuid=uuid.strip()))
    return found


def visible_devices(value: str | None) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES -> the entries CUDA takes, in order; None when unset (every GPU). CUDA's rule: the list
    ends at the first entry it cannot read (a "-1" hides every GPU), so "" and "-1" give []."""
    if value is None:
        return None
    entries = []
    for entry in (part.strip() for part in value.split(",")):
        if not _DEVICE_ENTRY.match(entry):
            break
        entries.append(entry)
    return entries


def select_visible(gpus: list[GpuListing], visible: list[str] | None) -> list[tuple[str, GpuListing]]:
    """The GPUs CUDA shows, in its order, each with the id that names it: every listed GPU (by index) when
    `visible` is None, else each entry that names a listed GPU (its index, or a prefix of its UUID) up to the first
    that names none, where CUDA stops too."""
    if visible is None:
        return [(str(gpu.index if gpu.index is not None else number), gpu) for number, gpu in enumerate(gpus)]
    chosen: list[tuple[str, GpuListing]] = []
    for entry in visible:
        match = next((gpu for gpu in gpus if (entry.isdigit() and gpu.index == int(entry))
                      or (not entry.isdigit() and gpu.uuid and gpu.uuid.startswith(entry))), None)
        if match is None or any(gpu is match for _, gpu in chosen):
            break
        chosen.append((entry, match))
    return chosen


def _listed_gpus(settings: Settings) -> list[tuple[str, GpuListing]]:
    """The GPUs nvidia-smi lists that CUDA_VISIBLE_DEVICES lets this process see; [] without nvidia-smi."""
    if settings.device == "cpu" or settings.cuda_visible_devices == "":
        return []
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    done = subprocess.run([smi, *QUERY], capture_output=True, text=True, timeout=20, check=False)
    listing = parse_gpu_query(done.stdout) if done.returncode == 0 else []
    return select_visible(listing, visible_devices(settings.cuda_visible_devices))


def detect_device(settings: Settings) -> tuple[str, int]:
    """("cuda", visible GPU count) when NVIDIA GPUs are visible, else ("cpu", 0); TRAINER_DEVICE forces one, and
    CUDA_VISIBLE_DEVICES limits them ("0,2": two; "": none)."""
    if settings.device == "cpu" or settings.cuda_visible_devices == "":
        return "cpu", 0
    count = len(_listed_gpus(settings))
    if settings.device == "cuda" or count:
        return "cuda", max(count, 1)
    return "cpu", 0


def visible_gpu_ids(settings: Settings) -> list[str]:
    """The CUDA ids of every GPU this process may hand out, in CUDA's order ([] on the CPU): what the app's queue
    shares between runs (each run trains with CUDA_VISIBLE_DEVICES set to its share). nvidia-smi's GPUs cut to
    CUDA_VISIBLE_DEVICES; where nvidia-smi is absent and TRAINER_DEVICE=cuda, the CUDA_VISIBLE_DEVICES entries, else
    GPU_COUNT's indices (a test's fake pod)."""
    if settings.device == "cpu" or settings.cuda_visible_devices == "":
        return []
    listed = _listed_gpus(settings)
    if listed:
        return [entry for entry, _ in listed]
    if settings.device != "cuda":
        return []
    given = visible_devices(settings.cuda_visible_devices)
    return given or [str(index) for index in range(settings.gpu_count or 1)]


def gpu_facts(settings: Settings, *, gpu_count: int) -> GpuFacts:
    """GPU_MEMORY_GB when set, else nvidia-smi's answer, else unknown; for `gpu_count` GPUs."""
    return _facts(settings, listed=_listed_gpus(settings) if gpu_count else [], visible=gpu_count, use=gpu_count)


def _facts(settings: Settings, *, listed: list[tuple[str, GpuListing]], visible: int, use: int) -> GpuFacts:
    given = visible_devices(settings.cuda_visible_devices)
    ids = tuple(entry for entry, _ in listed[:use]) or tuple((given or [])[:use]) or tuple(map(str, range(use)))
    chosen = [gpu for _, gpu in listed[:use]]
    smallest = min(chosen, key=lambda gpu: gpu.memory_gb) if chosen else None
    name = smallest.name if smallest else None
    if settings.gpu_memory_gb:
        return GpuFacts(count=max(use, 1), memory_gb=settings.gpu_memory_gb, source="GPU_MEMORY_GB", name=name,
                        ids=ids, visible=visible)
    if smallest:
        return GpuFacts(count=use, memory_gb=smallest.memory_gb, source="nvidia-smi", name=name, ids=ids,
                        visible=visible)
    return GpuFacts(count=use, memory_gb=None, source="unknown", ids=ids, visible=visible)


def plan_device(settings: Settings, *, dry_run: bool, processes: int | None = None) -> tuple[str, GpuFacts]:
    """The device a job trains on and the GPUs it uses: `processes` of the visible ones (the job's num_processes;
    None: all of them). More than are visible is a SpecError naming config.num_processes. A dry run on a machine
    without a GPU plans for GPU_COUNT GPUs (default 1) of GPU_MEMORY_GB, so a CPU machine can check a job for the
    pod it will run on."""
    listed = [] if settings.device == "cpu" or settings.cuda_visible_devices == "" else _listed_gpus(settings)
    given = visible_devices(settings.cuda_visible_devices)
    if listed:
        visible, where = len(listed), _visible_source(settings, f"nvidia-smi lists {len(listed)}")
    elif settings.device == "cuda" and settings.cuda_visible_devices != "":  # forced, nvidia-smi absent
        # CUDA_VISIBLE_DEVICES first: a queued run's own share of a pod that GPU_COUNT describes.
        visible = len(given or []) or settings.gpu_count or 1
        where = _visible_source(settings, "GPU_COUNT" if settings.gpu_count else "TRAINER_DEVICE=cuda")
    elif dry_run and settings.device != "cpu" and (settings.gpu_memory_gb or settings.gpu_count):
        visible, where = settings.gpu_count or 1, "GPU_COUNT" if settings.gpu_count else "GPU_MEMORY_GB"
    else:
        return "cpu", GpuFacts(0, None, "unknown")
    if processes is not None and processes > visible:
        raise SpecError(
            f"{PROCESSES_FIELD} {processes} asks for more GPUs than the {visible} visible ({where}): lower"
            f" {PROCESSES_FIELD}, or run on a machine with {processes} GPUs", field=PROCESSES_FIELD)
    return "cuda", _facts(settings, listed=listed, visible=visible, use=processes or visible)


def _visible_source(settings: Settings, otherwise: str) -> str:
    if settings.cuda_visible_devices is None:
        return otherwise
    return f"CUDA_VISIBLE_DEVICES={settings.cuda_visible_devices}"
