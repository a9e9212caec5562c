"""Local model folders a job may load, checked before any download or GPU minute.

A base model, its VAE or a caption model may be a Hub repo id or a local folder. A local folder is an absolute path
without '..' that holds a model (its model_index.json or config.json). On the worker (jobs from an API caller) it must
also sit under a model root: the Hugging Face cache, DATA_DIR/models (the demo model's home) or a MODELS_ROOT folder,
and never inside a job's folder (another job's output is not this job's base model). A URL is never a model here.
The UI and the command line run their own user's jobs on their own machine: any model folder there.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from core.adapters import is_hub_model_id
from core.errors import SpecError
from core.settings import Settings
from core.spec import JobSpec

MODEL_MARKERS = ("model_index.json", "config.json")
"""A diffusers pipeline folder, or one model's folder (a VAE, a caption model)."""


def model_roots(settings: Settings) -> list[Path]:
    """The folders a worker job may load a local model from."""
    return [settings.hub_cache, settings.data_root / "models", *settings.model_roots]


def check_local_models(spec: JobSpec, settings: Settings, *, any_folder: bool) -> None:
    """Every local model the job names is a model folder it may load (`any_folder`: anywhere, for the UI and the
    command line; else under a model root). A SpecError naming the field otherwise."""
    named = {"config.model_name": spec.config.get("pretrained_model_name_or_path"),
             "config.pretrained_vae_model_name_or_path": spec.config.get("pretrained_vae_model_name_or_path")}
    if spec.captioning is not None:
        named["captioning.model"] = spec.captioning.model_id
    for field, value in named.items():
        if isinstance(value, str) and value.strip():
            local_model(value.strip(), settings=settings, field=field, any_folder=any_folder)


def local_model(value: str, *, settings: Settings, field: str, any_folder: bool) -> Path | None:
    """None for a Hub repo id; the folder for a local model this job may load; SpecError naming `field` else."""
    if "://" in value:
        raise SpecError(f"{value!r} is a URL; give a Hub repo id ('org/name') or a local model folder", field=field)
    path = PurePosixPath(value)
    if not path.is_absolute() and is_hub_model_id(value):
        return None
    if not path.is_absolute() or ".." in path.parts:
        raise SpecError(f"{value!r} is neither a Hub repo id ('org/name') nor an absolute path without '..' to a "
                        "local model folder", field=field)
    folder = Path(value).resolve()
    if not any((folder / marker).is_file() for marker in MODEL_MARKERS):
        raise SpecError(f"{value} is no model folder (it holds neither {' nor '.join(MODEL_MARKERS)})", field=field)
    if any_folder:
        return folder
    jobs = (settings.data_root / "jobs").resolve()
    roots = [root.resolve() for root in model_roots(settings)]
    if folder.is_relative_to(jobs) or not any(folder.is_relative_to(root) for root in roots):
        raise SpecError(f"{value} is outside the folders this endpoint loads models from "
                        f"({', '.join(str(root) for root in roots)}; MODELS_ROOT adds more); a job's own outputs "
                        "are never another job's model", field=field)
    return folder
