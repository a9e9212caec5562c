"""The dataset being curated in the UI: one folder of staged images with their .txt captions, on the server.

It lives at DATA_DIR/dataset (images/, thumbs/, source.json), so a reload shows the same dataset. Loading goes
through the core's `stage_dataset` (the same safe fetch/extract/decode the worker uses) into a new folder beside
it, swapped in only when staging succeeded: a refused URL or a bad archive leaves the current dataset and its edited
captions as they were. A URL's credentials (user info, presigned signatures, tokens) serve the download only: they
are never recorded in source.json nor quoted in an error. Thumbnails are made on demand for the page asked for (a
few in parallel) and in the background for the rest, and cached on disk, so a page of a 1,000-image dataset shows
in well under a second.
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

from PIL import Image, ImageOps

from core.archive import IMAGE_SUFFIXES, archive_kind
from core.dataset import Manifest, caption_options, stage_dataset
from core.errors import DatasetError, JobError
from core.events import EventSink, ignore_event
from core.pipeline import hub_token
from core.secrets import mask_secret_values, redact, url_credentials
from core.settings import Settings
from core.spec import DataloaderOptions, DatasetSpec, JobSpec

THUMB_SIZE = 256
PAGE_SIZE = 24
_THUMB_WORKERS = min(8, os.cpu_count() or 2)
# A load stages beside the dataset folder (same disk, so the swap is a rename); the old folder is retired, then removed.
STAGING_PREFIX = "dataset.staging-"
RETIRED_PREFIX = "dataset.retired-"
logger = logging.getLogger("app.dataset_store")


@dataclass(frozen=True)
class Page:
    number: int
    """1-based, clamped to the pages there are."""
    pages: int
    total: int
    items: list[tuple[str, str, str]]
    """(thumbnail path, caption, image file name) in order."""


def stage(spec: JobSpec, dest: Path, *, settings: Settings, on_event: EventSink = ignore_event) -> Manifest:
    """The app's one call into the core's staging (every load comes through here)."""
    with url_credentials_hidden(spec):
        return stage_dataset(spec.dataset, dest, captions=caption_options(spec), token=hub_token(spec, settings),
                             settings=settings, on_event=on_event)


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
    """The cached thumbnail of `image` (made now if missing or stale): a JPEG at most `size` px a side."""
    target = folder / _thumb_name(image)
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with Image.open(image) as source:
        source.draft("RGB", (size, size))  # JPEG: decode at a fraction of the size, much faster
        thumb = ImageOps.exif_transpose(source)
        thumb.thumbnail((size, size))
        if thumb.mode != "RGB":
            background = Image.new("RGB", thumb.size, (255, 255, 255))
            rgba = thumb.convert("RGBA")
            background.paste(rgba, mask=rgba.getchannel("A"))
            thumb = background
        partial = target.with_suffix(f".{threading.get_ident()}.part")
        thumb.save(partial, format="JPEG", quality=82)
    os.replace(partial, target)  # atomic: a page and the background warmer may race on one image
    return target


class DatasetStore:
    """The curated dataset folder. Methods are safe to call from several requests at once."""

    def __init__(self, *, settings: Settings, max_upload_bytes: int | None = None):
        self.settings = settings
        self.root = settings.data_root / "dataset"
        self.max_upload_bytes = max_upload_bytes
        """The most bytes one upload (all its files together) may hold; None: no limit."""
        self._lock = threading.Lock()
        self._generation = 0
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
        if not self.images_dir.is_dir():
            return []
        return sorted((p for p in self.images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                      key=lambda p: p.name)

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
        spec = JobSpec.model_construct(dataset=dataset, dataloader=DataloaderOptions(), trigger_word=None,
                                       hub=None, config={})
        staging = self.settings.data_root / f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}"
        try:
            manifest = stage(spec, staging, settings=self.settings, on_event=on_event)
            (staging / "source.json").write_text(json.dumps(self._source_of(dataset)))
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
        return replace(manifest, root=self.images_dir,
                       images=[replace(entry, path=self.images_dir / entry.path.name) for entry in manifest.images])

    def load_uploads(self, files: list[Path], *, run_id: str, on_event: EventSink = ignore_event) -> Manifest:
        """Load uploaded files: one archive, or images with their .txt captions (matched by file name). Errors
        name the `upload` field: the paths staged from are the server's, not the user's."""
        if not files:
            raise DatasetError("no files uploaded: add a .zip, or images with their .txt captions", field="upload")
        files = [Path(f) for f in files]
        size = sum(f.stat().st_size for f in files if f.is_file())
        if self.max_upload_bytes is not None and size > self.max_upload_bytes:
            raise DatasetError(f"the upload is {_megabytes(size)}, over the {_megabytes(self.max_upload_bytes)} "
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
        images = self.images()
        pages = max(1, math.ceil(len(images) / size))
        number = min(max(1, int(number or 1)), pages)
        chosen = images[(number - 1) * size: number * size]
        with ThreadPoolExecutor(max_workers=_THUMB_WORKERS) as pool:
            thumbs = list(pool.map(self._thumbnail_or_image, chosen))
        items = [(str(thumb), self.caption(image.name), image.name) for thumb, image in zip(thumbs, chosen,
                                                                                          strict=True)]
        return Page(number=number, pages=pages, total=len(images), items=items)

    def warm_thumbnails(self, generation: int) -> None:
        """Make every missing thumbnail (in the background after a load), until another load starts."""
        def warm(image: Path) -> None:
            if generation == self._generation:
                self._thumbnail_or_image(image)

        with ThreadPoolExecutor(max_workers=_THUMB_WORKERS) as pool:
            list(pool.map(warm, self.images()))

    def _thumbnail_or_image(self, image: Path) -> Path:
        """The thumbnail, or the image itself when none can be made (it vanished in a new load, or broke)."""
        try:
            return make_thumbnail(image, folder=self.thumbs_dir)
        except (OSError, ValueError) as exc:
            logger.warning("no thumbnail for %s: %s", image.name, exc)
            return image

    def image_path(self, name: str) -> Path:
        """The image called `name` in the dataset; refuses anything that is not one of its images."""
        path = self.images_dir / Path(name).name
        if Path(name).name != name or not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            raise DatasetError(f"'{name}' is not an image of the current dataset", field="image")
        return path

    def caption(self, name: str) -> str:
        caption = (self.images_dir / Path(name).name).with_suffix(".txt")
        return caption.read_text(encoding="utf-8").strip() if caption.is_file() else ""

    def save_caption(self, name: str, text: str) -> Path:
        """Write `text` as the caption of image `name`. A dataset from a URL or HF repo now differs from its
        source, so the job's dataset becomes this folder."""
        if "\x00" in text:
            raise DatasetError("a caption cannot contain NUL characters", field="caption")
        target = self.image_path(name).with_suffix(".txt")
        with self._lock:
            partial = target.with_suffix(".txt.part")
            partial.write_text(text.strip() + "\n", encoding="utf-8")
            os.replace(partial, target)
            if "path" not in self.source():
                self._set_source({"path": str(self.images_dir)})
        return target


def _megabytes(size: int) -> str:
    return f"{size / 1024**2:,.1f} MB"
