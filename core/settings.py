"""Every environment variable the project reads, read in one place by a pure function (`Settings.from_env`).

Besides the machine's folders and limits, Settings holds the endpoint's destinations and credentials, each decided
by one rule here: the bucket (BUCKET_NAME) and its S3 settings (`s3`, BUCKET_* else AWS_*), the default Hub token
(HF_TOKEN; `token()` lets a job's own win), the Hugging Face cache (`hub_cache`: HF_HUB_CACHE, else HF_HOME/hub,
else huggingface_hub's default), and the worker endpoint's job policy (JOB_DEFAULT_*, EXECUTION_TIMEOUT_S).
Two readings happen at call time, here too: the Hub's address (HF_ENDPOINT, `hub_endpoint`), since a process may be
pointed at another Hub (a mirror, the tests' local server) after its Settings were read; and the HF cache for a
caller that has no Settings (`hub_cache_path`, the same rule as `Settings.hub_cache`)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from core.errors import SetupError
from core.events import WEBHOOK_EVENTS

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TABLES_DIR = PROJECT_ROOT / "core" / "data"
"""Tables generated from SimpleTuner and the Hub (flags, model ids, recipes, licenses), committed."""
TOOLS_DIR = PROJECT_ROOT / "tools"
"""Scripts that run in the trainer env."""
RUNPOD_VOLUME = Path("/runpod-volume")
"""Where RunPod mounts a network volume on a serverless worker; the variable RUNPOD_VOLUME names another path."""
MOUNTINFO = Path("/proc/self/mountinfo")
"""The kernel's table of this process's mounts: how a network volume is told from a bare folder."""
NETWORK_FILESYSTEMS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "lustre", "gpfs",
                                 "beegfs", "9p", "virtiofs", "fuse", "fuseblk"})
"""Filesystem types of storage that lives off this machine (plus every `fuse.*`, e.g. MooseFS's fuse.mfs)."""
HF_CACHE_FOLDER = "huggingface-cache"
"""The Hugging Face cache's folder on the volume (HF_HOME), where RunPod puts its cached models too."""
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
DEFAULT_REGION = "us-east-1"
KEY_VARS = "BUCKET_ACCESS_KEY_ID and BUCKET_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
BUCKET_VARS = ("BUCKET_ENDPOINT_URL", "BUCKET_ACCESS_KEY_ID", "BUCKET_SECRET_ACCESS_KEY")
"""The endpoint's bucket variables (RunPod's names): with BUCKET_NAME, the endpoint's own bucket."""
JOB_DEFAULT_VARS = {
    "JOB_DEFAULT_MODEL": "pretrained_model_name_or_path",
    "JOB_DEFAULT_RESOLUTION": "resolution",
    "JOB_DEFAULT_LORA_RANK": "lora_rank",
    "JOB_DEFAULT_MAX_TRAIN_STEPS": "max_train_steps",
    "JOB_DEFAULT_LEARNING_RATE": "learning_rate",
}
"""Endpoint-wide defaults for a job's config (the RunPod Hub presets set them) -> the SimpleTuner flag each fills."""
EXECUTION_TIMEOUT_VAR = "EXECUTION_TIMEOUT_S"
SECRET_ENV_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "BUCKET_ACCESS_KEY_ID", "BUCKET_SECRET_ACCESS_KEY",
                   "RUNPOD_AI_API_KEY", "RUNPOD_API_KEY", "UI_PASSWORD", "WEBHOOK_SECRET", "WANDB_API_KEY")
"""The endpoint's variables that hold a secret. AWS_* names that say token/secret/key count too (core/secrets.py)."""
URL_ENV_VARS = ("BUCKET_ENDPOINT_URL", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "HF_ENDPOINT", "WEBHOOK_URL")
"""Variables holding URLs whose credentials (userinfo, signed query) are secrets."""


def _flag(value: str | None, default: bool = False) -> bool:
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class S3Config:
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    region: str = DEFAULT_REGION

    @property
    def has_keys(self) -> bool:
        return bool(self.access_key_id and self.secret_access_key)

    @property
    def secrets(self) -> list[str | None]:
        """Values no message may carry."""
        return [self.secret_access_key, self.session_token, self.access_key_id]

    @property
    def where(self) -> str:
        return self.endpoint_url or "AWS S3"


