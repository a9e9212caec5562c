"""The caption stage: a vision-language model writes the captions a dataset lacks, before preflight and training.
Video clips too: the script captions a few frames of each clip and keeps the caption most of them got
(tools/caption_images.py, docs/captioning.md).

The model runs in the trainer env as a subprocess (tools/caption_images.py), so no face imports torch or
transformers, and its memory is freed before SimpleTuner starts: the process ends. It runs on the GPU when there is
one. It reports each image or clip as a JSON line on stdout, turned here into CaptionProgress events (done/total,
ETA); a cancel or the job's deadline kills its whole process group within seconds.

Models load from the Hugging Face cache with the base model's rules (core/models/base_model.py): with TRAINER_ONLINE a
Hub model is fetched into the cache first, with byte progress (in a job, while the dataset stages:
core/models/prefetch.py); offline, it must be in the cache already. A local folder is used as it is.

    report = caption_stage(spec, manifest, job=job, settings=settings, token=token, on_event=..., cancel=cancel)

The generated caption gets the job's prefix and trigger word (core/dataset/stage.py's rules) and replaces the staged
`.txt`; the manifest's entries say where each caption came from (file, generated, trigger_word, ...). With the
cache on (a job's `cache`, default on), the raw captions are kept (core/cache/captions.py), keyed by each file's
sha256: a second run of the same images and clips with the same model and settings takes them from there instead of
starting the model.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, cast

from core.adapters import TrainerEnv, detect_device
from core.cache import Cache, cached_captions, file_sha256, keep_captions, model_identity, run_key
from core.cancel import Cancel
from core.dataset import (
    CLIP_SUFFIXES,
    CaptionOptions,
    ClipEntry,
    ImageEntry,
    Manifest,
    apply_trigger,
    caption_options,
    clean_caption,
)
from core.errors import ErrorCode, JobError
from core.events import CaptionProgress, EventSink, LogLine, ignore_event
from core.jobdir import JobDir
from core.models import caption_download, fetch_caption_model
from core.settings import TOOLS_DIR, Settings
from core.spec import CAPTION_MODELS, DEFAULT_CAPTION_MODEL, CaptioningSpec, JobSpec

__all__ = [
    "CAPTION_MODELS",
    "DEFAULT_CAPTION_MODEL",
    "SAMPLE_SIZE",
    "CaptionError",
    "CaptionReport",
    "CaptioningSpec",
    "caption_manifest",
    "caption_stage",
    "generate_captions",
    "needs_caption",
]

CAPTION_SCRIPT = TOOLS_DIR / "caption_images.py"
SAMPLE_SIZE = 8
"""A dry run captions this many images: enough to judge the captions before paying for a training."""
OWN_CAPTIONS = frozenset({"file", "inline", "column"})
"""Caption sources a user wrote; `missing` mode keeps them."""
POLL_S = 0.1


class CaptionError(JobError):
    """The caption model could not be loaded or failed on the images."""

    code = ErrorCode.CAPTIONING_FAILED
    stage = "caption"


@dataclass
class CaptionReport:
    """What the caption stage did: the result's `captioning`."""

    model: str
    model_id: str
    mode: str
    style: str
    device: str
    images_total: int
    images_captioned: int
    images_kept: int
    """Images that kept the caption they had (mode missing)."""
    clips_total: int = 0
    clips_captioned: int = 0
    clips_kept: int = 0
    """Video clips that kept the caption they had (mode missing)."""
    sampled: bool = False
    """A dry run: only the first SAMPLE_SIZE images that needed a caption were captioned."""
    load_s: float = 0.0
    """Starting the process and loading the model."""
    elapsed_s: float = 0.0
    """The whole stage, download excluded."""
    images_per_s: float | None = None
    """Captioning throughput once the model is loaded."""
    sources: dict[str, str] = field(default_factory=dict)
    """Image or clip file name -> where its caption came from: file | inline | column | generated | trigger_word |
    file_name."""
    samples: list[dict[str, str]] = field(default_factory=list)
    """The first generated captions, {image (an image's or a clip's file name), caption}, as they were written."""
    from_cache: bool = False
    """The captions came from an earlier run's (same files, model and settings): the model did not run."""

    def to_dict(self) -> dict:
        data = asdict(self)
        for name in ("load_s", "elapsed_s"):
            data[name] = round(data[name], 2)
        if data["images_per_s"] is not None:
            data["images_per_s"] = round(data["images_per_s"], 3)
        return data


