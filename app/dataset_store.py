"""The dataset being curated in the UI: one folder of staged images and video clips with their .txt captions, on
the server.

It lives at DATA_DIR/dataset (images/, thumbs/, source.json), so a reload shows the same dataset. Clips staged into
the staging's clips/ are moved into images/ beside the images (their stems are unique across both), so the job's
dataset stays one folder, which the job's own staging sorts again; clips.json keeps each clip's length and frame
count as staging probed them, skipped_clips.json the clips staging skipped and why (the gallery lists them). A clip's
thumbnail is its first frame (a poster decoded with PyAV, the demuxer its suffix names, as staging does). Loading goes
through the core's `stage_dataset` (the same safe fetch/extract/decode the worker uses) into a new folder beside
it, swapped in only when staging succeeded: a refused URL or a bad archive leaves the current dataset and its edited
captions as they were. A URL's credentials (user info, presigned signatures, tokens) serve the download only: they
are never recorded in source.json nor quoted in an error. Thumbnails are made on demand for the page asked for (a
few in parallel) and in the background for the rest, and cached on disk, so a page of a 1,000-image dataset shows
in well under a second.

A dataset of edit pairs (docs/edit-pairs.md) keeps each target in images/ and its inputs under the same file name
in images/control/ (control_2/, control_3/): the folder the job stages from then holds the control-folder layout the
core recognises. Its gallery shows each pair as one picture, input and target side by side, the caption being the
instruction; either side can be replaced by an upload. The files staging left out of a pair (unpaired.json, with the
reason) are listed last.

Auto-captioning runs the core's caption model (core/generation/captioning.py, a trainer-env subprocess) in the
background, one run at a time, on images and clips alike (a clip is captioned from a few of its frames); the page
polls its status. `captions.json` records each caption's origin: `edited` (saved by hand for one image or clip) or
`generated`. A caption edited by hand is never overwritten by an auto-caption run, whatever its mode; only that
file's own *Regenerate* replaces it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageOps

from core.cancel import Cancel
from core.dataset import (
    CLIP_SUFFIXES,
    CONTROL_DIRS,
    DEMUXERS,
    IMAGE_SUFFIXES,
    PAIR_REASONS,
    CaptionOptions,
    Manifest,
    archive_kind,
    caption_options,
    clean_caption,
    stage_dataset,
)
from core.errors import DatasetError, ErrorCode, JobError
from core.events import Event, EventSink, ignore_event
from core.generation import OWN_CAPTIONS, finish_caption, generate_captions
from core.pipeline import hub_token
from core.result import human_size
from core.secrets import mask_secret_values, redact, url_credentials
from core.settings import Settings
from core.spec import CaptioningSpec, DataloaderOptions, DatasetSpec, JobSpec
from core.status import JobStatus, apply, summary

THUMB_SIZE = 256
PAGE_SIZE = 24
_THUMB_WORKERS = min(8, os.cpu_count() or 2)
# A load stages beside the dataset folder (same disk, so the swap is a rename); the old folder is retired, then removed.
STAGING_PREFIX = "dataset.staging-"
RETIRED_PREFIX = "dataset.retired-"
TRIGGER_FILE = "trigger_word.txt"
"""Beside the dataset folder (it survives loading another dataset): the trigger word typed on the Dataset tab."""
logger = logging.getLogger("app.dataset_store")


@dataclass(frozen=True)
class Page:
    number: int
    """1-based, clamped to the pages there are."""
    pages: int
    total: int
    items: list[tuple[str, str, str]]
    """(thumbnail path, caption, file name) in order: images and clips by name (a clip's caption led by its label,
    `clip.mp4 · 2.1 s · 33 frames — `), then the clips staging skipped (`broken.mp4 · skipped: ...`)."""
    images: int = 0
    clips: int = 0
    skipped_clips: int = 0
    pairs: bool = False
    """An edit-pair dataset: each image is a target, its picture shows its input beside it."""
    unpaired: int = 0


def stage(spec: JobSpec, dest: Path, *, settings: Settings, on_event: EventSink = ignore_event) -> Manifest:
    """The app's one call into the core's staging (every load comes through here)."""
    with url_credentials_hidden(spec):
        # One flat folder: the gallery lists it (concept folders become separate entries only in a job's staging).
        return stage_dataset(spec.source, dest, captions=caption_options(spec), token=hub_token(spec, settings),
                             settings=settings, on_event=on_event, concepts=False)


@contextmanager
def url_credentials_hidden(spec: JobSpec) -> Iterator[None]:
    """A JobError raised in the block never quotes a credential of the dataset's URLs: a library's message may quote
    the URL it was given. For the loads and the Check button."""
    try:
        yield
    except JobError as error:
        dataset = spec.dataset
        urls = [dataset.url, *(item.url for item in dataset.files or [])] if dataset else []
        secrets = [secret for url in urls if url for secret in url_credentials(url)]
        clean = mask_secret_values(redact(error.message, secrets))
        if clean != error.message:
            error.message = clean
            error.args = (clean,)
        raise


def _thumb_name(image: Path) -> str:
    stat = image.stat()
    return f"{image.stem}.{stat.st_mtime_ns:x}.{stat.st_size:x}.jpg"


def make_thumbnail(image: Path, *, folder: Path, size: int = THUMB_SIZE) -> Path:
    """The cached thumbnail of `image` (made now if missing or stale): a JPEG at most `size` px a side; a clip's is
    its first frame."""
    target = folder / _thumb_name(image)
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    if image.suffix.lower() in CLIP_SUFFIXES:
        _save_thumb(first_frame(image), target, size=size)
        return target
    with Image.open(image) as source:
        source.draft("RGB", (size, size))  # JPEG: decode at a fraction of the size, much faster
        _save_thumb(ImageOps.exif_transpose(source), target, size=size)
    return target


def _save_thumb(picture: Image.Image, target: Path, *, size: int) -> None:
    picture.thumbnail((size, size))
    if picture.mode != "RGB":
        background = Image.new("RGB", picture.size, (255, 255, 255))
        rgba = picture.convert("RGBA")
        background.paste(rgba, mask=rgba.getchannel("A"))
        picture = background
    partial = target.with_suffix(f".{threading.get_ident()}.part")
    picture.save(partial, format="JPEG", quality=82)
    os.replace(partial, target)  # atomic: a page and the background warmer may race on one image


def first_frame(clip: Path) -> Image.Image:
    """A staged clip's first frame. Opened with the demuxer its suffix names, never one guessed from its content
    (staging's rule, core/dataset/clips.py); decodes at most 64 packets."""
    import av  # PyAV: loaded only when a dataset has clips

    with av.open(str(clip), format=DEMUXERS[clip.suffix.lower()]) as container:
        stream = container.streams.video[0]
        for index, packet in enumerate(container.demux(stream)):
            for frame in packet.decode():
                return frame.to_image()
            if index >= 64:
                break
    raise ValueError(f"no frame decoded from {clip.name}")


def skipped_poster(folder: Path, *, size: int = THUMB_SIZE) -> Path:
    """The gallery's picture for a clip staging skipped: a grey square, crossed."""
    target = folder / "skipped-clip.jpg"
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        picture = Image.new("RGB", (size, size), (90, 90, 90))
        draw = ImageDraw.Draw(picture)
        draw.line((0, 0, size, size), fill=(200, 60, 60), width=6)
        draw.line((0, size, size, 0), fill=(200, 60, 60), width=6)
        _save_thumb(picture, target, size=size)
    return target


def make_pair_thumbnail(target: Path, inputs: list[Path], *, folder: Path, size: int = THUMB_SIZE) -> Path:
    """A pair's gallery picture (cached like a thumbnail): its inputs and then its target side by side, each fitted
    into its share of a square (the gallery crops to squares), a dark line between them."""
    stamps = ".".join(f"{p.stat().st_mtime_ns:x}{p.stat().st_size:x}" for p in (*inputs, target))
    out = folder / f"pair-{target.stem}.{stamps}.jpg"
    if out.exists():
        return out
    folder.mkdir(parents=True, exist_ok=True)
    sides = [*inputs, target]
    width = size // len(sides)
    canvas = Image.new("RGB", (size, size), (32, 32, 32))
    for index, path in enumerate(sides):
        with Image.open(path) as source:
            picture = ImageOps.exif_transpose(source).convert("RGB")
        picture.thumbnail((width - 4, size))
        canvas.paste(picture, (index * width + (width - picture.width) // 2, (size - picture.height) // 2))
    _save_thumb(canvas, out, size=size)
    return out


def clip_label(name: str, facts: dict[str, Any]) -> str:
    """`clip.mp4 · 2.1 s · 33 frames`."""
    return f"{name} · {float(facts.get('duration_s') or 0):.1f} s · {int(facts.get('frames') or 0)} frames"


def count_media(names: list[str]) -> str:
    """'3 images', '2 images and 1 clip', '1 clip' (no zero part, except '0 images' for nothing)."""
    clips = sum(Path(name).suffix.lower() in CLIP_SUFFIXES for name in names)
    images = len(names) - clips
    parts = [f"{count} {noun}{'' if count == 1 else 's'}" for count, noun in ((images, "image"), (clips, "clip"))
             if count]
    return " and ".join(parts) or "0 images"


class CaptionRun:
    """One auto-caption run in the background: its status (core/status.py folds its events) and its stop switch."""

    def __init__(self, *, model: str, names: list[str]):
        self.model, self.names = model, names
        self.cancel = threading.Event()
        self.state = "running"
        """running | done | failed | cancelled."""
        self.error = ""
        self._status = JobStatus(stage="captioning", message=f"starting {model}")
        self._lock = threading.Lock()

    def on_event(self, event: Event) -> None:
        with self._lock:
            self._status = apply(self._status, event)

    @property
    def running(self) -> bool:
        return self.state == "running"

    def what(self) -> str:
        """'3 images', '2 images and 1 clip', '1 clip': what the run captions."""
        return count_media(self.names)

    def line(self) -> str:
        """The status line: `[captioning] captioned 3/8 images eta=12s`, or how the run ended."""
        with self._lock:
            status = self._status
        if self.state == "done":
            return f"Captioned {self.what()} with {self.model}."
        if self.state == "cancelled":
            return f"Auto-caption stopped after {status.images_done or 0} of {self.what()}."
        if self.state == "failed":
            return f"Auto-caption failed: {self.error}"
        return summary(status)


class DatasetStore:
    """The curated dataset folder. Methods are safe to call from several requests at once."""

    def __init__(self, *, settings: Settings, max_upload_bytes: int | None = None):
        self.settings = settings
        self.root = settings.data_root / "dataset"
        self.max_upload_bytes = max_upload_bytes
        """The most bytes one upload (all its files together) may hold; None: no limit."""
        self._lock = threading.Lock()
        self._captioning: CaptionRun | None = None
        self._generation = 0
        self._flagged: list[str] = []
        """The images the last check of this folder flagged (the dataset doctor's removable files)."""
        """Counts loads: a background warmer of an older load stops when it changes."""
        for leftover in settings.data_root.glob("dataset.*-*"):  # of a load cut short by a restart
            if leftover.name.startswith((STAGING_PREFIX, RETIRED_PREFIX)):
                shutil.rmtree(leftover, ignore_errors=True)

    @property
    def images_dir(self) -> Path:
        return self.root / "images"

    @property
    def thumbs_dir(self) -> Path:
        return self.root / "thumbs"

    def images(self) -> list[Path]:
        return self._files(IMAGE_SUFFIXES)

    def clips(self) -> list[Path]:
        return self._files(CLIP_SUFFIXES)

    def media(self) -> list[Path]:
        """Images and clips, by name: what the gallery pages through and the caption tools edit."""
        return self._files(IMAGE_SUFFIXES | CLIP_SUFFIXES)

    def _files(self, suffixes: frozenset[str]) -> list[Path]:
        if not self.images_dir.is_dir():
            return []
        return sorted((p for p in self.images_dir.iterdir() if p.suffix.lower() in suffixes and p.is_file()),
                      key=lambda p: p.name)

    def clip_facts(self) -> dict[str, dict[str, Any]]:
        """Clip name -> frames, duration_s, fps, width, height (as staging probed it)."""
        file = self.root / "clips.json"
        return json.loads(file.read_text()) if file.is_file() else {}

    def input_folders(self) -> list[Path]:
        """An edit-pair dataset's input folders (images/control/, control_2/, ...), in input order; [] otherwise."""
        return [self.images_dir / name for name in CONTROL_DIRS if (self.images_dir / name).is_dir()]

    def is_pairs(self) -> bool:
        return bool(self.input_folders())

    def inputs_of(self, name: str) -> list[Path]:
        """The inputs of target `name` (under its exact file name in each input folder) that exist."""
        return [folder / Path(name).name for folder in self.input_folders() if (folder / Path(name).name).is_file()]

    def unpaired(self) -> list[dict[str, str]]:
        """The files staging left out of a pair at the last load: name, reason, detail."""
        file = self.root / "unpaired.json"
        return json.loads(file.read_text()) if file.is_file() else []

    def replace_side(self, name: str, side: str, upload: Path) -> Path:
        """Replace the input (side "input") or the target ("target") of pair `name` with the uploaded image, saved in
        the format of the file it replaces (the input keeps its target's file name: how the pair is linked)."""
        if side not in ("input", "target"):
            raise DatasetError(f"side must be 'input' or 'target', got {side!r}", field="side")
        target = self.image_path(name)
        if not self.is_pairs():
            raise DatasetError("the dataset holds no edit pairs: load one with a control/ folder or "
                               "NAME_start/NAME_end files", field="image")
        destination = target if side == "target" else self.input_folders()[0] / target.name
        try:
            with Image.open(upload) as source:
                picture = ImageOps.exif_transpose(source)
                picture.load()
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise DatasetError(f"{Path(upload).name} is not an image Pillow can read: {exc}",
                               field=f"replace_{side}") from None
        if destination.suffix.lower() in (".jpg", ".jpeg") and picture.mode != "RGB":
            picture = picture.convert("RGB")
        with self._lock:
            partial = destination.with_name(f".{destination.name}.part")
            picture.save(partial, format=Image.registered_extensions().get(destination.suffix.lower(), "PNG"))
            os.replace(partial, destination)
            if "path" not in self.source():
                self._set_source({"path": str(self.images_dir)})
        return destination

    def skipped_clips(self) -> list[dict[str, str]]:
        """The clips staging skipped at the last load: name, reason, detail."""
        file = self.root / "skipped_clips.json"
        return json.loads(file.read_text()) if file.is_file() else []

    def trigger_word(self) -> str:
        """The trigger word typed beside the dataset ("" when none): kept in DATA_DIR/trigger_word.txt, so a reloaded
        page (or a restarted app) trains with it instead of silently without one."""
        file = self.root.parent / TRIGGER_FILE
        return file.read_text().strip() if file.is_file() else ""

    def set_trigger_word(self, word: str) -> None:
        file = self.root.parent / TRIGGER_FILE
        file.parent.mkdir(parents=True, exist_ok=True)
        partial = file.with_suffix(".tmp")
        partial.write_text((word or "").strip())
        os.replace(partial, file)

    def source(self) -> dict[str, Any]:
        """The job's `dataset` for this folder's origin: {url}, {hf_repo}, or {path} of the images folder."""
        file = self.root / "source.json"
        return json.loads(file.read_text()) if file.is_file() else {}

    def _set_source(self, source: dict[str, Any]) -> None:
        (self.root / "source.json").write_text(json.dumps(source))

    def _source_of(self, dataset: DatasetSpec) -> dict[str, Any]:
        """The job's `dataset` once `dataset` is loaded. A URL that carries credentials is not recorded: the job
        trains from the staged folder instead (a presigned URL expires anyway)."""
        if dataset.url and not url_credentials(dataset.url):
            return {"url": dataset.url}
        if dataset.hf_repo:
            revision = {"revision": dataset.revision} if dataset.revision != "main" else {}
            return {"hf_repo": dataset.hf_repo, **revision}
        return {"path": str(self.images_dir)}

    def load(self, dataset: DatasetSpec, *, on_event: EventSink = ignore_event) -> Manifest:
        """Replace the curated dataset with `dataset`'s images and captions (no trigger word applied: that is
        the job's business at training time). Staged into a new folder first: when staging fails, nothing of the
        current dataset changes."""
        if self.captioning_busy():
            raise DatasetError("auto-caption is running: stop it or wait for it before loading another dataset",
                               field="dataset")
        spec = JobSpec.model_construct(dataset=dataset, dataloader=DataloaderOptions(), trigger_word=None,
                                       hub=None, config={})
        staging = self.settings.data_root / f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}"
        try:
            manifest = stage(spec, staging, settings=self.settings, on_event=on_event)
            (staging / "source.json").write_text(json.dumps(self._source_of(dataset)))
            # Images that came without a caption hold their file name: what auto-caption's `missing` mode replaces.
            entries = [(e.path.name, e.caption_source) for e in manifest.images]
            entries += [(e.path.name, e.caption_source) for e in manifest.clips]
            fallbacks = {name: "file_name" for name, origin in entries if origin not in OWN_CAPTIONS}
            (staging / "captions.json").write_text(json.dumps(fallbacks))
            self._keep_clips(manifest, staging)
            self._keep_pairs(manifest, staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        retired = self.settings.data_root / f"{RETIRED_PREFIX}{staging.name.removeprefix(STAGING_PREFIX)}"
        with self._lock:
            self._generation += 1
            generation = self._generation
            if self.root.exists():
                os.replace(self.root, retired)
            os.replace(staging, self.root)
        shutil.rmtree(retired, ignore_errors=True)
        threading.Thread(target=self.warm_thumbnails, args=(generation,), name="thumbnails", daemon=True).start()
        pairs = manifest.pairs and replace(manifest.pairs, folders=[self.images_dir / f.name
                                                                    for f in manifest.pairs.folders])
        return replace(manifest, root=self.images_dir, clips_root=self.images_dir if manifest.clips else None,
                       images=[replace(entry, path=self.images_dir / entry.path.name) for entry in manifest.images],
                       clips=[replace(entry, path=self.images_dir / entry.path.name) for entry in manifest.clips],
                       pairs=pairs or None)

    @staticmethod
    def _keep_clips(manifest: Manifest, staging: Path) -> None:
        """Move the staged clips (and captions) beside the images; record their facts and the clips skipped."""
        images = staging / "images"
        images.mkdir(exist_ok=True)
        facts = {}
        for clip in manifest.clips:
            os.replace(clip.path, images / clip.path.name)
            caption = clip.path.with_suffix(".txt")
            if caption.is_file():
                os.replace(caption, images / caption.name)
            facts[clip.path.name] = {"frames": clip.frames, "duration_s": clip.duration_s, "fps": clip.fps,
                                     "width": clip.width, "height": clip.height}
        shutil.rmtree(staging / "clips", ignore_errors=True)
        skipped = [{"name": item.name, "reason": item.reason, "detail": item.detail} for item in manifest.skipped
                   if Path(item.name).suffix.lower() in CLIP_SUFFIXES]
        (staging / "clips.json").write_text(json.dumps(facts))
        (staging / "skipped_clips.json").write_text(json.dumps(skipped))

    @staticmethod
    def _keep_pairs(manifest: Manifest, staging: Path) -> None:
        """Move the staged input folders into images/ (the control-folder layout the job stages again); record the
        files left out of a pair and why."""
        if manifest.pairs is not None:
            for folder in manifest.pairs.folders:
                os.replace(staging / folder.name, staging / "images" / folder.name)
        unpaired = [{"name": item.name, "reason": item.reason, "detail": item.detail} for item in manifest.skipped
                    if item.reason in PAIR_REASONS]
        (staging / "unpaired.json").write_text(json.dumps(unpaired))

    def load_uploads(self, files: list[Path], *, run_id: str, on_event: EventSink = ignore_event) -> Manifest:
        """Load uploaded files: one archive, or images with their .txt captions (matched by file name). Errors
        name the `upload` field: the paths staged from are the server's, not the user's."""
        if not files:
            raise DatasetError("no files uploaded: add a .zip, or images with their .txt captions", field="upload")
        files = [Path(f) for f in files]
        size = sum(f.stat().st_size for f in files if f.is_file())
        if self.max_upload_bytes is not None and size > self.max_upload_bytes:
            raise DatasetError(f"the upload is {human_size(size)}, over the {human_size(self.max_upload_bytes)} "
                               "limit (UI_MAX_UPLOAD_MB): upload less, or give the dataset's URL", field="upload")
        try:
            if len(files) == 1 and archive_kind(files[0]):
                return self.load(DatasetSpec(path=str(files[0].absolute())), on_event=on_event)
            return self._load_loose_files(files, run_id=run_id, on_event=on_event)
        except DatasetError as exc:
            if exc.field in ("dataset", "dataset.path"):
                exc.field = "upload"
            raise

    def _load_loose_files(self, files: list[Path], *, run_id: str, on_event: EventSink) -> Manifest:
        folder = self.settings.data_root / "uploads" / run_id
        folder.mkdir(parents=True)
        try:
            for file in files:
                target = folder / file.name
                try:
                    os.link(file, target)  # the upload is already on this disk: no second copy
                except OSError:
                    shutil.copyfile(file, target)
            return self.load(DatasetSpec(path=str(folder)), on_event=on_event)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def page(self, number: int, *, size: int = PAGE_SIZE) -> Page:
        media = self.media()
        skipped = self.skipped_clips()
        unpaired = self.unpaired()
        entries: list[Path | dict[str, str]] = [*media, *skipped, *unpaired]
        pages = max(1, math.ceil(len(entries) / size))
        number = min(max(1, int(number or 1)), pages)
        chosen = entries[(number - 1) * size: number * size]
        files = [entry for entry in chosen if isinstance(entry, Path)]
        with ThreadPoolExecutor(max_workers=_THUMB_WORKERS) as pool:
            thumbs = dict(zip(files, pool.map(self._thumbnail_or_image, files), strict=True))
        facts = self.clip_facts()
        items = []
        for entry in chosen:
            if isinstance(entry, Path):
                caption = self.caption(entry.name)
                if entry.suffix.lower() in CLIP_SUFFIXES:
                    caption = f"{clip_label(entry.name, facts.get(entry.name, {}))} — {caption}"
                items.append((str(thumbs[entry]), caption, entry.name))
            else:
                why = f"{entry['reason']} ({entry['detail']})" if entry.get("detail") else entry["reason"]
                label = "unpaired" if entry["reason"] in PAIR_REASONS else "skipped"
                items.append((str(skipped_poster(self.thumbs_dir)), f"{entry['name']} · {label}: {why}",
                              entry["name"]))
        clips = sum(1 for path in media if path.suffix.lower() in CLIP_SUFFIXES)
        return Page(number=number, pages=pages, total=len(entries), items=items, images=len(media) - clips,
                    clips=clips, skipped_clips=len(skipped), pairs=self.is_pairs(), unpaired=len(unpaired))

    def warm_thumbnails(self, generation: int) -> None:
        """Make every missing thumbnail (in the background after a load), until another load starts."""
        def warm(image: Path) -> None:
            if generation == self._generation:
                self._thumbnail_or_image(image)

        with ThreadPoolExecutor(max_workers=_THUMB_WORKERS) as pool:
            list(pool.map(warm, self.media()))

    def _thumbnail_or_image(self, image: Path) -> Path:
        """The thumbnail (a clip's poster), or the file itself when none can be made (it vanished in a new load, or
        broke): the gallery shows a clip as a video then."""
        try:
            inputs = self.inputs_of(image.name) if image.suffix.lower() in IMAGE_SUFFIXES else []
            if inputs:
                return make_pair_thumbnail(image, inputs, folder=self.thumbs_dir)
            return make_thumbnail(image, folder=self.thumbs_dir)
        except Exception as exc:  # Pillow's and FFmpeg's errors alike: one broken file must not break the page
            logger.warning("no thumbnail for %s: %s", image.name, exc)
            return image

    def image_path(self, name: str) -> Path:
        """The image called `name` in the dataset; refuses anything that is not one of its images."""
        return self._path(name, IMAGE_SUFFIXES)

    def media_path(self, name: str) -> Path:
        """The image or clip called `name` in the dataset; refuses anything else."""
        return self._path(name, IMAGE_SUFFIXES | CLIP_SUFFIXES)

    def _path(self, name: str, suffixes: frozenset[str]) -> Path:
        path = self.images_dir / Path(name).name
        if Path(name).name != name or not path.is_file() or path.suffix.lower() not in suffixes:
            clips = " (nor one of its clips)" if CLIP_SUFFIXES <= suffixes else ""
            raise DatasetError(f"'{name}' is not an image of the current dataset{clips}", field="image")
        return path

    def is_clip(self, name: str) -> bool:
        return Path(name).suffix.lower() in CLIP_SUFFIXES

    def caption(self, name: str) -> str:
        caption = (self.images_dir / Path(name).name).with_suffix(".txt")
        return caption.read_text(encoding="utf-8").strip() if caption.is_file() else ""

    def save_caption(self, name: str, text: str) -> Path:
        """Write `text` as the caption of image (or clip) `name`. A dataset from a URL or HF repo now differs from its
        source, so the job's dataset becomes this folder."""
        return self._write_caption(name, text, origin="edited")

    def _write_caption(self, name: str, text: str, *, origin: str | None) -> Path:
        """Write one caption (atomically) and record its origin (None: keep the one recorded)."""
        if "\x00" in text:
            raise DatasetError("a caption cannot contain NUL characters", field="caption")
        target = self.media_path(name).with_suffix(".txt")
        with self._lock:
            partial = target.with_suffix(".txt.part")
            partial.write_text(text.strip() + "\n", encoding="utf-8")
            os.replace(partial, target)
            if origin is not None:
                origins = self.origins()
                origins[name] = origin
                (self.root / "captions.json").write_text(json.dumps(origins))
            if "path" not in self.source():
                self._set_source({"path": str(self.images_dir)})
        return target

    def flag(self, names: list[str]) -> list[str]:
        """Remember the images the last check flagged (those of this folder); return them."""
        with self._lock:
            self._flagged = [name for name in dict.fromkeys(names) if (self.images_dir / name).is_file()
                             and Path(name).name == name]
            return list(self._flagged)

    def flagged(self) -> list[str]:
        with self._lock:
            return list(self._flagged)

    def remove_flagged(self) -> list[str]:
        """Remove the flagged images with their captions and thumbnails; return the names removed. The dataset now
        differs from its source, so the job's dataset becomes this folder."""
        if self.captioning_busy():
            raise DatasetError("auto-caption is running: stop it or wait for it before removing images",
                               field="image")
        with self._lock:
            names, self._flagged = self._flagged, []
            removed = []
            for name in names:
                image = self.images_dir / name
                if not image.is_file():
                    continue
                thumb = self.thumbs_dir / _thumb_name(image)
                image.unlink()
                image.with_suffix(".txt").unlink(missing_ok=True)
                thumb.unlink(missing_ok=True)
                removed.append(name)
            if removed:
                origins = {key: value for key, value in self.origins().items() if key not in removed}
                (self.root / "captions.json").write_text(json.dumps(origins))
                self._set_source({"path": str(self.images_dir)})
        return removed

    def origins(self) -> dict[str, str]:
        """Image name -> where its caption came from, when not from the loaded dataset: file_name (it had none),
        edited (by hand), generated."""
        file = self.root / "captions.json"
        return json.loads(file.read_text()) if file.is_file() else {}

    # -- auto-caption ------------------------------------------------------------------------------------------------

    def to_caption(self, mode: str) -> list[str]:
        """The images and clips an auto-caption run in `mode` captions (a clip from a few of its frames,
        core/generation/captioning.py): never one edited by hand; in `missing` mode only those without a caption."""
        edited = {name for name, origin in self.origins().items() if origin == "edited"}
        names = [path.name for path in self.media() if path.name not in edited]
        if mode == "all":
            return names
        fallbacks = {name for name, origin in self.origins().items() if origin == "file_name"}
        return [name for name in names if name in fallbacks or not self.caption(name)]

    def captioning_busy(self) -> bool:
        return self._captioning is not None and self._captioning.running

    def refuse_training_while_captioning(self) -> None:
        """A training reads the captions as it starts: refused while an auto-caption run is still writing them."""
        run = self._captioning
        if run is not None and run.running:
            raise JobError(f"auto-caption is still writing captions ({run.line()}): wait for it to finish or stop "
                           "it on the Dataset tab, then start the training", field="captioning", code=ErrorCode.BUSY,
                           stage="train")

    def captioning(self) -> CaptionRun | None:
        """The latest auto-caption run (running or finished), if any."""
        return self._captioning

    def start_captioning(self, captioning: CaptioningSpec, *, names: list[str] | None = None) -> CaptionRun:
        """Caption `names` (default: what `captioning.mode` selects) in the background; one run at a time."""
        names = self.to_caption(captioning.mode) if names is None else [self.media_path(n).name for n in names]
        with self._lock:
            if self.captioning_busy():
                raise DatasetError("auto-caption is already running: wait for it or stop it", field="captioning")
            if not names:
                raise DatasetError("no image or clip to caption: every one has a caption (or was edited by hand); "
                                   "choose mode 'all' to replace the generated ones", field="captioning.mode")
            run = self._captioning = CaptionRun(model=captioning.model, names=names)
        threading.Thread(target=self._caption, args=(run, captioning), name="auto-caption", daemon=True).start()
        return run

    def stop_captioning(self) -> None:
        if self._captioning is not None:
            self._captioning.cancel.set()

    def _caption(self, run: CaptionRun, captioning: CaptioningSpec) -> None:
        plain = CaptionOptions(trigger_word=None)  # the trigger word is the job's business, at training time

        def write(index: int, text: str) -> None:
            self._write_caption(run.names[index], finish_caption(text, prefix=captioning.prefix, captions=plain),
                                origin="generated")

        token = self.settings.token()
        try:
            generate_captions([self.images_dir / name for name in run.names], captioning, settings=self.settings,
                              token=token, on_event=run.on_event, cancel=Cancel(event=run.cancel),
                              log=self.root / "caption.log", on_caption=write)
            run.state = "done"
        except JobError as error:
            stopped = error.code in (ErrorCode.CANCELLED, ErrorCode.TIMEOUT)
            run.state, run.error = ("cancelled" if stopped else "failed"), str(error)
        except Exception as error:  # never a silent dead thread: the status line says it
            logger.exception("auto-caption failed")
            run.state, run.error = "failed", f"{type(error).__name__}: {error}"

    # -- bulk tools --------------------------------------------------------------------------------------------------

    def replace_in_captions(self, find: str, replacement: str) -> int:
        """Replace `find` (plain text, case-sensitive) in every caption; the number of captions changed."""
        if not find:
            raise DatasetError("give the text to find", field="find")
        return self._rewrite(lambda text: text.replace(find, replacement))

    def add_tag(self, tag: str, *, at_start: bool = False) -> int:
        """Add `tag` to every caption that lacks it (comma-separated), at the start or the end."""
        tag = _tag(tag)
        def add(text: str) -> str:
            if tag.lower() in (part.strip().lower() for part in text.split(",")):
                return text
            return ", ".join(part for part in ((tag, text) if at_start else (text, tag)) if part)
        return self._rewrite(add)

    def remove_tag(self, tag: str) -> int:
        """Remove the comma-separated tag `tag` (any case) from every caption."""
        tag = _tag(tag).lower()
        return self._rewrite(lambda text: ", ".join(p.strip() for p in text.split(",")
                                                    if p.strip() and p.strip().lower() != tag))

    def _rewrite(self, change: Any) -> int:
        if self.captioning_busy():
            raise DatasetError("auto-caption is running: wait for it before editing captions", field="captioning")
        changed = 0
        for image in self.media():
            before = self.caption(image.name)
            after = clean_caption(change(before))
            if after != before:
                self._write_caption(image.name, after, origin=None)
                changed += 1
        return changed


def _tag(tag: str) -> str:
    tag = " ".join((tag or "").split())
    if not tag or "," in tag:
        raise DatasetError("give one tag (no commas)", field="tag")
    return tag