def s3_config(env: Mapping[str, str]) -> S3Config:
    """S3 settings from the environment: endpoint BUCKET_ENDPOINT_URL (else AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL),
    keys BUCKET_ACCESS_KEY_ID / BUCKET_SECRET_ACCESS_KEY (AWS_* ones first when no BUCKET_ENDPOINT_URL is set),
    AWS_SESSION_TOKEN, region BUCKET_REGION, else the one in the endpoint's host name (AWS, Backblaze, DigitalOcean
    Spaces, as runpod's rp_upload reads it), else AWS_REGION / AWS_DEFAULT_REGION, else us-east-1."""
    def get(*names: str) -> str | None:
        for name in names:
            value = (env.get(name) or "").strip()
            if value:
                return value
        return None

    if get("BUCKET_ENDPOINT_URL"):
        key_names = ("BUCKET_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID")
        secret_names = ("BUCKET_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY")
    else:
        key_names = ("AWS_ACCESS_KEY_ID", "BUCKET_ACCESS_KEY_ID")
        secret_names = ("AWS_SECRET_ACCESS_KEY", "BUCKET_SECRET_ACCESS_KEY")
    endpoint = get("BUCKET_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
    return S3Config(
        endpoint_url=endpoint,
        access_key_id=get(*key_names),
        secret_access_key=get(*secret_names),
        session_token=get("AWS_SESSION_TOKEN"),
        region=get("BUCKET_REGION") or region_of(endpoint or "") or get("AWS_REGION", "AWS_DEFAULT_REGION")
        or DEFAULT_REGION,
    )


def region_of(endpoint: str) -> str | None:
    """The region in an AWS/Backblaze (`s3.<region>.`) or DigitalOcean Spaces URL; None for any other."""
    match = re.search(r"[./]s3\.(?!amazonaws\.)([a-z0-9-]+)\.", endpoint) or re.search(
        r"//([a-z0-9-]+)\.digitaloceanspaces\.com", endpoint)
    return match.group(1) if match else None


def hub_endpoint(env: Mapping[str, str] | None = None) -> str:
    """The Hub to talk to: HF_ENDPOINT (a mirror, or the local test server), else huggingface.co. Read at call time
    (this process's environment when `env` is None): the one variable a process may change after its Settings."""
    env = os.environ if env is None else env
    return (env.get("HF_ENDPOINT") or DEFAULT_HF_ENDPOINT).strip().rstrip("/")


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
    system_memory_gb: float | None = None
    """SYSTEM_MEMORY_GB, else /proc/meminfo's MemTotal: the machine's RAM in GB (GiB), which CPU quantization and
    RamTorch offload need (core/training/gpu_fit.py); the variable lets a dry run plan for another machine."""
    gpu_count: int | None = None
    """GPU_COUNT: how many GPUs a dry run on a machine without a GPU plans for (a pod with several); ignored where
    GPUs are visible, whose count is the truth (core/adapters/gpus.py)."""
    gpu_price_per_hour: float | None = None
    """GPU_PRICE_PER_HOUR: the endpoint's price per GPU-hour; a dry run then estimates the job's cost."""
    volume_dir: Path | None = None
    """VOLUME_DIR: a network volume where outputs that could not be published are kept (and the cache's default
    place); default RUNPOD_VOLUME (/runpod-volume) when a network volume is mounted there (`storage`)."""
    storage: Storage | None = None
    """What RUNPOD_VOLUME (or VOLUME_DIR) is: a network volume mount, a mount of this machine's disk, a bare folder
    or nothing (`volume_storage`); its `line()` is the start-up log's."""
    deadline_margin_s: float = 600.0
    """DEADLINE_MARGIN_S: in this last part of a job's time, training stops at its next checkpoint
    (core/training/deadline.py)."""
    cache_dir: Path | None = None
    """CACHE_DIR: the cache of staged datasets, text embeddings and VAE latents (core/cache/store.py); default
    <volume>/trainer-cache with a network volume, else DATA_DIR/cache."""
    cache_max_gb: float = 100.0
    """CACHE_MAX_GB: the cache's size limit; the least recently used entries go first."""
    model_roots: tuple[Path, ...] = ()
    """MODELS_ROOT: folders (separated by ':') a worker job may load a local model from, besides the Hugging Face
    cache and DATA_DIR/models (core/models/local.py)."""
    cache_min_free_gb: float | None = None
    """CACHE_MIN_FREE_GB: free space the cache always leaves on its disk (entries go, or are not stored, to keep it);
    default a tenth of the disk (core/cache/store.py)."""
    hf_hub_cache: Path | None = None
    """HF_HUB_CACHE; read the cache's folder through `hub_cache`."""
    xdg_cache_home: Path | None = None
    """XDG_CACHE_HOME: where huggingface_hub's default cache is when neither HF_HUB_CACHE nor HF_HOME is set."""
    bucket_name: str | None = None
    """BUCKET_NAME: the endpoint's bucket, for a job whose storage names none (and the worker's default
    destination)."""
    s3: S3Config = field(default_factory=S3Config)
    """The S3 endpoint and keys (BUCKET_* else AWS_*, `s3_config`)."""
    job_defaults: tuple[tuple[str, str], ...] = ()
    """The JOB_DEFAULT_* variables that are set, (name, value), as given: core/endpoint.py turns them into flags."""
    execution_timeout_s: float | None = None
    """EXECUTION_TIMEOUT_S: the worker endpoint's execution timeout; every job's timeout_s stays below it."""
    cuda_visible_devices: str | None = None
    """CUDA_VISIBLE_DEVICES as set (an empty value hides every GPU)."""
    webhook_url: str | None = None
    """WEBHOOK_URL: the endpoint's webhook, for every job that names none of its own (core/publishing/webhook.py)."""
    webhook_secret: SecretStr | None = None
    """WEBHOOK_SECRET: `whsec_<base64 key>`, which signs the endpoint's webhook deliveries."""
    webhook_events: tuple[str, ...] = WEBHOOK_EVENTS
    """WEBHOOK_EVENTS: the events the endpoint's webhook is sent, separated by commas (default all)."""
    wandb_api_key: SecretStr | None = None
    """WANDB_API_KEY: set, SimpleTuner also reports to Weights & Biases (core/training/config.py); unset, never."""
    secret_env: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    """The variables that may hold a secret (SECRET_ENV_VARS, URL_ENV_VARS, AWS_*), as set: core/secrets.py's
    job_secrets hides their values."""

    @property
    def trainer_python(self) -> Path:
        return self.trainer_venv / "bin" / "python"

    @property
    def trainer_bin(self) -> Path:
        return self.trainer_venv / "bin"

    @property
    def hub_cache(self) -> Path:
        """The Hugging Face hub cache, the one rule: HF_HUB_CACHE, else HF_HOME/hub, else huggingface_hub's default
        (XDG_CACHE_HOME/huggingface/hub, ~/.cache/huggingface/hub)."""
        if self.hf_hub_cache:
            return self.hf_hub_cache
        if self.hf_home:
            return self.hf_home / "hub"
        return (self.xdg_cache_home or Path("~/.cache").expanduser()) / "huggingface" / "hub"

    def token(self, job_token: SecretStr | str | None = None) -> str | None:
        """The Hub token a job uses, the one rule: its own (hub.token) wins over the endpoint's HF_TOKEN."""
        if isinstance(job_token, SecretStr):
            job_token = job_token.get_secret_value()
        if job_token:
            return job_token
        return self.hf_token.get_secret_value() if self.hf_token else None

    @property
    def missing_bucket_vars(self) -> list[str]:
        """The BUCKET_VARS (RunPod's bucket endpoint and keys) that are not set."""
        given = dict(self.secret_env)
        return [name for name in BUCKET_VARS if not given.get(name)]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, mountinfo: str | None = None) -> Settings:
        """`mountinfo`: the mount table's text (default this process's, MOUNTINFO), which tells a network volume."""
        env = os.environ if env is None else env
        token = env.get("HF_TOKEN") or None
        dataset_root = env.get("DATASET_ROOT")
        storage = volume_storage(env, mountinfo=read_mountinfo() if mountinfo is None else mountinfo)
        return cls(
            trainer_venv=Path(env.get("TRAINER_VENV") or PROJECT_ROOT / ".venv-trainer").absolute(),
            data_root=Path(env.get("DATA_DIR") or PROJECT_ROOT / "data").absolute(),
            device=(env.get("TRAINER_DEVICE") or "auto").strip().lower(),
            hf_token=SecretStr(token) if token else None,
            allow_private_urls=_flag(env.get("ALLOW_PRIVATE_URLS")),
            dataset_root=Path(dataset_root).absolute() if dataset_root else None,
            online=_flag(env.get("TRAINER_ONLINE")),
            hf_home=_hf_home(env),
            download_stall_s=_seconds(env, "DOWNLOAD_STALL_S", default=60.0),
            gpu_memory_gb=_optional_number(env, "GPU_MEMORY_GB", what="a number of GB"),
            system_memory_gb=_optional_number(env, "SYSTEM_MEMORY_GB", what="a number of GB") or machine_memory_gb(),
            gpu_count=_optional_count(env, "GPU_COUNT", what="a whole number of GPUs"),
            gpu_price_per_hour=_optional_number(env, "GPU_PRICE_PER_HOUR", what="a price per GPU-hour"),
            volume_dir=storage.path if storage.persistent else None,
            storage=storage,
            deadline_margin_s=_seconds(env, "DEADLINE_MARGIN_S", default=600.0),
            cache_dir=Path(env["CACHE_DIR"]).absolute() if (env.get("CACHE_DIR") or "").strip() else None,
            cache_max_gb=_positive(env, "CACHE_MAX_GB", default=100.0),
            cache_min_free_gb=_optional_number(env, "CACHE_MIN_FREE_GB", what="a number of GB"),
            model_roots=tuple(Path(part).absolute() for part in (env.get("MODELS_ROOT") or "").split(os.pathsep)
                              if part.strip()),
            hf_hub_cache=_path(env, "HF_HUB_CACHE"),
            xdg_cache_home=_path(env, "XDG_CACHE_HOME"),
            bucket_name=(env.get("BUCKET_NAME") or "").strip() or None,
            s3=s3_config(env),
            job_defaults=tuple((var, env[var].strip()) for var in JOB_DEFAULT_VARS if (env.get(var) or "").strip()),
            execution_timeout_s=_optional_number(env, EXECUTION_TIMEOUT_VAR, what="a number of seconds"),
            cuda_visible_devices=env.get("CUDA_VISIBLE_DEVICES"),
            webhook_url=(env.get("WEBHOOK_URL") or "").strip() or None,
            webhook_secret=SecretStr(secret) if (secret := (env.get("WEBHOOK_SECRET") or "").strip()) else None,
            webhook_events=_webhook_events(env),
            wandb_api_key=SecretStr(key) if (key := (env.get("WANDB_API_KEY") or "").strip()) else None,
            secret_env=tuple((name, value) for name, value in env.items()
                             if value and (name in SECRET_ENV_VARS or name in URL_ENV_VARS
                                           or name.startswith("AWS_"))),
        )


