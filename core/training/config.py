"""Job -> SimpleTuner's config.json and multidatabackend.json. A pure function: no I/O, golden-file tested.

What the user left out gets a default that trains; what the user set always wins, except the paths this job owns
(output, caches, dataloader and webhook files), which live in the job's directory whatever the job says. On CUDA the
defaults are SimpleTuner's recipe for the model family on this GPU (core/training/gpu_fit.py); on CPU, settings that
train
without CUDA.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.adapters import GpuFacts
from core.dataset import MAIN_FOLDER, Concept, Subsets
from core.errors import SpecError
from core.jobdir import JobDir
from core.simpletuner import FILE_CONTENT, INLINE_JSON, classify, edit_inputs, flavour_settings, hub_ids, owned_flags
from core.spec import CACHE_KEY, DATA_KEYS, PLACEHOLDER, JobSpec, relative_data_dir, simpletuner_flags
from core.training.gpu_fit import VALIDATION_SETTINGS, GpuPlan, check_fit, plan_gpu
from core.training.memory_plan import find_params
from core.training.sample_pairs import SAMPLES_BACKEND, SampleDataset
from core.training.samples import LIBRARY_FILE, validation_size, with_samples
from core.training.subsets import eval_flags, subset_backends
from core.training.video import default_num_frames, is_video_family, shorthand_block, video_settings

DEFAULT_RESOLUTION = 1024
DEFAULT_RESOLUTION_TYPE = "pixel"
DEFAULT_MINIMUM_IMAGE_SIZE = 256
"""The built backend's minimum_image_size is min(this, resolution); SimpleTuner's own default is none."""
DEFAULT_STEPS = 1000
"""When a job gives neither max_train_steps nor num_train_epochs."""
DEFAULT_TRAIN_BATCH_SIZE = 1
CONDITIONING_TYPE = "reference_strict"
"""Edit pairs: each input is cropped and resized exactly as its target (SimpleTuner copies the target's bucket
metadata to the input), so the pair stays aligned."""
PAIRED_KEYS = ("resolution", "resolution_type", "minimum_image_size", "maximum_image_size", "target_downsample_size",
               "crop", "crop_style", "crop_aspect", "crop_aspect_buckets")
"""Image backend settings an input backend repeats, so both sides of a pair are prepared alike."""

RUNS_DIR = "runs"
"""The TensorBoard event files' folder in a run's output (core/training/tensorboard.py)."""
PROJECT_NAME = "lora-training"
"""The trackers' project name of a job that publishes to no Hub repo."""

# Paths this job owns: a job cannot point them elsewhere (nothing is written outside the job's directory). The first
# four are set to the job's folders; the others (SimpleTuner's folders, derived from its flag list by
# core/simpletuner/flags.py) are left to SimpleTuner's defaults, which are relative to its working directory in the job.
OWNED_FLAGS = ("output_dir", "data_backend_config", "webhook_config", "logging_dir",
               *(name for name in owned_flags(simpletuner_flags())
                 if name not in ("output_dir", "data_backend_config", "webhook_config", "logging_dir")))


@dataclass(frozen=True)
class TrainerFiles:
    config: dict[str, Any]
    """config.json: native flags with their leading '--', as SimpleTuner reads them."""
    backends: list[dict[str, Any]]
    """multidatabackend.json."""
    inline_files: dict[str, Any] = field(default_factory=dict)
    """JSON files a job gave inline (a LyCORIS config, a prompt library): file name in the config folder -> content."""
    plan: GpuPlan | None = None
    """On CUDA: the recipe, precision and fit for the GPU (core/training/gpu_fit.py)."""
    warnings: list[str] = field(default_factory=list)
    """What was changed to fit the GPU (samples during training turned off: core/training/samples.py)."""

    def write(self, job: JobDir, *, webhook_url: str) -> Path:
        """Write the files into the job's config folder; return config.json's path."""
        job.config.mkdir(parents=True, exist_ok=True)
        for name, content in self.inline_files.items():
            (job.config / name).write_text(json.dumps(content, indent=2))
        (job.config / "multidatabackend.json").write_text(json.dumps(self.backends, indent=2))
        webhooks = [{"webhook_type": "raw", "callback_url": webhook_url, "log_level": "info"}]
        (job.config / "webhooks.json").write_text(json.dumps(webhooks, indent=2))
        path = job.config / "config.json"
        path.write_text(json.dumps(self.config, indent=2))
        return path

    def to_dict(self) -> dict[str, Any]:
        return {"config.json": self.config, "multidatabackend.json": self.backends}


