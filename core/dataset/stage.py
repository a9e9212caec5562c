"""Dataset staging: from wherever the user keeps a dataset to one flat folder SimpleTuner reads.

`stage_dataset(dataset, dest, captions=..., settings=...)` fetches the source (local path, http(s)/s3 URL, HF
dataset repo, inline list), extracts archives safely, decodes every image with Pillow, pairs captions, applies the
trigger word, and writes `dest/images/<stem>.<ext>` + `<stem>.txt`. Video clips (.mp4, .webm, .mov, .mkv) are probed
(core/dataset/clips.py) and written the same way into `dest/clips/`: a folder of their own, since SimpleTuner's
image backend would also list a clip beside its images. A dataset of edit pairs (core/dataset/pairs.py) stages its
targets as the images and each one's inputs into `dest/control/`, `dest/control_2/`, ... under the target's file
name. Nothing is written outside `dest`. A cancel (or the job's
deadline) stops it between download chunks, archive members and images.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

from PIL import Image, UnidentifiedImageError

from core.adapters import download, file_name, public_url
from core.cancel import Cancel
from core.dataset.archive import (
    IMAGE_SUFFIXES,
    MACOS_METADATA,
    Extracted,
    ExtractLimits,
    archive_kind,
    extract_archive,
    skip_reason,
)
from core.dataset.clips import CLIP_SUFFIXES, ClipProbe, ClipRefused, Unusable, probe_clip
from core.dataset.concepts import KOHYA_FOLDER, MAIN_FOLDER, concept_of
from core.dataset.hf_repo import fetch_hf_dataset
from core.dataset.pairs import (
    BAD_INPUT,
    CONTROL_DIRS,
    SIZE_APART,
    SIZE_RATIO_LIMIT,
    PairSet,
    describe_convention,
    split_pairs,
)
from core.dataset.subsets import (
    BAD_MASK,
    EVAL_DIR,
    MASKS_DIR,
    REG_DIR,
    SUBSET_DIRS,
    Subsets,
    fit_mask,
    split_names,
    white_mask,
)
from core.dataset.zip_follow import ZipFollower
from core.errors import DatasetError, DownloadError, EmptyDataset
from core.events import EventSink, LogLine, ignore_event
from core.settings import Settings
from core.spec import ClipLimits, DataloaderOptions, DatasetSpec, JobSpec, fill_trigger

IMAGES_DIR = "images"
CLIPS_DIR = "clips"
DOWNLOAD_DIR = "_download"
EXTRACT_DIR = "_extract"
# Formats SimpleTuner (Pillow) reads that we keep byte for byte; everything else is re-encoded as PNG.
KEPT_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "WEBP": ".webp"}
_WORKERS = min(8, os.cpu_count() or 2)

__all__ = [
    "CaptionOptions",
    "ClipEntry",
    "ImageEntry",
    "Manifest",
    "Skipped",
    "StagingLimits",
    "apply_trigger",
    "caption_options",
    "clean_caption",
    "resolve_local_path",
    "stage_dataset",
]


@dataclass
class ImageEntry:
    path: Path
    caption: str
    width: int
    height: int
    caption_source: str
    """file | inline | column | trigger_word | file_name"""
    sha256: str | None = None
    """The image file's sha256 when staging already had its bytes in hand (a zip followed while downloading)."""
    trigger_in_caption: bool | None = None
    """Whether its own caption named the trigger word before staging put it in; None: no trigger word, or no
    caption of its own (the dataset doctor reads it: core/dataset/doctor.py)."""


@dataclass
class ClipEntry:
    """A staged video clip: where it is, its caption, and what its container says (core/dataset/clips.py)."""

    path: Path
    caption: str
    width: int
    height: int
    frames: int
    fps: float
    duration_s: float
    codec: str
    caption_source: str


@dataclass
class Skipped:
    name: str
    reason: str
    """A short category, the same for every file skipped for the same reason (counted by it)."""
    detail: str = ""


@dataclass
class Manifest:
    root: Path
    images: list[ImageEntry]
    skipped: list[Skipped]
    source: str
    clips: list[ClipEntry] = field(default_factory=list)
    clips_root: Path | None = None
    """dest/clips when the dataset has clips: the video backend's folder."""
    pairs: PairSet | None = None
    """The inputs of a dataset of edit pairs (its images are the targets); None for any other dataset."""
    subsets: Subsets | None = None
    """Its regularisation and held-out images and its masks (core/dataset/subsets.py); None: it has none."""

    def skipped_by_reason(self) -> dict[str, int]:
        return dict(Counter(item.reason for item in self.skipped).most_common())


@dataclass(frozen=True)
class StagingLimits:
    max_download_bytes: int = 20 * 1024**3
    extract: ExtractLimits = ExtractLimits()
    clips: ClipLimits = ClipLimits()

    @property
    def archive(self) -> ExtractLimits:
        """The archive bounds, with one clip's bound from `clips` (a clip member over it is never extracted)."""
        return replace(self.extract, max_clip_bytes=self.clips.max_bytes)


@dataclass(frozen=True)
class CaptionOptions:
    extension: str = ".txt"
    trigger_word: str | None = None
    placement: str = "prefix"
    clean: bool = True
    class_word: str | None = None
    """Put after the trigger word where a caption lacks it ("ohwx woman"): a likeness or object goal's."""


