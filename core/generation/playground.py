"""The playground: a generation process that stays warm between requests, and the worker's `mode: "generate"` job.

`Playground` starts tools/generate_images.py in the trainer env (diffusers) once and keeps it: the pipeline is
loaded once per model, a LoRA once per checkpoint file, so the next image costs only its denoising steps. The
process is stopped by `stop()` (the UI calls it before a training starts: GPU memory is the training's) and by
itself after `idle_s` without a request. `GenerateRequest` is the one declaration of what a request may say, for
the UI's playground and the worker's generate jobs alike (`GenerateJob` adds the LoRA's source and the answer's
form). Before a request reaches the process its memory is planned (core/generation/preview_fit.py: all on the GPU,
model offload, sequential offload, or a refusal naming the numbers) from the model's and LoRA's safetensors headers
and the GPU's memory; the plan travels with the request and comes back in `Rendered.plan`. A video model (Wan)
renders `frames` frames into an .mp4. An input image (an upload, or a generate job's `input_image`: a URL, a data:
URI or base64, checked by core/dataset/input_image.py) is the first frame of an image-to-video model's clip; a model
that renders from text only refuses one (`input_image_use`), and an image-to-video pipeline needs one.
"""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.adapters import TrainerEnv, detect_device, gpu_facts
from core.cancel import Cancel
from core.dataset import input_image_file
from core.errors import ErrorCode, JobError, SetupError
from core.generation.preview_fit import PreviewPlan, plan_preview
from core.models import ComponentSize, SizeError, header_size, local_model, model_sizes
from core.outputs import LORA_FILE
from core.secrets import job_secrets
from core.settings import TOOLS_DIR, Settings
from core.simpletuner import identify, input_images, is_edit_model, lookup
from core.spec import InputImageLimits

GENERATE_SCRIPT = TOOLS_DIR / "generate_images.py"
IDLE_S = 600.0
"""A warm process with no request for this long is stopped (its memory goes back)."""
START_TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 900.0
POLL_S = 0.1
"""How often a render in progress looks at its cancel."""
MAX_PROMPT = 1000
MAX_SIDE = 2048
MAX_FRAMES = 257
VIDEO_SUFFIX = ".mp4"


class GenerateRequest(BaseModel):
    """One render: what the playground's form and a generate job say. Every bad value names its field."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT)
    negative_prompt: str = Field(default="", max_length=MAX_PROMPT)
    seed: int = Field(default=42, ge=0, le=2**32 - 1)
    steps: int = Field(default=20, ge=1, le=150)
    guidance: float = Field(default=5.0, ge=0, le=30)
    strength: float = Field(default=1.0, ge=-4, le=4)
    """The LoRA's weight: 0 is the base model, 1 as trained."""
    width: int = Field(default=1024, ge=64, le=MAX_SIDE, multiple_of=8)
    height: int = Field(default=1024, ge=64, le=MAX_SIDE, multiple_of=8)
    count: int = Field(default=1, ge=1, le=8)
    frames: int | None = Field(default=None, ge=1, le=MAX_FRAMES)
    """A video model's frame count, 4k+1 (Wan's VAE packs 4 frames after the first); None: 17. An image model
    ignores it."""

    @field_validator("frames")
    @classmethod
    def _four_k_plus_one(cls, value: int | None) -> int | None:
        if value is not None and (value - 1) % 4:
            raise ValueError(f"must be 4k+1 (1, 5, 9, ..., 17, ..., 81), got {value}")
        return value

    @field_validator("prompt", "negative_prompt")
    @classmethod
    def _one_line(cls, value: str) -> str:
        return " ".join(value.split())


@dataclass(frozen=True)
class Rendered:
    images: list[Path]
    seconds: dict[str, float]
    """load, lora, render, total: as the generation process measured them."""
    warm: dict[str, bool]
    """pipeline / lora: True when already loaded before this request."""
    plan: PreviewPlan | None = None
    """Where the pipeline went (all on the GPU, offloaded) and why; None when the process chose alone."""
    input_image: dict[str, Any] | None = None
    """The input image as the pipeline got it ({"width", "height", "pipeline", "conditions"}: "first_frame" for an
    image-to-video model, "edit" for an edit model, which also says how many "images"); None without one."""

    @property
    def videos(self) -> list[Path]:
        return [path for path in self.images if path.suffix == VIDEO_SUFFIX]