def needs_caption(source: str, *, mode: str) -> bool:
    """An image or clip with this caption source is captioned in `mode`."""
    return mode == "all" or source not in OWN_CAPTIONS


def caption_stage(spec: JobSpec, manifest: Manifest, *, job: JobDir, settings: Settings, token: str | None = None,
                  on_event: EventSink = ignore_event, cancel: Cancel | None = None,
                  model_ready: Callable[[], object] | None = None) -> dict | None:
    """The pipeline's caption stage: None when the job asks for no captioning; a dry run captions a sample.
    `model_ready` waits for the caption model the job began downloading with the dataset (raising its error)."""
    if spec.captioning is None:
        return None
    report = caption_manifest(manifest, spec.captioning, captions=caption_options(spec), settings=settings,
                              token=token, on_event=on_event, cancel=cancel, log=job.root / "caption.log",
                              model_ready=model_ready,
                              limit=SAMPLE_SIZE if spec.dry_run else None,
                              cache=Cache.from_settings(settings) if spec.cache else None)
    return report.to_dict()


def caption_manifest(manifest: Manifest, captioning: CaptioningSpec, *, captions: CaptionOptions,
                     settings: Settings, token: str | None = None, on_event: EventSink = ignore_event,
                     cancel: Cancel | None = None, log: Path | None = None, limit: int | None = None,
                     cache: Cache | None = None, model_ready: Callable[[], object] | None = None) -> CaptionReport:
    """Caption the manifest's images and clips that `captioning.mode` selects (the first `limit` of them, images
    first), rewrite their `.txt` with prefix and trigger word, and update the entries. With a `cache`, captions an
    earlier run made of the same files with the same model and settings are reused. `model_ready()` is called first
    when a file needs a caption (the job's own download of the model: the cache lookup needs the model's commit)."""
    started = time.monotonic()
    entries: list[ImageEntry | ClipEntry] = [*manifest.images, *manifest.clips]
    chosen = [entry for entry in entries if needs_caption(entry.caption_source, mode=captioning.mode)]
    sampled = limit is not None and len(chosen) > limit
    chosen = chosen[:limit] if limit is not None else chosen
    chosen_clips = sum(isinstance(entry, ClipEntry) for entry in chosen)
    report = CaptionReport(model=captioning.model, model_id=captioning.model_id, mode=captioning.mode,
                           style=captioning.style, device="", images_total=len(manifest.images),
                           images_captioned=0, images_kept=len(manifest.images) - (len(chosen) - chosen_clips),
                           clips_total=len(manifest.clips), clips_kept=len(manifest.clips) - chosen_clips,
                           sampled=sampled)
    if chosen:
        if model_ready is not None:
            model_ready()

        def write(index: int, text: str) -> None:
            entry = chosen[index]
            entry.caption = finish_caption(text, prefix=captioning.prefix, captions=captions)
            entry.caption_source = "generated"
            target = entry.path.with_suffix(".txt")
            target.unlink(missing_ok=True)  # a new file: never write through a hard link into the dataset cache
            target.write_text(entry.caption + "\n", encoding="utf-8")
            if isinstance(entry, ClipEntry):
                report.clips_captioned += 1
            else:
                report.images_captioned += 1
            if len(report.samples) < SAMPLE_SIZE:
                report.samples.append({"image": entry.path.name, "caption": entry.caption})

        hashes = [file_sha256(entry.path) for entry in chosen] if cache is not None else []
        known = _from_cache(cache, captioning, hashes=hashes, settings=settings)
        if known is not None:
            for index, digest in enumerate(hashes):
                write(index, known[digest])
            report.from_cache = True
            on_event(LogLine(f"{len(chosen)} captions from the cache (same files, model and settings)"))
        else:
            run = generate_captions([entry.path for entry in chosen], captioning, settings=settings, token=token,
                                    on_event=on_event, cancel=cancel, log=log, on_caption=write)
            report.device, report.load_s, report.images_per_s = run.device, run.load_s, run.images_per_s
            _to_cache(cache, captioning, hashes=hashes, texts=run.captions, settings=settings,
                      build_s=time.monotonic() - started)
    report.sources = {entry.path.name: entry.caption_source for entry in entries}
    report.elapsed_s = time.monotonic() - started
    clips = f" and {report.clips_captioned} of {report.clips_total} clips" if manifest.clips else ""
    on_event(LogLine(f"captioned {report.images_captioned} of {report.images_total} images{clips} with "
                     f"{captioning.model} in {report.elapsed_s:.1f}s"))
    return report