def tracker_flags(spec: JobSpec, *, job: JobDir, wandb: bool = False) -> dict[str, Any]:
    """Where SimpleTuner reports its metrics, unless the job says otherwise: Weights & Biases only when `wandb` (an
    explicit choice: WANDB_API_KEY set), else nowhere (the project writes the TensorBoard files itself:
    core/training/tensorboard.py). The project is a plain name (the Hub repo's, else PROJECT_NAME); the run is the
    job's folder name."""
    project = spec.hub.repo_id.split("/", 1)[1] if spec.hub else PROJECT_NAME
    return {"report_to": "wandb" if wandb else "none", "tracker_project_name": project,
            "tracker_run_name": job.root.name}


def gpu_plan(spec: JobSpec, *, device: str, gpu: GpuFacts | None = None, system_memory_gb: float | None = None,
             hub_cache: Path | None = None, clips: bool | None = None, inputs: int | None = None) -> GpuPlan | None:
    """The GPU plan of a CUDA job (None on CPU); `gpu` None: the GPU's size is unknown (nothing refused). The model's
    size comes from its safetensors headers (a local folder, or its snapshot in `hub_cache`), else the committed
    table. A job the GPU (or `system_memory_gb` of RAM) cannot hold is refused: SpecError naming
    config.base_model_precision (or config.quantize_via), with what would fit. `clips`: whether the staged dataset
    holds clips; None before staging, when a video family is planned for clips of the default length (the plan
    must hold before the model downloads, and a clip costs more than a still). `inputs`: the edit pairs' input images
    per target, whose tokens join the target's in the sequence; None before staging: one for an edit flavour."""
    if device != "cuda":
        return None
    flavour = spec.config.get("model_flavour")
    params = find_params(base_model=spec.base_model, flavour_id=hub_ids(spec.model_family).get(flavour or ""),
                         hub_cache=hub_cache)
    plan = plan_gpu(family=spec.model_family, flavour=flavour, config=spec.config,
                    gpu=gpu or GpuFacts(count=1, memory_gb=None, source="unknown"), params=params,
                    frames=video_frames(spec, clips=clips), system_memory_gb=system_memory_gb,
                    references=reference_images(spec, inputs=inputs))
    check_fit(plan)
    return plan


def reference_images(spec: JobSpec, *, inputs: int | None = None) -> int:
    """Input images per sample whose latents join the target's sequence (an edit flavour's pairs): the staged
    count, else one for an edit flavour of the shorthand dataloader; 0 for any other job."""
    if inputs is not None:
        return inputs
    native = isinstance(spec.dataloader, list)
    return 1 if not native and edit_inputs(spec.model_family, spec.config.get("model_flavour")) else 0


def video_frames(spec: JobSpec, *, clips: bool | None = None) -> int:
    """Frames per sample of the job's video backends (SimpleTuner's `video.num_frames`), 1 for an image job. The
    shorthand counts when it gives a video block (the job says it trains on clips before they are staged), or when
    a video family's dataset holds clips or is not staged yet (`clips` True or None: the default length)."""
    backends = spec.dataloader if isinstance(spec.dataloader, list) else []
    frames = [int((b.get("video") or {}).get("num_frames") or 1) for b in backends
              if b.get("dataset_type") == "video"]
    block = shorthand_block(spec)
    if is_video_family(spec.model_family) and (block or (clips is not False and not frames)):
        frames.append(video_settings(spec, block=block or {}).num_frames)
    return max(frames, default=1)