def _webhook_events(env: Mapping[str, str]) -> tuple[str, ...]:
    raw = (env.get("WEBHOOK_EVENTS") or "").strip()
    if not raw:
        return WEBHOOK_EVENTS
    names = tuple(dict.fromkeys(part.strip().lower() for part in raw.split(",") if part.strip()))
    unknown = [name for name in names if name not in WEBHOOK_EVENTS]
    if unknown or not names:
        raise SetupError(f"WEBHOOK_EVENTS={raw!r}: name events of {', '.join(WEBHOOK_EVENTS)}, separated by commas",
                         field="WEBHOOK_EVENTS")
    return names


def hub_cache_path(env: Mapping[str, str] | None = None) -> Path:
    """The Hugging Face hub cache of `env` (this process's environment when None) by Settings.hub_cache's rule, for
    a caller without a Settings: a job's family lookup while its JSON is parsed (core/simpletuner/families.py), a
    base model's licence looked up without one (core/publishing/license.py)."""
    env = os.environ if env is None else env
    return Settings(trainer_venv=Path(), data_root=Path(), hf_hub_cache=_path(env, "HF_HUB_CACHE"),
                    hf_home=_hf_home(env), xdg_cache_home=_path(env, "XDG_CACHE_HOME")).hub_cache


def _path(env: Mapping[str, str], name: str) -> Path | None:
    given = (env.get(name) or "").strip()
    return Path(given).expanduser().absolute() if given else None