@dataclass
class _Candidate:
    """One file that may become a training image, with its caption if the source gave one."""

    name: str
    image: Path
    caption: str | None = None
    caption_source: str = "file"
    owned: bool = False
    """True when the file is ours (downloaded or extracted): moved into place instead of copied."""
    caption_file: Path | None = None
    """Its caption file when that is ours too (extracted): moved into place and rewritten, no new file made."""


@dataclass
class _Gathered:
    candidates: list[_Candidate] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    loose_captions: dict[str, Path] = field(default_factory=dict)
    """Caption files with no image of their stem (relative name -> file): an edit pair's NAME.txt, else skipped."""


def caption_options(spec: JobSpec) -> CaptionOptions:
    loader = spec.dataloader
    if isinstance(loader, DataloaderOptions):
        return CaptionOptions(
            extension=loader.caption_extension.lower(),
            trigger_word=spec.trigger_word,
            placement=loader.trigger_placement,
            clean=loader.clean_captions,
            class_word=_class_word(spec),
        )
    return CaptionOptions(trigger_word=spec.trigger_word, class_word=_class_word(spec))


def _class_word(spec: JobSpec) -> str | None:
    """A likeness or object goal's class word: captions lead with "<trigger> <class word>"."""
    return spec.class_word if spec.goal in ("likeness", "object") and spec.trigger_word else None


def describe_source(dataset: DatasetSpec) -> str:
    """A human description of the source with no secret in it (presigned query strings dropped)."""
    if dataset.path:
        return f"path {dataset.path}"
    if dataset.url:
        return f"url {public_url(dataset.url)}"
    if dataset.hf_repo:
        return f"hf dataset {dataset.hf_repo}@{dataset.revision}"
    return f"{len(dataset.files or [])} inline files"



def stage_dataset(
    dataset: DatasetSpec,
    dest: Path,
    *,
    settings: Settings,
    captions: CaptionOptions = CaptionOptions(),
    token: str | None = None,
    cancel: Cancel | None = None,
    on_event: EventSink = ignore_event,
    allow_local_paths: bool = True,
    limits: StagingLimits = StagingLimits(),
    concepts: bool = True,
) -> Manifest:
    """Stage `dataset` into `dest/images`, its captions made by `captions`; raise a DatasetError subclass naming what
    is wrong, or JobCancelled/JobTimeout when `cancel` stops it. `token`: for a private HF dataset repo; `concepts`:
    stage concept folders apart (core/dataset/concepts.py); False: every image in one flat folder."""
    cancel = Cancel.of(cancel)
    dest = dest.absolute()
    dest.mkdir(parents=True, exist_ok=True)
    source = describe_source(dataset)
    # The pipeline reports the stage itself (started/completed/failed); these lines say what happens inside it.
    on_event(LogLine(f"staging the dataset from {source}"))
    options = captions
    keep = IMAGE_SUFFIXES | CLIP_SUFFIXES | {options.extension}
    root, clips_root = dest / IMAGES_DIR, dest / CLIPS_DIR
    for folder in (root, clips_root, *(dest / name for name in (*CONTROL_DIRS, *SUBSET_DIRS))):
        if folder.exists():
            shutil.rmtree(folder)  # a re-run of the same job starts clean
    root.mkdir()
    decoder = _Decoder(clip_limits=limits.clips)
    pairs: PairSet | None = None
    subsets: Subsets | None = None
    try:
        gathered = _gather(
            dataset, dest, keep=keep, options=options, settings=settings, on_event=on_event,
            allow_local_paths=allow_local_paths, limits=limits, hf_token=token, decoder=decoder, cancel=cancel,
        )
        set_aside = _set_subsets_aside(gathered, dataset)
        paired = _split_pairs(gathered, control_dirs=dataset.control_dirs) if dataset.pairs else None
        gathered.skipped += [Skipped(name, "caption without an image") for name in sorted(gathered.loose_captions)]
        folders = {} if paired is not None or not concepts else \
            _concept_folders(gathered.candidates, repeats=dataset.repeats)
        images, clips, skipped, names = _stage_all(gathered, root=root, clips_root=clips_root, options=options,
                                                   decoder=decoder, cancel=cancel, folders=folders)
        if paired is not None:
            images, pairs = _stage_inputs(paired, images, names, dest=dest, decoder=decoder, skipped=skipped,
                                          cancel=cancel)
            pairs.looked_for = describe_convention(dataset.control_dirs)
        if set_aside is not None:
            subsets = _stage_subsets(set_aside, images, names, dest=dest, options=options, decoder=decoder,
                                     skipped=skipped, cancel=cancel, pairs=paired is not None)
    finally:
        decoder.close()
        shutil.rmtree(dest / EXTRACT_DIR, ignore_errors=True)
    manifest = Manifest(root=root, images=images, skipped=gathered.skipped + skipped, source=source, clips=clips,
                        clips_root=clips_root if clips else None, pairs=pairs, subsets=subsets)
    if not images and not clips:
        raise EmptyDataset(_empty_message(manifest), field="dataset")
    shutil.rmtree(dest / DOWNLOAD_DIR, ignore_errors=True)
    staged = f"{len(images)} images and {len(clips)} clips" if clips else f"{len(images)} images"
    if pairs is not None:
        staged = f"{len(images)} edit pairs ({pairs.inputs} input{'s' if pairs.inputs > 1 else ''} each)"
    message = f"{staged} staged, {len(manifest.skipped)} skipped"
    on_event(LogLine(message))
    return manifest