def model_folder(model: str, *, settings: Settings) -> Path | None:
    """The folder on this machine that holds `model`: itself, or a Hub id's snapshot in the cache; None when it is
    not here (nothing is downloaded to find out)."""
    if Path(model).is_dir():
        return Path(model)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model, cache_dir=settings.hub_cache, local_files_only=True))
    except (OSError, ValueError):  # not in the cache, or no valid Hub id: the plan says the size is unknown
        return None


def plan_render(request: GenerateRequest, *, model: str, lora: Path | None, settings: Settings,
                video: bool | None = None) -> PreviewPlan:
    """The memory plan of one render on this machine, from the weights' headers and the GPU's memory; raises
    PreviewTooLarge (naming the GB) when even sequential offload would not fit. `video` None: read from the model's
    model_index.json."""
    device, count = detect_device(settings)
    if device != "cuda":
        return plan_preview(device=device, sizes={}, gpu_memory_gb=None)
    folder = model_folder(model, settings=settings)
    try:
        sizes: dict[str, ComponentSize] = model_sizes(folder) if folder else {}
        lora_params = header_size(lora).params if lora else 0
    except SizeError:
        sizes, lora_params = {}, 0
    if video is None:
        video = folder is not None and is_video_model(folder)
    frames = (request.frames or DEFAULT_FRAMES) if video else 1
    return plan_preview(device=device, sizes=sizes, gpu_memory_gb=gpu_facts(settings, gpu_count=count).memory_gb,
                        lora_params=lora_params, width=request.width, height=request.height, frames=frames)


def is_video_model(folder: Path) -> bool:
    """A diffusers folder whose pipeline renders videos (its class names a video family's pipeline)."""
    try:
        name = str(json.loads((Path(folder) / "model_index.json").read_text()).get("_class_name", ""))
    except (OSError, ValueError):
        return False
    return name.startswith(VIDEO_PIPELINES) or "Video" in name


INPUT_IMAGE_PIPELINE = "ImageToVideo"
"""A pipeline class with this in its name cannot render without an input image (WanImageToVideoPipeline)."""


@dataclass(frozen=True)
class InputImageUse:
    """How a model uses input images: `need` "required" (an image-to-video or edit pipeline), "optional" (text or
    an image, as Wan 2.2 TI2V), "none" (text only); `most`: how many one render takes; `edit`: an edit model."""

    need: str
    most: int
    edit: bool
    family: str
    pipeline: str


def input_image_use(model: str, *, settings: Settings) -> InputImageUse:
    """How `model` uses input images, from its model_index.json (a folder, or the Hub cache's snapshot) and the
    families table (core/simpletuner/families.py: the image-to-video and edit flavours and pipelines)."""
    folder = model_folder(model, settings=settings)
    index = folder / "model_index.json" if folder is not None and (folder / "model_index.json").is_file() else None
    found = identify(model, local_path=folder)
    family, flavour = lookup(model) or ((found.family, found.flavour) if found else ("", None))
    name = pipeline_class(index)
    edit = is_edit_model(family, flavour, model_index=index)
    most = input_images(family, flavour, model_index=index)
    need = "required" if INPUT_IMAGE_PIPELINE in name or edit else ("optional" if most else "none")
    return InputImageUse(need=need, most=most, edit=edit, family=found.family if found else "unknown",
                         pipeline=name)