def _defaults(spec: JobSpec, *, device: str, plan: GpuPlan | None = None) -> dict[str, Any]:
    cuda = device == "cuda"
    recipe = dict(plan.settings) if plan else {}
    rank = spec.config.get("lora_rank", recipe.get("lora_rank", 16))
    alpha = recipe.get("lora_alpha", rank) if "lora_rank" not in spec.config else rank
    steps_given = "max_train_steps" in spec.config or "num_train_epochs" in spec.config
    defaults: dict[str, Any] = {
        "model_type": "lora",
        "lora_type": "standard",
        "lora_rank": rank,
        "lora_alpha": alpha,
        "mixed_precision": "bf16" if cuda else "no",
        "base_model_precision": "no_change",
        "optimizer": "adamw_bf16" if cuda else "torch-adamw",
        "learning_rate": 1e-4,
        "lr_scheduler": "constant",
        "lr_warmup_steps": 0,
        "train_batch_size": DEFAULT_TRAIN_BATCH_SIZE,
        "gradient_accumulation_steps": 1,
        "checkpoint_step_interval": 250,
        "checkpoints_total_limit": 3,
        "resolution": DEFAULT_RESOLUTION,
        "resolution_type": DEFAULT_RESOLUTION_TYPE,
        "seed": 42,
        "push_to_hub": False,
        "use_ema": False,
        "gradient_checkpointing": cuda,
        "vae_batch_size": 4 if cuda else 1,
        "attention_mechanism": "diffusers",
        "disable_benchmark": True,
    }
    if not steps_given:
        defaults["max_train_steps"] = DEFAULT_STEPS
    # SimpleTuner needs exactly one of steps or epochs to lead: 0 means "decided by the other".
    if "max_train_steps" in spec.config and "num_train_epochs" not in spec.config:
        defaults["num_train_epochs"] = 0
    if "num_train_epochs" in spec.config and "max_train_steps" not in spec.config:
        defaults["max_train_steps"] = 0
    if not steps_given:
        defaults["num_train_epochs"] = 0
    validation = {key: recipe.pop(key) for key in VALIDATION_SETTINGS if key in recipe}
    defaults.update(recipe)
    prompt = spec.config.get("validation_prompt") or (spec.trigger_word if cuda else None)
    if prompt:
        defaults.update(validation)
        defaults["validation_prompt"] = prompt
        defaults["validation_steps"] = spec.config.get("checkpoint_step_interval", defaults["checkpoint_step_interval"])
        defaults["validation_resolution"] = validation_size(spec.config.get("resolution", defaults["resolution"]))
    else:
        defaults["validation_disable"] = True
    defaults.update(flavour_settings(spec.model_family, spec.config.get("model_flavour")))
    return defaults


def resolved_defaults(spec: JobSpec, *, plan: GpuPlan | None) -> dict[str, Any]:
    """The resolution and batch settings the trainer config will use, for the preflight (the recipe's on CUDA)."""
    settings = plan.settings if plan else {}
    resolved = {"resolution": settings.get("resolution", DEFAULT_RESOLUTION),
                "resolution_type": settings.get("resolution_type", DEFAULT_RESOLUTION_TYPE),
                "train_batch_size": DEFAULT_TRAIN_BATCH_SIZE}
    if is_video_family(spec.model_family):
        resolved["num_frames"] = default_num_frames(spec, plan=plan)
    return resolved


def _vae_path(spec: JobSpec) -> dict[str, Any]:
    """A local SDXL folder brings its own VAE; otherwise SimpleTuner would fetch madebyollin/sdxl-vae-fp16-fix."""
    model = Path(spec.base_model)
    if spec.model_family == "sdxl" and model.is_absolute() and (model / "vae").is_dir():
        return {"pretrained_vae_model_name_or_path": str(model)}
    return {}