def _empty_message(manifest: Manifest) -> str:
    counts = manifest.skipped_by_reason()
    if not counts:
        return f"no images found in {manifest.source} (and no video clips)"
    reasons = ", ".join(f"{count} {reason}" for reason, count in counts.items())
    examples = "; ".join(
        f"{item.name}: {item.detail or item.reason}" for item in manifest.skipped[:3]
    )
    return (f"no usable image (or video clip) in {manifest.source}: {len(manifest.skipped)} files skipped ({reasons}). "
            f"e.g. {examples}")


# -- sources -----------------------------------------------------------------------------------------------------


def _gather(
    dataset: DatasetSpec,
    dest: Path,
    *,
    keep: frozenset[str],
    options: CaptionOptions,
    settings: Settings,
    on_event: EventSink,
    allow_local_paths: bool,
    limits: StagingLimits,
    hf_token: str | None,
    decoder: _Decoder,
    cancel: Cancel,
) -> _Gathered:
    if dataset.path:
        path = resolve_local_path(dataset.path, settings=settings, allow_local_paths=allow_local_paths)
        if path.is_dir():
            return _walk(path, keep=keep, options=options, owned=False, confine=None if allow_local_paths else path)
        return _from_file(path, dest, keep=keep, options=options, limits=limits, label=path.name, owned=False,
                          decoder=decoder, cancel=cancel)
    if dataset.url:
        return _from_url(dataset.url, dest, keep=keep, options=options, settings=settings, on_event=on_event,
                         limits=limits, decoder=decoder, cancel=cancel)
    if dataset.files:
        return _inline(dataset, dest, settings=settings, on_event=on_event, limits=limits, cancel=cancel)
    fetched = fetch_hf_dataset(
        dataset, dest / DOWNLOAD_DIR, keep_suffixes=keep, max_bytes=limits.max_download_bytes,
        max_clip_bytes=limits.clips.max_bytes, token=hf_token, on_event=on_event, cancel=cancel,
    )
    if fetched.folder is not None:
        gathered = _walk(fetched.folder, keep=keep, options=options, owned=True, confine=None)
    else:
        gathered = _Gathered(
            candidates=[
                _Candidate(name=row.name, image=row.image, caption=row.caption, caption_source="column", owned=True)
                for row in fetched.rows
            ]
        )
    gathered.skipped[:0] = [Skipped(name, reason, detail) for name, reason, detail in fetched.skipped]
    return gathered


def resolve_local_path(raw: str, *, settings: Settings, allow_local_paths: bool) -> Path:
    """The absolute local dataset path; the worker (allow_local_paths=False) only reads under DATASET_ROOT."""
    if allow_local_paths:
        path = Path(raw).expanduser().absolute()
    else:
        if settings.dataset_root is None:
            raise DatasetError(
                "local paths are not accepted here (set DATASET_ROOT to allow a folder); give dataset.url instead",
                field="dataset.path",
            )
        allowed = settings.dataset_root.resolve()
        path = (allowed / raw).resolve()
        if not path.is_relative_to(allowed):
            raise DatasetError(f"'{raw}' is outside the allowed dataset root {allowed}", field="dataset.path")
    if not path.exists():
        raise DatasetError(f"'{raw}' does not exist", field="dataset.path")
    return path


def _from_file(
    file: Path,
    dest: Path,
    *,
    keep: frozenset[str],
    options: CaptionOptions,
    limits: StagingLimits,
    label: str,
    owned: bool,
    decoder: _Decoder,
    cancel: Cancel,
) -> _Gathered:
    """An archive (extracted into dest/_extract, its images decoded as they come out) or a single image."""
    if archive_kind(file) is not None:
        extracted = extract_archive(
            file, dest / EXTRACT_DIR, keep_suffixes=keep, limits=limits.archive, label=label, on_file=decoder.submit,
            cancel=cancel,
        )
        return _from_extracted(extracted, keep=keep, options=options)
    return _Gathered(candidates=[_Candidate(name=label, image=file, caption=None, caption_source="file", owned=owned)])


def _from_url(url: str, dest: Path, *, keep: frozenset[str], options: CaptionOptions, settings: Settings,
              on_event: EventSink, limits: StagingLimits, decoder: _Decoder, cancel: Cancel) -> _Gathered:
    """A downloaded file; a zip is extracted and checked while it downloads when it can be (core/dataset/zip_follow.py),
    else once it is on disk."""
    follower = ZipFollower(dest / EXTRACT_DIR, keep_suffixes=keep, limits=limits.archive, label=file_name(url),
                           on_file=decoder.check_now, cancel=cancel)
    try:
        file = download(url, dest / DOWNLOAD_DIR, settings=settings, on_event=on_event,
                        max_bytes=limits.max_download_bytes, cancel=cancel, on_written=follower.written)
    except BaseException:
        follower.abandon()
        raise
    extracted = follower.finish(file)
    if extracted is None:
        decoder.forget()  # what the follower checked is gone: the file is extracted again
        return _from_file(file, dest, keep=keep, options=options, limits=limits, label=file.name, owned=True,
                          decoder=decoder, cancel=cancel)
    return _from_extracted(extracted, keep=keep, options=options)