def pipeline_class(model_index: Path | None) -> str:
    """The diffusers pipeline class a model_index.json names ("" when there is none)."""
    if model_index is None:
        return ""
    try:
        return str(json.loads(Path(model_index).read_text()).get("_class_name", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def check_input_image(model: str, *, given: int, settings: Settings) -> InputImageUse:
    """Refuse input images for a model that renders from text only, a render without one for an image-to-video or
    edit pipeline, and more images than the model takes (`given`: how many); the error names `input_image`, the
    model's family and its pipeline."""
    use = input_image_use(model, settings=settings)
    what = f"{model} ({use.family} family" + (f", {use.pipeline})" if use.pipeline else ")")
    if given and use.need == "none":
        raise GenerateError(f"{what} renders from text only: it takes no input image (an image-to-video model "
                            "does: a Wan i2v or ti2v flavour; an edit model does: FLUX.1 Kontext, Qwen-Image-Edit, "
                            "LongCat-Image-Edit)", field="input_image", code=ErrorCode.INVALID_INPUT)
    if not given and use.need == "required":
        needed = ("an edit model: give input_image, the image to edit" if use.edit
                  else "an image-to-video model: give an input image, the first frame of the clip")
        raise GenerateError(f"{what} is {needed}", field="input_image", code=ErrorCode.INVALID_INPUT)
    if given > max(use.most, 1):
        raise GenerateError(f"{what} takes {max(use.most, 1)} input image{'s' if use.most > 1 else ''} per render, "
                            f"{given} given", field="input_image", code=ErrorCode.INVALID_INPUT)
    return use


VIDEO_PIPELINES = ("Wan", "LTX", "HunyuanVideo", "SanaVideo", "Kandinsky5T2V", "LongCatVideo", "Cosmos")
DEFAULT_FRAMES = 17
"""Frames of a video render that names none (tools/generate_images.py's DEFAULT_FRAMES)."""


class Playground:
    """The warm generation process. Thread-safe: one request at a time (GPU memory holds one pipeline)."""

    def __init__(self, *, settings: Settings, idle_s: float = IDLE_S, env: dict[str, str] | None = None):
        self.settings = settings
        self.idle_s = idle_s
        self._env = env
        self.trainer = TrainerEnv(settings, base=env)  # allow-listed from the app's environment: no secrets
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._last_used = 0.0
        self._watcher: threading.Thread | None = None
        self._stopped_for: str | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def use_devices(self, devices: str) -> None:
        """Render on these GPUs (CUDA ids, as CUDA_VISIBLE_DEVICES takes them) from the next request: a pod whose
        other GPUs train. The warm process, on other GPUs, is stopped."""
        if self.settings.cuda_visible_devices == devices:
            return
        with self._lock:
            self._stop_locked("its GPU went to a training")
            self.settings = replace(self.settings, cuda_visible_devices=devices)
            self.trainer = TrainerEnv(self.settings, base=self._env)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running and self._process else None

    def generate(self, request: GenerateRequest, *, model: str, lora: Path | None, out_dir: Path,
                 name: str, cancel: Cancel | None = None,
                 input_image: Path | list[Path] | None = None) -> Rendered:
        """Render `request` with `model` (a folder or a Hub id in the HF cache) and `lora` (a .safetensors file, or
        None for the base model) into `out_dir/<name>-<i>.png`. `input_image`: a checked image file (core/dataset's
        input_image_file), the first frame of an image-to-video model's clip or the image an edit model edits (a
        list: a Qwen-Image-Edit "plus" model's up to three); a model that takes none refuses it, an edit or
        image-to-video model needs one (check_input_image). Raises SetupError when the process cannot start,
        JobError (code generate_failed) when diffusers refuses the request. A `cancel` (or its deadline) stops the
        render: the process ends, so its GPU memory and the next request's turn come back within seconds. Its
        memory is planned first (plan_render): a GPU that cannot hold it is refused before anything loads."""
        images = [input_image] if isinstance(input_image, Path) else list(input_image or [])
        check_input_image(model, given=len(images), settings=self.settings)
        plan = plan_render(request, model=model, lora=lora, settings=self.settings)
        payload = {**request.model_dump(), "model": model, "lora": str(lora) if lora else None,
                   "out_dir": str(out_dir), "name": name, "placement": plan.placement, "vae_tiling": plan.vae_tiling,
                   "input_image": [str(path) for path in images] if len(images) > 1 else
                   (str(images[0]) if images else None)}
        stop = Cancel.of(cancel)
        with self._lock:
            stop.check("before rendering", stage="generate")
            process = self._ensure_started(stop)
            self._last_used = time.monotonic()
            try:
                answer = self._ask(process, payload, stop)
            finally:
                self._last_used = time.monotonic()
        stop.check("while rendering", stage="generate")
        if not answer.get("ok"):
            raise JobError(f"generating failed: {answer.get('error', 'no answer')}", code=ErrorCode.GENERATE_FAILED,
                           stage="generate")
        return Rendered(images=[Path(p) for p in answer["images"]], seconds=answer.get("seconds", {}),
                        warm=answer.get("warm", {}), plan=plan, input_image=answer.get("input_image"))

    def stop(self, *, reason: str = "stopped") -> bool:
        """End the process (its GPU memory goes back); True when one was running. The next request starts it."""
        with self._lock:
            return self._stop_locked(reason)

    def _stop_locked(self, reason: str, *, at_once: bool = False) -> bool:
        """`at_once`: mid-render (a cancel), so no waiting for the server's loop to read the end of its input."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return False
        self._stopped_for = reason
        if at_once:
            self.trainer.stop(process, grace_s=1.0)  # its whole group: diffusers' workers too
            return True
        try:
            _pipe(process.stdin).close()  # the server's loop ends at end of input
            process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.trainer.stop(process, grace_s=2.0)
        return True

    def _ensure_started(self, stop: Cancel) -> subprocess.Popen:
        if self._process is not None and self.running:
            return self._process
        device, _ = detect_device(self.settings)
        process = self.trainer.start(GENERATE_SCRIPT, ["--serve"], device=device, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        ready = self._read(process, timeout_s=START_TIMEOUT_S, stop=stop)
        if not ready.get("ready"):
            self.trainer.stop(process, grace_s=1.0)
            stop.check("while the generation process started", stage="generate")
            raise SetupError(f"the generation process did not start: {ready.get('error', 'no answer')}",
                             field="TRAINER_VENV")
        self._process = process
        self._start_watcher()
        return process

    def _ask(self, process: subprocess.Popen, payload: dict[str, Any], stop: Cancel) -> dict[str, Any]:
        try:
            _pipe(process.stdin).write(json.dumps(payload) + "\n")
            _pipe(process.stdin).flush()
        except OSError as exc:
            self._stop_locked("broken pipe")
            raise JobError(f"the generation process ended: {exc}",
                           code=ErrorCode.GENERATE_FAILED, stage="generate") from None
        answer = self._read(process, timeout_s=REQUEST_TIMEOUT_S, stop=stop)
        if "ok" not in answer:
            self._stop_locked("cancelled" if stop.is_set() else "no answer", at_once=stop.is_set())
        return answer

    @staticmethod
    def _read(process: subprocess.Popen, *, timeout_s: float, stop: Cancel) -> dict[str, Any]:
        """The next answer line; {"error": ...} when the process ends, says nothing in time, or `stop` is set."""
        box: dict[str, Any] = {}

        def read() -> None:
            box["line"] = _pipe(process.stdout).readline()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        until = time.monotonic() + timeout_s
        while reader.is_alive() and time.monotonic() < until and not stop.is_set():
            reader.join(POLL_S)
        if stop.is_set() and "line" not in box:
            return {"error": "stopped"}
        line = box.get("line")
        if not line:
            code = process.poll()
            return {"error": f"the generation process exited ({code})" if code is not None
                    else f"no answer within {timeout_s:g} s"}
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            return {"error": f"unreadable answer: {line[:200]!r}"}

    def _start_watcher(self) -> None:
        if self._watcher is not None and self._watcher.is_alive():
            return

        def watch() -> None:
            while True:
                time.sleep(min(5.0, max(self.idle_s / 4, 0.05)))
                with self._lock:
                    if not self.running:
                        return
                    if time.monotonic() - self._last_used >= self.idle_s:
                        self._stop_locked("idle")
                        return

        self._watcher = threading.Thread(target=watch, daemon=True, name="playground-idle")
        self._watcher.start()


def _pipe[T](stream: T | None) -> T:
    """A pipe the process was started with (stdin/stdout=PIPE): Popen types it optional."""
    if stream is None:
        raise OSError("the generation process has no pipe")
    return stream


def image_base64(path: Path) -> str:
    """A PNG (or an .mp4) as base64 text, for an answer that has no bucket to point at."""
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


# -- the worker's generate job ------------------------------------------------------------------------------------

MAX_LORA_BYTES = 4 * 1024**3


class GenerateError(JobError):
    """A generate job's LoRA or base model cannot be fetched, or diffusers refused the request."""

    code = ErrorCode.GENERATE_FAILED
    stage = "generate"


InputImage = Annotated[str, Field(max_length=InputImageLimits().max_text)]
MAX_INPUT_IMAGES = 3
"""The most input images a generate job may give (Qwen-Image-Edit "plus": up to three)."""


class GenerateJob(GenerateRequest):
    """The worker's `{"mode": "generate", ...}` job: one render request plus where the LoRA and base model are."""

    mode: str = Field(pattern="^generate$")
    model: str = Field(min_length=1, max_length=300)
    """The base model: a Hub id, or a folder on this machine."""
    lora: str | None = Field(default=None, max_length=2000)
    """'user/repo', 'user/repo/checkpoint-N' (a folder in the repo), 'user/repo@revision', or an https/s3 URL of a
    .safetensors file; None renders the base model."""
    token: str | None = Field(default=None, repr=False)
    """A token that reads a private LoRA repo (else HF_TOKEN)."""
    bucket: str | None = None
    """Upload the images here and answer URLs (else BUCKET_NAME when the bucket variables are set; else base64)."""
    timeout_s: float | None = Field(default=None, gt=0, le=REQUEST_TIMEOUT_S)
    """The whole job's time limit, the LoRA's download included (default: the render's own limit)."""
    input_image: InputImage | list[InputImage] | None = Field(default=None, repr=False)
    """The first frame of an image-to-video model's clip, or the image an edit model edits (required for both): an
    http(s) or s3 URL (fetched under the address policy, as dataset URLs are), a data:image/...;base64, URI, or
    base64. A list of up to 3 for a Qwen-Image-Edit "plus" model (2509, 2511), in input order; a text-only model
    refuses it."""

    @field_validator("input_image")
    @classmethod
    def _up_to_three(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and not 1 <= len(value) <= MAX_INPUT_IMAGES:
            raise ValueError(f"takes 1 to {MAX_INPUT_IMAGES} images, got {len(value)}")
        return value


def parse_generate_job(data: Any) -> GenerateJob:
    """Validate a generate job; a SpecError names every bad field."""
    from pydantic import ValidationError

    from core.spec import validation_error

    try:
        return GenerateJob.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


def fetch_lora(source: str, folder: Path, *, settings: Settings, token: str | None,
               cancel: Cancel | None = None) -> Path:
    """The LoRA file a generate job names, downloaded into `folder`; `cancel` stops a URL's download."""
    from core.adapters import HubTarget, call_hub, download, hub_endpoint, is_repo_id

    text = source.strip()
    if "://" in text and not text.startswith("hf://"):
        path = download(text, folder, settings=settings, max_bytes=MAX_LORA_BYTES, field="lora", cancel=cancel)
        if path.suffix != ".safetensors":
            raise GenerateError(f"{path.name} is not a .safetensors file", field="lora")
        return path
    parts = [part for part in text.removeprefix("hf://").split("/") if part]
    name, _, revision = parts[1].partition("@") if len(parts) > 1 else ("", "", "")
    repo, sub = (f"{parts[0]}/{name}" if parts else ""), "/".join(parts[2:])
    if not is_repo_id(repo) or any(part in (".", "..") for part in parts):
        raise GenerateError(f"'{text}' is neither a Hub path (user/repo, user/repo/checkpoint-N) nor an https:// or "
                            "s3:// URL", field="lora", code=ErrorCode.INVALID_INPUT)
    filename = sub if sub.endswith(".safetensors") else "/".join(p for p in (sub, LORA_FILE) if p)
    from huggingface_hub import hf_hub_download

    target = HubTarget(repo, family=GenerateError, field="lora", token=token, revision=revision or None)
    return Path(call_hub(lambda: hf_hub_download(repo, filename, revision=revision or None, token=token,
                                                 local_dir=folder, endpoint=hub_endpoint()),
                         target=target, what=f"downloading {filename}"))


def resolve_model(model: str, *, settings: Settings, token: str | None) -> str:
    """What the generation process loads: a diffusers folder on this machine as is (the model cache, the demo model;
    as a training job's base model may be), a Hub id fetched into the cache first when online (else diffusers reads
    it from the cache)."""
    from core.adapters import is_repo_id

    if is_repo_id(model) and not Path(model).is_dir():
        if settings.online:
            from core.adapters import hub_endpoint
            from core.models import fetch_repo

            return str(fetch_repo(model, field="model", cache_dir=settings.hub_cache, token=token,
                                  endpoint=hub_endpoint()))
        return model
    if not (Path(model) / "model_index.json").is_file():
        raise GenerateError(f"{model} is no diffusers model folder (model_index.json is missing)", field="model",
                            code=ErrorCode.INVALID_INPUT)
    return model


def run_generate_job(job: GenerateJob, *, workdir: Path, settings: Settings, playground: Playground,
                     cancel: Cancel | threading.Event | None = None) -> dict[str, Any]:
    """Render a generate job; the answer lists the images as bucket URLs (a bucket named or configured) or as
    base64 PNGs, with the timings of the warm process. `cancel`, or the job's timeout_s, stops it at any point."""
    from core.adapters import public_url

    stop = Cancel.of(cancel, timeout_s=job.timeout_s)
    local_model(job.model, settings=settings, field="model", any_folder=False)  # the worker's model roots
    # The image first: a bad one is refused before a LoRA or a model is downloaded.
    sources = [job.input_image] if isinstance(job.input_image, str) else list(job.input_image or [])
    given = [input_image_file(source, workdir / "input", settings=settings, cancel=stop, name=f"input-{index}.png",
                              field="input_image" if len(sources) == 1 else f"input_image.{index}")
             for index, source in enumerate(sources)]
    token = settings.token(job.token)
    lora = fetch_lora(job.lora, workdir / "lora", settings=settings, token=token, cancel=stop) if job.lora else None
    model = resolve_model(job.model, settings=settings, token=token)
    request = GenerateRequest(**job.model_dump(include=set(GenerateRequest.model_fields)))
    rendered = playground.generate(request, model=model, lora=lora, out_dir=workdir / "images", name="image",
                                   cancel=stop, input_image=given or None)
    bucket = job.bucket or settings.bucket_name
    images: list[dict[str, Any]] = [{"file": path.name, "media": "video" if path.suffix == VIDEO_SUFFIX else "image"}
                                    for path in rendered.images]
    if bucket and settings.s3.endpoint_url:
        from core.publishing import BucketDestination, upload_outputs
        from core.spec import StorageSpec

        destination = BucketDestination(StorageSpec(bucket=bucket, prefix="generated"), bucket=bucket, s3=settings.s3)
        uploaded = upload_outputs(workdir / "images", destination=destination, job_id=workdir.name,
                                  secrets=[token, *job_secrets(None, settings=settings)])
        for image in images:
            image["url"] = uploaded["files"][image["file"]]
    else:
        for image, path in zip(images, rendered.images, strict=True):
            image["base64"] = image_base64(path)
    return {"status": "succeeded", "mode": "generate", "images": images, "prompt": request.prompt,
            "seed": request.seed, "lora": public_url(job.lora) if job.lora else None, "strength": request.strength,
            "seconds": rendered.seconds, "warm": rendered.warm,
            "placement": rendered.plan.to_dict() if rendered.plan else None,
            "input_image": rendered.input_image}
