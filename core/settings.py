"""Every environment variable the project reads, read in one place by a pure function."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from core.errors import SetupError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TABLES_DIR = PROJECT_ROOT / "core" / "data"
"""Tables generated from SimpleTuner and the Hub (flags, model ids, recipes, licenses), committed."""
TOOLS_DIR = PROJECT_ROOT / "tools"
"""Scripts that run in the trainer env."""
RUNPOD_VOLUME = Path("/runpod-volume")


def _flag(value: str | None, default: bool = False) -> bool:
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    trainer_venv: Path
    """The trainer env (SimpleTuner, torch): TRAINER_VENV, default <project>/.venv-trainer."""
    data_root: Path
    """Where jobs, uploads and outputs live: DATA_DIR, default <project>/data."""
    device: str = "auto"
    """TRAINER_DEVICE: auto | cpu | cuda."""
    hf_token: SecretStr | None = None
    """HF_TOKEN: the default Hub token; a job's hub.token wins."""
    allow_private_urls: bool = False
    """ALLOW_PRIVATE_URLS: let dataset URLs resolve to loopback/private addresses (tests, LANs)."""
    dataset_root: Path | None = None
    """DATASET_ROOT: the only folder a worker job's dataset.path may point into (unset: paths refused)."""
    online: bool = False
    """TRAINER_ONLINE: let SimpleTuner download base models (a real pod); off keeps it offline."""
    hf_home: Path | None = None
    """HF_HOME: the Hugging Face cache SimpleTuner loads base models from."""
    download_stall_s: float = 60.0
    """DOWNLOAD_STALL_S: a dataset download that receives no byte for this long is dropped (and retried)."""
    gpu_memory_gb: float | None = None
    """GPU_MEMORY_GB: the memory of each GPU, in GB, instead of nvidia-smi's; also lets a dry run on a machine
    without a GPU plan for one this size (core/training/gpu_fit.py)."""
    gpu_price_per_hour: float | None = None
    """GPU_PRICE_PER_HOUR: the endpoint's price per GPU-hour; a dry run then estimates the job's cost."""
    volume_dir: Path | None = None
    """VOLUME_DIR: a network volume where outputs that could not be published are kept; default /runpod-volume
    when that folder exists."""
    deadline_margin_s: float = 600.0
    """DEADLINE_MARGIN_S: in this last part of a job's time, training stops at its next checkpoint
    (core/training/deadline.py)."""
    cache_dir: Path | None = None
    """CACHE_DIR: the cache of staged datasets, text embeddings and VAE latents (core/cache/store.py); default
    <volume>/trainer-cache with a network volume, else DATA_DIR/cache."""
    cache_max_gb: float = 100.0
    """CACHE_MAX_GB: the cache's size limit; the least recently used entries go first."""
    cache_min_free_gb: float | None = None
    """CACHE_MIN_FREE_GB: free space the cache always leaves on its disk (entries go, or are not stored, to keep it);
    default a tenth of the disk (core/cache/store.py)."""

    @property
    def trainer_python(self) -> Path:
        return self.trainer_venv / "bin" / "python"

    @property
    def trainer_bin(self) -> Path:
        return self.trainer_venv / "bin"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        token = env.get("HF_TOKEN") or None
        dataset_root = env.get("DATASET_ROOT")
        hf_home = env.get("HF_HOME")
        return cls(
            trainer_venv=Path(env.get("TRAINER_VENV") or PROJECT_ROOT / ".venv-trainer").absolute(),
            data_root=Path(env.get("DATA_DIR") or PROJECT_ROOT / "data").absolute(),
            device=(env.get("TRAINER_DEVICE") or "auto").strip().lower(),
            hf_token=SecretStr(token) if token else None,
            allow_private_urls=_flag(env.get("ALLOW_PRIVATE_URLS")),
            dataset_root=Path(dataset_root).absolute() if dataset_root else None,
            online=_flag(env.get("TRAINER_ONLINE")),
            hf_home=Path(hf_home).absolute() if hf_home else None,
            download_stall_s=_seconds(env, "DOWNLOAD_STALL_S", default=60.0),
            gpu_memory_gb=_optional_number(env, "GPU_MEMORY_GB", what="a number of GB"),
            gpu_price_per_hour=_optional_number(env, "GPU_PRICE_PER_HOUR", what="a price per GPU-hour"),
            volume_dir=_volume(env),
            deadline_margin_s=_seconds(env, "DEADLINE_MARGIN_S", default=600.0),
            cache_dir=Path(env["CACHE_DIR"]).absolute() if (env.get("CACHE_DIR") or "").strip() else None,
            cache_max_gb=_positive(env, "CACHE_MAX_GB", default=100.0),
            cache_min_free_gb=_optional_number(env, "CACHE_MIN_FREE_GB", what="a number of GB"),
        )


def _volume(env: Mapping[str, str]) -> Path | None:
    given = (env.get("VOLUME_DIR") or "").strip()
    if given:
        return Path(given).absolute()
    return RUNPOD_VOLUME if RUNPOD_VOLUME.is_dir() else None


def _positive(env: Mapping[str, str], name: str, *, default: float, unit: str = "a number") -> float:
    raw = (env.get(name) or "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise SetupError(f"{name}={raw!r}: give {unit} above 0", field=name)
    return value


def _seconds(env: Mapping[str, str], name: str, *, default: float) -> float:
    return _positive(env, name, default=default, unit="a number of seconds")


def _optional_number(env: Mapping[str, str], name: str, *, what: str) -> float | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise SetupError(f"{name}={raw!r}: give {what} above 0", field=name)
    return value