def _from_extracted(extracted: Extracted, *, keep: frozenset[str], options: CaptionOptions) -> _Gathered:
    gathered = _walk(extracted.root, keep=keep, options=options, owned=True, confine=extracted.root)
    gathered.skipped[:0] = [_skip(name, reason) for name, reason in extracted.skipped]
    return gathered


def _skip(name: str, reason: str) -> Skipped:
    """'unreadable in archive (Bad CRC)' -> category 'unreadable in archive', detail the whole text."""
    category = reason.split(" (", 1)[0]
    return Skipped(name, category, reason if reason != category else "")


def _content_root(folder: Path) -> Path:
    """Flatten single top-level folders: a zip of 'my-dataset/' holds the dataset one level down."""
    while True:
        entries = [e for e in folder.iterdir() if not e.name.startswith(".") and e.name != MACOS_METADATA]
        if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink() \
                and not KOHYA_FOLDER.match(entries[0].name):  # a zip of one concept folder keeps its repeats
            folder = entries[0]
            continue
        return folder


def _walk(  # noqa: C901 (one walk: a skip rule per kind of entry met, then captions paired)
    folder: Path, *, keep: frozenset[str], options: CaptionOptions, owned: bool, confine: Path | None
) -> _Gathered:
    """Every image under `folder` with its caption file; `confine` refuses symlinks leading outside it."""
    out = _Gathered()
    root = _content_root(folder)
    images: list[tuple[str, Path]] = []
    captions: dict[tuple[str, str], Path] = {}
    for current, dirs, files in os.walk(root):
        here = Path(current)
        rel_dir = here.relative_to(root).parts
        for name in sorted(dirs):
            reason = skip_reason((*rel_dir, name, "x.png"), keep_suffixes=IMAGE_SUFFIXES)
            if reason:
                out.skipped.append(Skipped("/".join((*rel_dir, name)) + "/", reason.replace("file", "folder")))
                dirs.remove(name)
        dirs.sort()
        for name in sorted(files):
            parts = (*rel_dir, name)
            rel = "/".join(parts)
            path = here / name
            reason = skip_reason(parts, keep_suffixes=keep)
            if reason:
                out.skipped.append(Skipped(rel, reason))
                continue
            if path.is_symlink() and confine is not None and not path.resolve().is_relative_to(confine.resolve()):
                out.skipped.append(Skipped(rel, "symlink", "points outside the dataset folder"))
                continue
            if not path.is_file():
                out.skipped.append(Skipped(rel, "special file"))
                continue
            suffix = path.suffix.lower()
            if suffix == options.extension and suffix not in IMAGE_SUFFIXES:
                captions[("/".join(rel_dir), path.stem.lower())] = path
            else:
                images.append((rel, path))
    used: set[tuple[str, str]] = set()
    for rel, path in images:
        key = ("/".join(Path(rel).parts[:-1]), path.stem.lower())
        caption_file = captions.get(key)
        text, movable = None, None
        if caption_file is not None:
            movable = caption_file if owned and key not in used else None  # a.png and a.jpg share a.txt
            used.add(key)
            text = _read_caption(caption_file)
        out.candidates.append(_Candidate(name=rel, image=path, caption=text, caption_source="file", owned=owned,
                                         caption_file=movable))
    for key, path in sorted(captions.items()):
        if key not in used:
            out.loose_captions["/".join(filter(None, (key[0], path.name)))] = path
    return out


def _read_caption(path: Path) -> str:
    return path.read_bytes().decode("utf-8-sig", errors="replace")


def _inline(dataset: DatasetSpec, dest: Path, *, settings: Settings, on_event: EventSink, limits: StagingLimits,
            cancel: Cancel) -> _Gathered:
    """Download each {url, caption} (a few at a time); a file that fails to download is a counted skip, a URL
    the address policy refuses fails the job."""
    out = _Gathered()
    folder = dest / DOWNLOAD_DIR
    items = list(enumerate(dataset.files or []))

    def fetch(index: int, url: str) -> Path | DownloadError:
        try:
            return download(
                url, folder / f"{index:05d}", settings=settings, on_event=on_event,
                max_bytes=limits.max_download_bytes, cancel=cancel, field=f"dataset.files.{index}.url",
            )
        except DownloadError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="fetch") as pool:
        results = list(pool.map(lambda pair: fetch(pair[0], pair[1].url), items))
    for (index, item), result in zip(items, results, strict=True):
        if isinstance(result, DownloadError):
            out.skipped.append(Skipped(f"files[{index}] {public_url(item.url)}", "download failed", result.message))
            continue
        out.candidates.append(
            _Candidate(name=f"{index:05d}_{result.name}", image=result, caption=item.caption, caption_source="inline",
                       owned=True)
        )
    return out


# -- edit pairs --------------------------------------------------------------------------------------------------


@dataclass
class _Paired:
    layout: str
    inputs: dict[str, list[_Candidate]]
    """target's name in the source -> its input files, in input order."""