@dataclass(frozen=True)
class Storage:
    """The volume's place and what is there. kind: "network" (a network filesystem mounted there: persistent),
    "local" (a mount of this machine's disk, as RunPod's model cache), "folder" (a folder of the container's own
    disk), "absent"; `given`: VOLUME_DIR named it (kept outputs go there whatever it is)."""

    path: Path
    kind: str
    fstype: str | None = None
    given: bool = False

    @property
    def persistent(self) -> bool:
        """Outputs kept here outlive the pod or worker: a network volume, or the folder VOLUME_DIR names."""
        return self.kind == "network" or self.given

    def line(self) -> str:
        """The start-up log's line: which storage outlives the pod."""
        name = f"{self.path} (VOLUME_DIR)" if self.given else str(self.path)
        if self.kind == "network":
            return (f"Storage: {name} is a network volume ({self.fstype}, persistent): the cache and kept outputs "
                    "go there")
        if self.given:
            what = "a mount of this machine's disk" if self.kind == "local" else "not a network volume mount"
            return (f"Storage: {name} is {what}: kept outputs and the cache go there as asked, and last as long as "
                    "that disk does")
        seen = {"local": f"{name} is a mount of this machine's disk ({self.fstype}), not a network volume",
                "folder": f"{name} is a folder of the container's disk, not a network volume"}.get(self.kind, "")
        return (f"Storage: no network volume{': ' + seen if seen else ''}; outputs not published are lost when the "
                "pod or worker stops")