def _from_cache(cache: Cache | None, captioning: CaptioningSpec, *, hashes: list[str],
                settings: Settings) -> dict[str, str] | None:
    model = model_identity(captioning.model_id, hub_cache=settings.hub_cache) if cache is not None else None
    if cache is None or model is None:
        return None
    known = cached_captions(cache, run_key(captioning, model=model, script=CAPTION_SCRIPT, images=hashes))
    return known if known is not None and all(digest in known for digest in hashes) else None


def _to_cache(cache: Cache | None, captioning: CaptioningSpec, *, hashes: list[str], texts: list[str],
              settings: Settings, build_s: float) -> None:
    # After the run: a Hub model is in the Hugging Face cache now, so its commit names it.
    model = model_identity(captioning.model_id, hub_cache=settings.hub_cache) if cache is not None else None
    if cache is not None and model is not None:
        keep_captions(cache, run_key(captioning, model=model, script=CAPTION_SCRIPT, images=hashes),
                      dict(zip(hashes, texts, strict=True)), build_s=build_s)


def finish_caption(text: str, *, prefix: str, captions: CaptionOptions) -> str:
    """A generated caption as it is written: the prefix, the dataset's cleaning, the trigger word."""
    text = " ".join(part for part in (prefix, text.strip()) if part)
    text = clean_caption(text) if captions.clean else text.strip()
    return apply_trigger(text, trigger=captions.trigger_word, placement=captions.placement)


@dataclass
class CaptionOutcome:
    """What one generate_captions call made: the captions (in the images' order), the device and its timings. (The
    UI's background caption run is app/dataset_store.py's CaptionRun.)"""

    captions: list[str]
    device: str
    load_s: float
    images_per_s: float | None


def generate_captions(images: list[Path], captioning: CaptioningSpec, *, settings: Settings,
                      token: str | None = None, on_event: EventSink = ignore_event, cancel: Cancel | None = None,
                      log: Path | None = None, device: str | None = None,
                      on_caption: Callable[[int, str], None] | None = None) -> CaptionOutcome:
    """Run the caption model on `images` (image or clip files) in the trainer env; `on_caption(index, raw text)` as
    each one is done.
    Raises CaptionError (field captioning.model) or the cancel's JobCancelled/JobTimeout."""
    cancel = Cancel.of(cancel)
    trainer = TrainerEnv(settings)
    trainer.require()  # before the model is fetched for nothing
    model = resolve_caption_model(captioning, settings=settings, token=token, on_event=on_event, cancel=cancel)
    device = device or detect_device(settings)[0]
    on_event(LogLine(f"captioning {_count(images)} with {captioning.model} on {device}"))
    request = {"model": model, "images": [str(path) for path in images], "style": captioning.style,
               "max_length": captioning.new_tokens, "batch_size": captioning.batch_size, "device": device}
    log = log or Path(images[0]).parent / "caption.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    request_file = log.with_name("caption-request.json")
    request_file.write_text(json.dumps(request))
    run = CaptionOutcome(captions=[""] * len(images), device=device, load_s=0.0, images_per_s=None)
    started = time.monotonic()
    with log.open("ab") as stderr:
        # The token only where the model may be downloaded (TRAINER_ONLINE); offline it is never needed.
        process = trainer.start(CAPTION_SCRIPT, [request_file], device=device,
                                hf_token=token if settings.online else None, stdout=subprocess.PIPE, stderr=stderr)
        try:
            _follow(process, run, names=[Path(path).name for path in images], started=started, on_event=on_event,
                    cancel=cancel, on_caption=on_caption)
        finally:
            if process.poll() is None:
                trainer.stop(process, grace_s=2.0)  # a cancel, the deadline, or our own failure: never left running
            cast(IO[bytes], process.stdout).close()  # stdout=PIPE: never None
    return run