def _split_pairs(gathered: _Gathered, *, control_dirs: list[str] | None) -> _Paired | None:
    """Read the gathered images as edit pairs (core/dataset/pairs.py): the targets stay candidates, their inputs are
    set aside, the files of no whole pair are skipped with the reason. None: the dataset holds no pairs."""
    images = [c for c in gathered.candidates if c.image.suffix.lower() in IMAGE_SUFFIXES]
    split = split_pairs([c.name for c in images], captions=set(gathered.loose_captions), control_dirs=control_dirs)
    if split is None:
        return None
    by_name = {c.name: c for c in images}
    for target, caption in split.instructions.items():  # NAME.txt of NAME_end.png
        candidate = by_name[target]
        file = gathered.loose_captions.pop(caption)
        if not (candidate.caption or "").strip():
            candidate.caption, candidate.caption_file = _read_caption(file), None
    gathered.skipped += [Skipped(name, reason, detail) for name, reason, detail in split.unpaired]
    targets = set(split.targets)
    gathered.candidates = [c for c in gathered.candidates if c.name in targets
                           or c.image.suffix.lower() not in IMAGE_SUFFIXES]
    return _Paired(layout=split.layout,
                   inputs={t: [by_name[name] for name in names] for t, names in zip(split.targets, split.inputs,
                                                                                     strict=True)})


def _stage_inputs(paired: _Paired, images: list[ImageEntry], names: list[str], *, dest: Path, decoder: _Decoder,
                  skipped: list[Skipped], cancel: Cancel) -> tuple[list[ImageEntry], PairSet]:
    """Each staged target's inputs, decoded, into dest/control/, control_2/, ... under the target's file name (how
    SimpleTuner links them). A pair whose input cannot be used, or whose sides are SIZE_RATIO_LIMIT times apart in
    pixels, is taken out again, its files listed in `skipped`."""
    count = max((len(inputs) for inputs in paired.inputs.values()), default=1)
    folders = [dest / name for name in CONTROL_DIRS[:count]]
    for folder in folders:
        folder.mkdir()
    for inputs in paired.inputs.values():
        for candidate in inputs:
            decoder.submit(candidate.image)
    kept: list[ImageEntry] = []
    sizes: dict[str, list[tuple[int, int]]] = {}
    for entry, name in zip(images, names, strict=True):
        cancel.check("while checking the edit pairs")
        inputs = paired.inputs[name]
        problem = _input_problem(entry, inputs, decoder)
        if problem is not None:
            reason, detail = problem
            skipped += [Skipped(name, reason, detail)] + [Skipped(c.name, reason, detail) for c in inputs]
            entry.path.unlink(missing_ok=True)
            entry.path.with_suffix(".txt").unlink(missing_ok=True)
            continue
        probes = [decoder.result(c.image) for c in inputs]
        for candidate, probe, folder in zip(inputs, probes, folders, strict=True):
            target = folder / entry.path.name
            if probe.kind not in KEPT_FORMATS:
                _convert_to_png(candidate.image, target)  # PNG under the target's name: Pillow reads the content
            elif candidate.owned:
                os.replace(candidate.image, target)
            else:
                shutil.copyfile(candidate.image, target)
        sizes[entry.path.name] = [(probe.width, probe.height) for probe in probes]
        kept.append(entry)
    return kept, PairSet(layout=paired.layout, folders=folders, sizes=sizes)


def _input_problem(entry: ImageEntry, inputs: list[_Candidate], decoder: _Decoder) -> tuple[str, str] | None:
    """Why a staged target's pair cannot train: an input that is no usable image, or sides far apart in size."""
    for candidate in inputs:
        try:
            probe = decoder.result(candidate.image)
        except Unusable as exc:
            return BAD_INPUT, f"{candidate.name}: {exc.reason}" + (f" ({exc.detail})" if exc.detail else "")
        ratio = (probe.width * probe.height) / max(entry.width * entry.height, 1)
        if max(ratio, 1 / max(ratio, 1e-12)) >= SIZE_RATIO_LIMIT:
            return SIZE_APART, (f"input {candidate.name} is {probe.width}x{probe.height}, its target "
                                f"{entry.width}x{entry.height}: more than {SIZE_RATIO_LIMIT:g}x apart in pixels, "
                                "one of them is likely the wrong file")
    return None


# -- regularisation, held-out images, masks ---------------------------------------------------------------------


@dataclass
class _SetAside:
    """The gathered files that are no training images (core/dataset/subsets.py), before staging."""

    reg: list[_Candidate]
    eval: list[_Candidate]
    masks: dict[str, _Candidate]
    """Training image's name in the source -> its mask."""
    held_out: int