def build_backends(spec: JobSpec, *, images_dir: Path, job: JobDir, device: str, plan: GpuPlan | None = None,
                   clips_dir: Path | None = None, stills: bool = True, inputs_dirs: list[Path] | None = None,
                   sample_dataset: SampleDataset | None = None, processes: int = 1,
                   accumulation: int = 1, concepts: list[Concept] | None = None,
                   subsets: Subsets | None = None) -> list[dict[str, Any]]:
    """multidatabackend.json. `clips_dir`: the staged clips (a video backend reads them; None when the dataset has
    none); `stills`: whether the dataset has images (an image backend over an empty folder stops SimpleTuner);
    `inputs_dirs`: an edit pair dataset's staged input folders (a conditioning backend each, linked to the image
    backend by `conditioning_data`); `sample_dataset`: an edit job's samples dataset (core/training/sample_pairs.py),
    its backends sized for `processes` x `accumulation`; `concepts`: the staged concept folders, an image backend
    each (concept_backends); `subsets`: the dataset's regularisation and held-out images and masks, a backend each
    (core/training/subsets.py)."""
    defaults = resolved_defaults(spec, plan=plan)
    resolution = spec.config.get("resolution", defaults["resolution"])
    on_cpu = {"vae_cache_ondemand": True} if device != "cuda" else {}  # avoids pin_memory() without CUDA
    text_embeds = {"id": "text-embeds", "dataset_type": "text_embeds", "default": True, "type": "local",
                   "cache_dir": str(job.cache / "text")}
    if isinstance(spec.dataloader, list):
        return _native_backends(spec, spec.dataloader, images_dir=images_dir, clips_dir=clips_dir, job=job, plan=plan,
                                on_cpu=on_cpu, text_embeds=text_embeds)
    options = spec.dataloader
    image: dict[str, Any] = {
        "id": "dataset",
        "type": "local",
        "dataset_type": "image",
        "instance_data_dir": str(images_dir),
        "caption_strategy": "textfile",
        "crop": False,
        "resolution": resolution,
        "resolution_type": spec.config.get("resolution_type", defaults["resolution_type"]),
        "minimum_image_size": min(DEFAULT_MINIMUM_IMAGE_SIZE, resolution),
        "repeats": 0,
        "cache_dir_vae": str(job.cache / "vae"),
        **on_cpu,
    }
    if options.shuffle_tags:
        image["caption_shuffle"] = {"enable": True, "split_on": "comma", "position_start": options.keep_tokens,
                                    "count": 1}
    overrides = {key: value for key, value in options.backend_overrides.items() if key != "video"}
    image.update(overrides)
    if inputs_dirs:
        samples = _sample_backends(image, sample_dataset, job=job, processes=processes, accumulation=accumulation,
                                   on_cpu=on_cpu) if sample_dataset else []
        return [image, *_input_backends(image, inputs_dirs, job=job, on_cpu=on_cpu), *samples, text_embeds]
    stills_backends = concept_backends(image, concepts, images_dir=images_dir, job=job) if concepts else [image]
    if clips_dir is None or not is_video_family(spec.model_family):
        # clips for an image family are refused by the preflight
        return [*stills_backends, *subset_backends(image, subsets, job=job, on_cpu=on_cpu), text_embeds]
    video = {**image, "id": "clips", "dataset_type": "video", "instance_data_dir": str(clips_dir),
             "cache_dir_vae": str(job.cache / "vae-clips"),
             "video": video_settings(spec, plan=plan).block()}
    return [*stills_backends, video, text_embeds] if stills else [video, text_embeds]