def _count(paths: list[Path]) -> str:
    clips = sum(Path(path).suffix.lower() in CLIP_SUFFIXES for path in paths)
    images = f"{len(paths) - clips} images"
    return f"{images} and {clips} clips" if clips else images


def _follow(process: subprocess.Popen, run: CaptionOutcome, *, names: list[str], started: float, on_event: EventSink,
            cancel: Cancel, on_caption: Callable[[int, str], None] | None) -> None:
    """Read the script's JSON lines until it ends; a cancel stops it (the caller kills it)."""
    total = len(names)
    lines: queue.Queue[bytes | None] = queue.Queue()

    def read() -> None:
        for line in cast(IO[bytes], process.stdout):
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True, name="caption-reader").start()
    done, loaded_at, error = 0, None, None
    while True:
        try:
            line = lines.get(timeout=POLL_S)
        except queue.Empty:
            cancel.check(f"while captioning ({done}/{total} files done)", stage="caption")
            continue
        if line is None:
            break
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue  # a library printing on stdout: not ours
        kind = event.get("event") if isinstance(event, dict) else None
        if kind == "loaded":
            loaded_at = time.monotonic()
            run.load_s = loaded_at - started
            on_event(LogLine(f"caption model loaded ({event.get('model_type')}, {event.get('device')}) "
                             f"in {run.load_s:.1f}s"))
        elif kind == "caption" and isinstance(event.get("index"), int) and 0 <= event["index"] < total:
            done += 1
            text = str(event.get("caption") or "")
            run.captions[event["index"]] = text
            if on_caption is not None:
                on_caption(event["index"], text)
            rate = done / max(time.monotonic() - (loaded_at or started), 1e-6)
            run.images_per_s = rate
            on_event(CaptionProgress(done=done, total=total, eta_s=(total - done) / rate, image=names[event["index"]]))
        elif kind == "error":
            error = str(event.get("message") or "the caption model failed")
        cancel.check(f"while captioning ({done}/{total} files done)", stage="caption")
    code = process.wait()
    if code != 0 or done < total:
        raise CaptionError(f"captioning failed: {error or f'the caption process exited with code {code}'}",
                           field="captioning.model")


def resolve_caption_model(captioning: CaptioningSpec, *, settings: Settings, token: str | None, on_event: EventSink,
                  cancel: Cancel | None) -> str:
    """The folder or Hub id the caption process loads: a local folder as it is; a Hub model fetched into the cache
    when this machine may download (TRAINER_ONLINE), else looked up in the cache."""
    model = captioning.model_id
    if Path(model).is_absolute():
        if not (Path(model) / "config.json").is_file():
            raise CaptionError(f"{model} is no model folder (no config.json in it)", field="captioning.model")
        return model
    cache_dir = settings.hub_cache
    if caption_download(captioning, settings=settings):
        # A check of the cache when the job's download (core/models/prefetch.py) brought it already.
        fetch_caption_model(model, settings=settings, token=token, on_event=on_event, cancel=cancel)
        return model
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(model, "config.json", cache_dir=cache_dir), str):
        raise CaptionError(f"{model} is not in the Hugging Face cache ({cache_dir}) and this machine does not "
                           "download models (set TRAINER_ONLINE=1, or give a local model folder)",
                           field="captioning.model")
    return model