def _set_subsets_aside(gathered: _Gathered, dataset: DatasetSpec) -> _SetAside | None:
    """Take the regularisation and held-out images and the masks out of the gathered candidates (a mask of no
    training image is skipped, with the reason). None: the dataset has none of them."""
    images = [c for c in gathered.candidates if c.image.suffix.lower() in IMAGE_SUFFIXES]
    split = split_names([c.name for c in images], reg_dir=dataset.reg_dir, eval_dir=dataset.eval_dir,
                        eval_share=dataset.eval_share)
    if not (split.reg or split.eval or split.masks or split.unpaired):
        return None
    by_name = {c.name: c for c in images}
    gathered.skipped += [Skipped(name, reason) for name, reason in split.unpaired]
    aside = {*split.reg, *split.eval, *split.masks.values(), *(name for name, _ in split.unpaired)}
    gathered.candidates = [c for c in gathered.candidates if c.name not in aside]
    return _SetAside(reg=[by_name[n] for n in split.reg], eval=[by_name[n] for n in split.eval],
                     masks={image: by_name[mask] for image, mask in split.masks.items()}, held_out=split.held_out)


def _stage_subsets(aside: _SetAside, images: list[ImageEntry], names: list[str], *, dest: Path,
                   options: CaptionOptions, decoder: _Decoder, skipped: list[Skipped], cancel: Cancel,
                   pairs: bool) -> Subsets | None:
    """The regularisation images into dest/reg/ (their captions without the trigger word), the held-out ones into
    dest/eval/, each training image's mask into dest/masks/ under the image's file name (a white one for an image
    without a mask; a mask of another size resized to its image's). A dataset of edit pairs uses none of them."""
    if pairs:
        skipped += [Skipped(c.name, "not used with edit pairs")
                    for c in (*aside.reg, *aside.eval, *aside.masks.values())]
        return None
    subsets = Subsets(held_out=aside.held_out)
    for candidates, folder, captions in ((aside.reg, REG_DIR, replace(options, trigger_word=None)),
                                         (aside.eval, EVAL_DIR, options)):
        if not candidates:
            continue
        (dest / folder).mkdir()
        staged, _, bad, _ = _stage_all(_Gathered(candidates=candidates), root=dest / folder,
                                       clips_root=dest / CLIPS_DIR, options=captions, decoder=decoder, cancel=cancel)
        skipped += bad
        if folder == REG_DIR:
            subsets.reg_root, subsets.reg = dest / folder, [entry.path for entry in staged]
        else:
            subsets.eval_root, subsets.eval = dest / folder, [entry.path for entry in staged]
    if aside.masks:
        _stage_masks(aside.masks, images, names, folder=dest / MASKS_DIR, subsets=subsets, skipped=skipped,
                     cancel=cancel)
    return None if subsets.empty else subsets


def _stage_masks(masks: dict[str, _Candidate], images: list[ImageEntry], names: list[str], *, folder: Path,
                 subsets: Subsets, skipped: list[Skipped], cancel: Cancel) -> None:
    folder.mkdir()
    for entry, name in zip(images, names, strict=True):
        cancel.check("while checking the masks")
        target, size = folder / entry.path.name, (entry.width, entry.height)
        mask = masks.get(name)
        if mask is not None:
            try:
                if fit_mask(mask.image, target, size=size):
                    subsets.masks_resized.append(mask.name)
                subsets.masks += 1
                continue
            except (OSError, ValueError) as exc:
                skipped.append(Skipped(mask.name, BAD_MASK, str(exc) or type(exc).__name__))
        white_mask(target, size=size)
        subsets.masks_filled += 1
    if not subsets.masks:
        shutil.rmtree(folder)
        subsets.masks_filled = 0
    else:
        subsets.masks_root = folder


# -- images and captions -----------------------------------------------------------------------------------------


def clean_caption(text: str) -> str:
    """Collapse whitespace; in tag-style captions drop empty and repeated comma-separated tags."""
    text = re.sub(r"\s+", " ", text).strip()
    if "," not in text:
        return text
    seen: set[str] = set()
    tags = []
    for tag in (part.strip() for part in text.split(",")):
        if tag and tag.lower() not in seen:
            seen.add(tag.lower())
            tags.append(tag)
    return ", ".join(tags)


def _concept_folders(candidates: list[_Candidate], *, repeats: dict[str, int]) -> dict[str, tuple[str, str | None]]:
    """Candidate name -> (its staged sub-folder, its concept's own trigger word) when the dataset has concepts
    (core/dataset/concepts.py): kohya-named top-level folders or those dataset.repeats names; the images of no
    concept then go to _main. {}: no concepts, everything staged flat as before."""
    found: dict[str, tuple[str, str | None]] = {}
    for candidate in candidates:
        parts = Path(candidate.name).parts
        concept = concept_of(parts[0], repeats=repeats) if len(parts) > 1 else None
        if concept is not None:
            found[candidate.name] = (concept.folder, concept.trigger)
    if not found:
        return {}
    return {candidate.name: found.get(candidate.name, (MAIN_FOLDER, None)) for candidate in candidates}


def has_trigger(caption: str, trigger: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(trigger)}(?!\w)", caption, flags=re.IGNORECASE) is not None


def apply_trigger(caption: str, *, trigger: str | None, placement: str = "prefix",
                  class_word: str | None = None) -> str:
    """The caption with the trigger word in it; `class_word` follows a trigger put in ("ohwx woman")."""
    caption = fill_trigger(caption, trigger)  # "[trigger]" marks where the word goes
    if not trigger or has_trigger(caption, trigger):
        return caption
    lead = f"{trigger} {class_word}" if class_word else trigger
    if not caption:
        return lead
    return f"{caption}, {lead}" if placement == "suffix" else f"{lead}, {caption}"