def concept_backends(image: dict[str, Any], concepts: list[Concept], *, images_dir: Path,
                     job: JobDir) -> list[dict[str, Any]]:
    """One image backend per concept folder (core/dataset/concepts.py), each with its own repeats (SimpleTuner's:
    the passes after the first) and VAE cache; the images of no concept keep the dataloader's repeats."""
    backends = []
    for concept in concepts:
        backend_id = "dataset" if concept.folder == MAIN_FOLDER else f"concept-{concept.folder}"[:64]
        backend = {**image, "id": backend_id, "instance_data_dir": str(images_dir / concept.folder),
                   "cache_dir_vae": str(job.cache / f"vae-{backend_id}")}
        if concept.folder != MAIN_FOLDER or concept.passes > 1:
            backend["repeats"] = concept.repeats
        backends.append(backend)
    return backends


def _input_backends(image: dict[str, Any], folders: list[Path], *, job: JobDir, on_cpu: dict[str, Any],
                    prefix: str = "control") -> list[dict[str, Any]]:
    """One conditioning backend per input folder of an edit pair dataset, linked from the image backend (whose
    `conditioning_data` names them, in input order). No captions of their own: SimpleTuner takes the target's."""
    ids = [prefix if index == 0 else f"{prefix}_{index + 1}" for index in range(len(folders))]
    image["conditioning_data"] = ids[0] if len(ids) == 1 else ids
    return [{"id": backend_id, "type": "local", "dataset_type": "conditioning", "instance_data_dir": str(folder),
             "conditioning_type": CONDITIONING_TYPE, **{key: image[key] for key in PAIRED_KEYS if key in image},
             "cache_dir_vae": str(job.cache / f"vae-{backend_id}"), **on_cpu}
            for backend_id, folder in zip(ids, folders, strict=True)]


def _sample_backends(image: dict[str, Any], dataset: SampleDataset, *, job: JobDir, processes: int,
                     accumulation: int, on_cpu: dict[str, Any]) -> list[dict[str, Any]]:
    """An edit job's samples dataset: an image backend `sample` that is never sampled for training (probability 0,
    one image per batch) and its input backends, prepared and linked as the training's. The training backend stops
    being a validation source (disable_validation), so SimpleTuner's edit validation takes the samples alone.
    Repeats let a bucket of one sample fill a batch on every process (SimpleTuner refuses a bucket smaller than the
    batch size times processes times accumulation)."""
    sample = {key: value for key, value in image.items() if key not in ("conditioning_data", "caption_shuffle")}
    sample.update(id=SAMPLES_BACKEND, instance_data_dir=str(dataset.images), probability=0.0, train_batch_size=1,
                  repeats=max(processes * accumulation - 1, 0), cache_dir_vae=str(job.cache / f"vae-{SAMPLES_BACKEND}"))
    image["disable_validation"] = True
    controls = _input_backends(sample, dataset.inputs, job=job, on_cpu=on_cpu, prefix=f"{SAMPLES_BACKEND}_control")
    for control in controls:
        control["probability"] = 0.0  # SimpleTuner counts conditioning backends into an epoch's batches otherwise
    return [sample, *controls]


def _native_backends(spec: JobSpec, entries: list[dict[str, Any]], *, images_dir: Path, clips_dir: Path | None,
                     job: JobDir, plan: GpuPlan | None, on_cpu: dict[str, Any],
                     text_embeds: dict[str, Any]) -> list[dict[str, Any]]:
    """A native list: its data folders kept inside the staged dataset (a video entry's inside the staged clips), its
    caches in the job's cache folder, a video entry's block completed and checked."""
    backends = [dict(backend) for backend in entries]
    for index, backend in enumerate(backends):
        kind = backend.get("dataset_type", "image")
        data_dir = (clips_dir or images_dir) if kind == "video" else images_dir
        for key in [key for key in backend if CACHE_KEY.search(key)]:
            backend[key] = str(job.cache / f"{key.replace('_', '-')}-{index}")  # never the job's own choice
        for key in DATA_KEYS:
            if key in backend:
                backend[key] = str(_inside(data_dir, backend[key], field=f"dataloader.{index}.{key}"))
        if kind in ("image", "video"):
            backend.setdefault("type", "local")
            backend.setdefault("instance_data_dir", str(data_dir))
            backend.setdefault("cache_dir_vae", str(job.cache / f"vae-{index}"))
            for key, value in on_cpu.items():
                backend.setdefault(key, value)
        elif kind == "text_embeds":
            backend.setdefault("cache_dir", str(job.cache / f"text-{index}"))
        if kind == "video":
            backend["video"] = video_settings(spec, block=dict(backend.get("video") or {}), plan=plan,
                                              field=f"dataloader.{index}.video").block()
    if not any(b.get("dataset_type") == "text_embeds" for b in backends):
        backends.append(text_embeds)
    return backends