def read_mountinfo(path: Path = MOUNTINFO) -> str:
    """This process's mount table; empty where there is none (not Linux), so nothing counts as a network volume."""
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def mount_at(path: Path, *, mountinfo: str) -> str | None:
    """The filesystem type of the mount whose mount point is exactly `path` (the last one: a later mount hides an
    earlier); None when `path` is no mount point, only a folder inside another mount."""
    found = None
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if " - " not in line or len(fields) < 5:
            continue
        after = line.split(" - ", 1)[1].split(" ")
        # Spaces and other odd characters in a mount point are written as octal escapes (\040).
        point = re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), fields[4])
        if Path(point) == path and after and after[0]:
            found = after[0]
    return found


def is_network_filesystem(fstype: str) -> bool:
    return fstype in NETWORK_FILESYSTEMS or fstype.startswith("fuse.")


def volume_storage(env: Mapping[str, str], *, mountinfo: str) -> Storage:
    """VOLUME_DIR when set (honoured as given), else RUNPOD_VOLUME (default /runpod-volume), and what is there: a
    network volume only when a network filesystem is mounted at that very path. RunPod mounts /runpod-volume for its
    model cache even without a network volume, and a bare folder there is the container's disk: neither persists."""
    given = (env.get("VOLUME_DIR") or "").strip()
    path = Path(given).absolute() if given else runpod_volume(env)
    fstype = mount_at(path, mountinfo=mountinfo)
    if fstype is not None:
        kind = "network" if is_network_filesystem(fstype) else "local"
    else:
        kind = "folder" if path.is_dir() else "absent"
    return Storage(path=path, kind=kind, fstype=fstype, given=bool(given))


def runpod_volume(env: Mapping[str, str]) -> Path:
    """RUNPOD_VOLUME, default /runpod-volume."""
    return Path((env.get("RUNPOD_VOLUME") or "").strip() or RUNPOD_VOLUME).absolute()


def _hf_home(env: Mapping[str, str]) -> Path | None:
    """HF_HOME; else the volume's huggingface-cache folder when it exists (RunPod's cached models are there, with
    or without a network volume), as start.sh decides for the image."""
    given = (env.get("HF_HOME") or "").strip()
    if given:
        return Path(given).absolute()
    on_volume = runpod_volume(env) / HF_CACHE_FOLDER
    return on_volume if on_volume.is_dir() else None


def _positive(env: Mapping[str, str], name: str, *, default: float, unit: str = "a number") -> float:
    raw = (env.get(name) or "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise SetupError(f"{name}={raw!r}: give {unit} above 0", field=name)
    return value


def machine_memory_gb(meminfo: Path = Path("/proc/meminfo")) -> float | None:
    """This machine's RAM in GB (GiB) from MemTotal (kB); None where there is no /proc/meminfo."""
    try:
        text = meminfo.read_text()
    except OSError:
        return None
    found = re.search(r"^MemTotal:\s+(\d+)\s*kB", text, re.MULTILINE)
    return round(int(found.group(1)) / 1024 ** 2, 2) if found else None


def _seconds(env: Mapping[str, str], name: str, *, default: float) -> float:
    return _positive(env, name, default=default, unit="a number of seconds")


def _optional_count(env: Mapping[str, str], name: str, *, what: str) -> int | None:
    raw = (env.get(name) or "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise SetupError(f"{name}={raw!r}: give {what}, 1 or more", field=name)
    return int(raw)


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