def _caption(candidate: _Candidate, *, stem: str, options: CaptionOptions) -> tuple[str, str]:
    raw = candidate.caption or ""
    text = clean_caption(raw) if options.clean else raw.strip()
    source = candidate.caption_source
    if not text:
        if options.trigger_word:
            text, source = "", "trigger_word"  # the trigger (and class word) go in below
        else:
            text, source = re.sub(r"[_\-.\s]+", " ", stem).strip() or stem, "file_name"
    return apply_trigger(text, trigger=options.trigger_word, placement=options.placement,
                         class_word=options.class_word), source


def _stems(candidates: list[_Candidate]) -> list[str]:
    """One unique, file-system-safe stem per candidate, from its relative path (sub/a.png -> sub__a)."""
    used: set[str] = set()
    out = []
    for candidate in candidates:
        parts = list(Path(candidate.name).parts)
        parts[-1] = Path(parts[-1]).stem
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", "__".join(parts)).strip("._") or "image"
        base = base[:150]
        stem, n = base, 1
        while stem.lower() in used:
            n += 1
            stem = f"{base}_{n}"
        used.add(stem.lower())
        out.append(stem)
    return out


@dataclass(frozen=True)
class _Probe:
    kind: str
    width: int
    height: int
    sha256: str | None = None


def _probe(path: Path | IO[bytes]) -> _Probe:
    """Open and decode all of one image (a file, or its bytes); raise Unusable with a per-file reason when it cannot
    be used.

    A JPEG is decoded at 1/8 scale (libjpeg's DCT scaling): every byte of its compressed data is still read and
    entropy-decoded, so a truncated or corrupt file fails as it would at full size, for a quarter less time."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > (Image.MAX_IMAGE_PIXELS or width * height):
                raise Unusable("too many pixels", f"{width}x{height} is over {Image.MAX_IMAGE_PIXELS} pixels")
            if image.format == "JPEG":
                image.draft(None, (max(1, width // 8), max(1, height // 8)))
            image.load()
            return _Probe(image.format or "", width, height)
    except Image.DecompressionBombError as exc:
        raise Unusable("too many pixels", str(exc)) from None
    except UnidentifiedImageError:
        raise Unusable("not a decodable image", "Pillow cannot identify this file as an image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise Unusable("corrupt image", str(exc) or type(exc).__name__) from None


class _Decoder:
    """Decodes images on a thread pool from the moment each file exists: while an archive is still being
    extracted, the images already out of it are being decoded (Pillow and zlib release the GIL)."""

    def __init__(self, *, clip_limits: ClipLimits = ClipLimits()) -> None:
        self._pool = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="decode")
        self._futures: dict[Path, Future[_Probe]] = {}
        self._clips: dict[Path, Future[ClipProbe]] = {}
        self._clip_limits = clip_limits

    def submit(self, path: Path) -> None:
        suffix = path.suffix.lower()
        if suffix in IMAGE_SUFFIXES and path not in self._futures:
            self._futures[path] = self._pool.submit(_probe, path)
        elif suffix in CLIP_SUFFIXES and path not in self._clips:  # FFmpeg releases the GIL as Pillow does
            self._clips[path] = self._pool.submit(probe_clip, path, limits=self._clip_limits)

    def check_now(self, path: Path, data: bytes | None) -> None:
        """Decode `path` from its bytes, on the calling thread: a thread that has just written a file checks it
        without reading it back or handing it over (without the bytes: on the pool, from the file)."""
        if data is None:
            self.submit(path)
            return
        if path.suffix.lower() not in IMAGE_SUFFIXES or path in self._futures:
            return
        done: Future[_Probe] = Future()
        try:  # the hash too, while the bytes are here: the cache keys the dataset's images by it
            done.set_result(replace(_probe(io.BytesIO(data)), sha256=hashlib.sha256(data).hexdigest()))
        except Unusable as exc:
            done.set_exception(exc)
        self._futures[path] = done

    def result(self, path: Path) -> _Probe:
        future = self._futures.get(path)
        return future.result() if future is not None else _probe(path)

    def clip(self, path: Path) -> ClipProbe:
        future = self._clips.get(path)
        return future.result() if future is not None else probe_clip(path, limits=self._clip_limits)

    def convert(self, source: Path, target: Path) -> Future[Path]:
        return self._pool.submit(_convert_to_png, source, target)

    def forget(self) -> None:
        """Drop every result: the files are made again (a zip followed while it downloaded, then extracted whole)."""
        futures: list[Future] = [*self._futures.values(), *self._clips.values()]
        for future in futures:
            future.cancel()
        wait(futures)
        self._futures.clear()
        self._clips.clear()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _stage_all(
    gathered: _Gathered, *, root: Path, clips_root: Path, options: CaptionOptions, decoder: _Decoder, cancel: Cancel,
    folders: dict[str, tuple[str, str | None]] | None = None,
) -> tuple[list[ImageEntry], list[ClipEntry], list[Skipped], list[str]]:
    """Each candidate placed under its stem as its check finishes. One thread moves the files: renames into one
    folder from several threads only wait on each other's directory locks; converting to PNG runs on the pool. The
    last list: each staged image's name in the source. `folders`: a concept's images go to their own sub-folder,
    captioned with their concept's trigger word (_concept_folders)."""
    folders = folders or {}
    for candidate in gathered.candidates:
        decoder.submit(candidate.image)
    stems = _stems(gathered.candidates)
    placed: list[tuple[_Candidate, str, _Probe, Path | Future[Path]]] = []
    skipped: list[Skipped] = []
    clips: list[ClipEntry] = []
    for candidate, stem in zip(gathered.candidates, stems, strict=True):
        cancel.check("while checking the images")
        if candidate.image.suffix.lower() in CLIP_SUFFIXES:
            try:
                clips.append(_stage_clip(candidate, decoder.clip(candidate.image), stem=stem, root=clips_root,
                                         options=options))
            except ClipRefused as exc:
                skipped.append(Skipped(candidate.name, exc.reason, exc.detail))
            continue
        try:
            probe = decoder.result(candidate.image)
        except Unusable as exc:
            skipped.append(Skipped(candidate.name, exc.reason, exc.detail))
            continue
        where = _concept_root(root, folders.get(candidate.name))
        if probe.kind in KEPT_FORMATS:
            placed.append((candidate, stem, probe, _move_image(candidate, probe=probe, stem=stem, root=where)))
        else:
            placed.append((candidate, stem, probe, decoder.convert(candidate.image, where / f"{stem}.png")))
    images: list[ImageEntry] = []
    names: list[str] = []
    for candidate, stem, probe, target in placed:
        try:
            path = target if isinstance(target, Path) else target.result()
        except Unusable as exc:
            skipped.append(Skipped(candidate.name, exc.reason, exc.detail))
            continue
        unchanged = probe if isinstance(target, Path) else replace(probe, sha256=None)  # a PNG now: another hash
        concept = folders.get(candidate.name)
        own = replace(options, trigger_word=concept[1], class_word=None) if concept and concept[1] else options
        images.append(_entry(candidate, unchanged, path, stem=stem, options=own))
        names.append(candidate.name)
    return images, clips, skipped, names