def _inside(images_dir: Path, value: Any, *, field: str) -> Path:
    """A dataset sub-folder, which must stay inside the staged dataset (also through links)."""
    try:
        folder = images_dir / relative_data_dir(value)
    except ValueError as exc:
        raise SpecError(str(exc), field=field) from None
    if not folder.resolve().is_relative_to(images_dir.resolve()):
        raise SpecError(f"{value!r} leads outside the job's dataset", field=field)
    return folder


def _job_values(spec: JobSpec, *, job: JobDir) -> tuple[dict[str, Any], dict[str, Any]]:
    """The job's own flags as SimpleTuner takes them, minus the owned folders; and the inline files to write."""
    flags, files = {}, {}
    known = simpletuner_flags()
    for name, value in spec.config.items():
        kind = classify(name, known.get(name, {}))
        if name in OWNED_FLAGS:
            continue
        if kind == FILE_CONTENT and isinstance(value, (dict, list)):
            files[f"{name}.json"] = value
            value = str(job.config / f"{name}.json")
        elif kind == INLINE_JSON and isinstance(value, (dict, list)):
            value = json.dumps(value)
        flags[name] = value
    return flags, files


def build_trainer_files(spec: JobSpec, *, images_dir: Path, job: JobDir, device: str,
                        resume: bool = False, gpu: GpuFacts | None = None, system_memory_gb: float | None = None,
                        hub_cache: Path | None = None, clips_dir: Path | None = None,
                        stills: bool = True, inputs_dirs: list[Path] | None = None,
                        sample_image: Path | None = None, sample_dataset: SampleDataset | None = None,
                        processes: int = 1, concepts: list[Concept] | None = None,
                        subsets: Subsets | None = None, wandb: bool = False) -> TrainerFiles:
    """The SimpleTuner files for this job. `device` is "cuda" or "cpu"; `gpu`: the GPUs' count and memory, which
    pick the recipe's tier (a job the GPU cannot hold is refused: SpecError naming config.base_model_precision);
    `resume`: continue the latest checkpoint-N in the job's output folder (core/training/resume.py puts the one
    there); `system_memory_gb`, `hub_cache`: as for gpu_plan; `clips_dir`, `stills`, `inputs_dirs`: as for
    build_backends, and `concepts`; `subsets`: as for build_backends (held-out images add the evaluation flags, the
    job's own win); `sample_image`: an image-to-video model's samples' first frame (core/training/sample_image.py);
    `sample_dataset`: an edit job's samples dataset (core/training/sample_pairs.py), rendered by SimpleTuner's edit
    validation (`num_eval_images` of it), on `processes` processes; `wandb`: the endpoint or pod set WANDB_API_KEY, so
    Weights & Biases is reported to as well (tracker_flags)."""
    plan = gpu_plan(spec, device=device, gpu=gpu, system_memory_gb=system_memory_gb, hub_cache=hub_cache,
                    clips=clips_dir is not None, inputs=len(inputs_dirs) if inputs_dirs else None)
    own, inline_files = _job_values(spec, job=job)
    samples = with_samples(spec, {**_defaults(spec, device=device, plan=plan), **_vae_path(spec)}, job=job, plan=plan,
                           input_image=sample_image)
    inline_files = {**samples.files, **inline_files}
    flags: dict[str, Any] = {**tracker_flags(spec, job=job, wandb=wandb), **samples.flags, **own}
    flags.update(
        output_dir=str(job.output),
        logging_dir=str(job.trainer / "logs"),  # the trackers' own files (W&B's): in the job, not published
        data_backend_config=str(job.config / "multidatabackend.json"),
        webhook_config=str(job.config / "webhooks.json"),
    )
    if resume:
        flags["resume_from_checkpoint"] = "latest"
    if flags.get("validation_disable") or not inputs_dirs:
        sample_dataset = None  # no samples during training: nothing to stage for them
    if sample_dataset is not None:
        flags["num_eval_images"] = sample_dataset.count
        # The sample alone, as for any model (SimpleTuner 4.10.1 stitches the input to its left only for "left"):
        # the UI shows the input, the sample and the expected output side by side itself.
        flags.setdefault("validation_stitch_input_location", "right")
    config = {f"--{name}": value for name, value in sorted(flags.items())}
    backends = build_backends(spec, images_dir=images_dir, job=job, device=device, plan=plan, clips_dir=clips_dir,
                              stills=stills, inputs_dirs=inputs_dirs, sample_dataset=sample_dataset,
                              processes=processes, accumulation=int(flags.get("gradient_accumulation_steps") or 1),
                              concepts=concepts, subsets=subsets)
    if not isinstance(spec.dataloader, list):
        config.update({key: value for key, value in eval_flags(subsets, config).items()
                       if key == "--report_to" or key.removeprefix("--") not in spec.config})
    if inputs_dirs and len(inputs_dirs) > 1:  # every input of a pair in each sample, not one picked at random
        config.setdefault("--conditioning_multidataset_sampling", "combined")
    files = TrainerFiles(config=config, backends=backends, inline_files=inline_files, plan=plan,
                         warnings=samples.warnings)
    _refuse_placeholders(files, spec)
    return files


