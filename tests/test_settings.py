"""core/settings.py: every variable read once, each destination rule decided once (a pure function of a mapping)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from core.errors import SetupError
from core.settings import Settings, hub_cache_path, mount_at

BUCKET = {"BUCKET_ENDPOINT_URL": "http://minio:9000", "BUCKET_ACCESS_KEY_ID": "key-id-1",
          "BUCKET_SECRET_ACCESS_KEY": "secret-key-1"}


def test_the_hf_cache_is_HF_HUB_CACHE_else_HF_HOME_hub_else_the_default(tmp_path):
    assert Settings.from_env({"HF_HUB_CACHE": "/c/hub", "HF_HOME": "/h"}).hub_cache == Path("/c/hub")
    assert Settings.from_env({"HF_HOME": "/h"}).hub_cache == Path("/h/hub")
    assert Settings.from_env({"XDG_CACHE_HOME": "/x"}).hub_cache == Path("/x/huggingface/hub")
    assert Settings.from_env({}).hub_cache == Path("~/.cache/huggingface/hub").expanduser()
    # the same rule for the one caller without a Settings (a job's family lookup while it is parsed)
    for env in ({"HF_HUB_CACHE": "/c/hub", "HF_HOME": "/h"}, {"HF_HOME": "/h"}, {"XDG_CACHE_HOME": "/x"}, {}):
        assert hub_cache_path(env) == Settings.from_env(env).hub_cache, env
    # a Settings made in code with only hf_home (tests, the UI) still reads HF_HOME/hub
    made = Settings(trainer_venv=tmp_path / "venv", data_root=tmp_path / "data", hf_home=tmp_path / "hf")
    assert made.hub_cache == tmp_path / "hf" / "hub"
    assert dataclasses.replace(Settings.from_env({}), hf_home=tmp_path / "hf").hub_cache == tmp_path / "hf" / "hub"


def test_the_jobs_token_wins_over_HF_TOKEN():
    endpoint = Settings.from_env({"HF_TOKEN": "hf_endpoint_token"})
    assert endpoint.token("hf_job_token") == "hf_job_token"
    assert endpoint.token(None) == endpoint.token("") == "hf_endpoint_token"
    assert Settings.from_env({}).token(None) is None
    assert "hf_endpoint_token" not in repr(endpoint)


def test_the_bucket_and_its_keys():
    settings = Settings.from_env({**BUCKET, "BUCKET_NAME": " loras "})
    assert settings.bucket_name == "loras" and settings.s3.has_keys
    assert settings.s3.endpoint_url == "http://minio:9000" and settings.missing_bucket_vars == []
    assert "secret-key-1" not in repr(settings)
    bare = Settings.from_env({"BUCKET_ENDPOINT_URL": "http://minio:9000"})
    assert bare.bucket_name is None and not bare.s3.has_keys
    assert bare.missing_bucket_vars == ["BUCKET_ACCESS_KEY_ID", "BUCKET_SECRET_ACCESS_KEY"]


def test_the_worker_endpoints_policy_variables():
    settings = Settings.from_env({"JOB_DEFAULT_LORA_RANK": " 16 ", "JOB_DEFAULT_MODEL": "",
                                  "EXECUTION_TIMEOUT_S": "900", "CUDA_VISIBLE_DEVICES": ""})
    assert settings.job_defaults == (("JOB_DEFAULT_LORA_RANK", "16"),)  # an empty one is not set
    assert settings.execution_timeout_s == 900.0 and settings.cuda_visible_devices == ""
    assert Settings.from_env({}).execution_timeout_s is None
    for bad in ("ten minutes", "0", "-5"):
        with pytest.raises(SetupError) as caught:
            Settings.from_env({"EXECUTION_TIMEOUT_S": bad})
        assert caught.value.field == "EXECUTION_TIMEOUT_S" and repr(bad) in caught.value.message


def test_below_the_faces_only_settings_reads_the_environment():
    """Settings.from_env is the one reading; core/__main__.py is a face, and the trainer's allow-listed environment
    (core/training/trainer.py, core/adapters/trainer_env.py) starts from the process's own."""
    root = Path(__file__).resolve().parent.parent
    allowed = {"core/settings.py", "core/__main__.py", "core/training/trainer.py", "core/adapters/trainer_env.py"}
    readers = re.compile(r"\bos\.environ\b|\bgetenv\(|\benviron\[")
    found = [f"{rel}:{number}" for path in sorted((root / "core").rglob("*.py"))
             if (rel := path.relative_to(root).as_posix()) not in allowed
             for number, line in enumerate(path.read_text().splitlines(), 1) if readers.search(line)]
    assert found == [], "take a Settings (or what it built) instead"