def _concept_root(root: Path, concept: tuple[str, str | None] | None) -> Path:
    if concept is None:
        return root
    folder = root / concept[0]
    folder.mkdir(exist_ok=True)
    return folder


def _stage_clip(candidate: _Candidate, probe: ClipProbe, *, stem: str, root: Path,
                options: CaptionOptions) -> ClipEntry:
    """Move (or copy, when the file is the user's) a probed clip into `root`, its caption beside it."""
    root.mkdir(exist_ok=True)
    target = root / f"{stem}{candidate.image.suffix.lower()}"
    if candidate.owned:
        os.replace(candidate.image, target)
    else:
        shutil.copyfile(candidate.image, target)
    caption, source = _caption(candidate, stem=stem, options=options)
    caption_path = target.with_suffix(".txt")
    if candidate.caption_file is not None:
        os.replace(candidate.caption_file, caption_path)
    caption_path.write_text(caption + "\n", encoding="utf-8")
    return ClipEntry(path=target, caption=caption, width=probe.width, height=probe.height, frames=probe.frames,
                     fps=probe.fps, duration_s=probe.duration_s, codec=probe.codec, caption_source=source)


def _entry(candidate: _Candidate, probe: _Probe, target: Path, *, stem: str, options: CaptionOptions) -> ImageEntry:
    """The staged image's entry, its caption written beside it."""
    caption, source = _caption(candidate, stem=stem, options=options)
    caption_path = target.with_suffix(".txt")
    if candidate.caption_file is not None:
        os.replace(candidate.caption_file, caption_path)
    caption_path.write_text(caption + "\n", encoding="utf-8")
    named = has_trigger(fill_trigger(candidate.caption or "", options.trigger_word), options.trigger_word) \
        if options.trigger_word and source not in ("trigger_word", "file_name") else None
    return ImageEntry(path=target, caption=caption, width=probe.width, height=probe.height, caption_source=source,
                      sha256=probe.sha256, trigger_in_caption=named)


def _move_image(candidate: _Candidate, *, probe: _Probe, stem: str, root: Path) -> Path:
    """Move (or copy, when the file is the user's) a decoded image into `root` under its stem."""
    original = candidate.image.suffix.lower()
    kept = KEPT_FORMATS[probe.kind]
    suffix = original if kept == ".jpg" and original in {".jpeg", ".jpg"} else kept
    target = root / f"{stem}{suffix}"
    if candidate.owned:
        os.replace(candidate.image, target)
    else:
        shutil.copyfile(candidate.image, target)
    return target


def _convert_to_png(source: Path, target: Path) -> Path:
    """Re-encode an image SimpleTuner's usual formats do not include as PNG."""
    try:
        with Image.open(source) as image:
            _as_png(image).save(target, format="PNG")
    except (OSError, ValueError, EOFError) as exc:
        target.unlink(missing_ok=True)
        raise Unusable("corrupt image", f"cannot convert to PNG: {exc}") from None
    return target


def _as_png(image: Image.Image) -> Image.Image:
    image.seek(0)
    if image.mode in {"RGB", "RGBA", "L", "LA"}:
        return image
    has_alpha = (image.mode in {"P", "PA"} and "transparency" in image.info) or "A" in image.mode
    return image.convert("RGBA" if has_alpha else "RGB")