def _refuse_placeholders(files: TrainerFiles, spec: JobSpec) -> None:
    """SimpleTuner's loaders replace `{env:NAME}` in what they read with our environment. The job's own values are
    checked as they come in; this checks what the project composed from them (a trigger word filled into a prompt,
    defaults, paths), naming the job field that built the text."""
    found = [(f"config.{key.removeprefix('--')}", where) for key, value in files.config.items()
             for where in _placeholders(value, key)]
    found += [("dataloader", where) for where in _placeholders(files.backends, "multidatabackend.json")]
    found += [("samples.prompts" if name == LIBRARY_FILE else "config", where)
              for name, content in files.inline_files.items() for where in _placeholders(content, name)]
    if not found:
        return
    errors = [{"field": _job_field(field, spec), "message": f"builds an '{{env:...}}' placeholder in {where}, "
               "which SimpleTuner would fill with the endpoint's environment"} for field, where in found]
    raise SpecError(errors[0]["message"], field=errors[0]["field"], errors=errors)


def _job_field(field: str, spec: JobSpec) -> str:
    """The job field a composed flag came from: the job's own config key, else its samples (validation_*)."""
    name = field.removeprefix("config.")
    if field.startswith("config.") and name not in spec.config and spec.samples is not None and (
            name.startswith("validation_") or name == "user_prompt_library"):
        return "samples"
    return field


def _placeholders(value: Any, where: str) -> list[str]:
    """Where in `value` (a JSON value) a key or string spells `{env:`."""
    if isinstance(value, dict):
        return [hit for key, item in value.items()
                for hit in ([f"{where}.{key}"] if PLACEHOLDER.search(str(key)) else [])
                + _placeholders(item, f"{where}.{key}")]
    if isinstance(value, list):
        return [hit for index, item in enumerate(value) for hit in _placeholders(item, f"{where}[{index}]")]
    return [where] if isinstance(value, str) and PLACEHOLDER.search(value) else []