# -- the volume: a network filesystem mounted at RUNPOD_VOLUME, not a folder that happens to be there ---------------

ROOT_OVERLAY = ("1234 1200 0:123 / / rw,relatime master:1 - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w\n"
                "1240 1234 0:130 / /dev/shm rw,nosuid,nodev - tmpfs shm rw,size=65536k\n")


def mounted(path: Path, fstype: str, source: str = "server:/export") -> str:
    """A container's mount table with `path` mounted as `fstype` (the mount point escaped as the kernel does)."""
    point = str(path).replace(" ", "\\040")
    return ROOT_OVERLAY + f"1300 1234 0:150 /vol-1 {point} rw,nosuid,relatime shared:300 - {fstype} {source} rw\n"


def test_a_network_filesystem_mounted_at_the_volume_is_the_persistent_volume(tmp_path):
    volume = tmp_path / "runpod volume"
    volume.mkdir()
    env = {"RUNPOD_VOLUME": str(volume), "DATA_DIR": str(tmp_path / "data")}
    for fstype in ("fuse.mfs", "nfs4", "cifs", "ceph"):
        settings = Settings.from_env(env, mountinfo=mounted(volume, fstype))
        assert settings.volume_dir == volume and settings.storage.persistent, fstype
        assert settings.storage.line() == (f"Storage: {volume} is a network volume ({fstype}, persistent): the cache "
                                           "and kept outputs go there")
    assert mount_at(volume, mountinfo=mounted(volume, "fuse.mfs")) == "fuse.mfs"
    assert mount_at(Path("/"), mountinfo=ROOT_OVERLAY) == "overlay"


def test_a_bare_folder_or_a_local_disk_mount_is_not_a_network_volume(tmp_path):
    volume = tmp_path / "runpod-volume"
    (volume / "huggingface-cache").mkdir(parents=True)
    env = {"RUNPOD_VOLUME": str(volume), "DATA_DIR": str(tmp_path / "data")}
    bare = Settings.from_env(env, mountinfo=ROOT_OVERLAY)  # a folder of the container's own disk
    assert bare.volume_dir is None and bare.storage.kind == "folder"
    assert bare.storage.line() == (f"Storage: no network volume: {volume} is a folder of the container's disk, not a "
                                   "network volume; outputs not published are lost when the pod or worker stops")
    # RunPod's model cache: a mount of the host's disk, no network volume
    local = Settings.from_env(env, mountinfo=mounted(volume, "ext4", "/dev/nvme0n1p1"))
    assert local.volume_dir is None and local.storage.kind == "local"
    assert "mount of this machine's disk (ext4), not a network volume" in local.storage.line()
    # a network volume mounted elsewhere (or only below the path) does not make the path one
    for table in (mounted(tmp_path / "elsewhere", "nfs4"), mounted(volume / "huggingface-cache", "nfs4"), ""):
        assert Settings.from_env(env, mountinfo=table).volume_dir is None
    # RunPod's cached models are read from the folder either way
    assert bare.hub_cache == local.hub_cache == volume / "huggingface-cache" / "hub"
    assert Settings.from_env({**env, "HF_HOME": str(tmp_path / "hf")}, mountinfo=ROOT_OVERLAY).hub_cache == (
        tmp_path / "hf" / "hub")
    nothing = Settings.from_env({"RUNPOD_VOLUME": str(tmp_path / "none")}, mountinfo=ROOT_OVERLAY)
    assert nothing.storage.kind == "absent" and nothing.storage.line().startswith("Storage: no network volume; ")


def test_VOLUME_DIR_is_honoured_as_given(tmp_path):
    given = tmp_path / "kept"
    settings = Settings.from_env({"VOLUME_DIR": str(given)}, mountinfo=ROOT_OVERLAY)
    assert settings.volume_dir == given and settings.storage.persistent
    assert settings.storage.line().startswith(f"Storage: {given} (VOLUME_DIR) is not a network volume mount: kept "
                                              "outputs and the cache go there as asked")
    on_nfs = Settings.from_env({"VOLUME_DIR": str(given)}, mountinfo=mounted(given, "nfs"))
    assert on_nfs.storage.line().startswith(f"Storage: {given} (VOLUME_DIR) is a network volume (nfs, persistent)")
