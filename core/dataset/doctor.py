"""The dataset doctor: what makes a first LoRA fail that can be seen in the staged images and captions, before a
GPU minute: near-duplicates, images far below the training size, blurry images, extreme aspect ratios, captions that
never named the trigger or are all the same, too few or too many images for the goal.

`examine(manifest, ...)` returns Findings, each naming the files it concerns (their names under the staged images
folder, as the UI's dataset lists them) and what to do. They are warnings: a doctor finding never stops a job (the
preflight's own errors do that). Pillow and numpy only (the app env): a difference hash for duplicates, the variance
of a Laplacian for blur, both on a small grey copy of each image.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from core.dataset.concepts import Concept
from core.dataset.stage import ImageEntry, Manifest

HASH_SIZE = 8
"""A difference hash of 8x8 = 64 bits (an image shrunk to 9x8 grey pixels, each compared with its right neighbour)."""
DUPLICATE_BITS = 6
"""Two images whose hashes differ in at most this many of 64 bits, and whose mean colours are close, are
near-duplicates (the same photo resized, re-encoded or lightly cropped; a different shot of the same scene differs in
far more bits)."""
DUPLICATE_COLOUR = 24.0
"""...and whose mean colours (RGB, 0-255) are at most this far apart: a difference hash sees brightness only, so the
same shape in another colour is not a duplicate."""
BLUR_SIDE = 512
"""The blur check's copy: the longer side shrunk to this, so the measure does not depend on the file's size."""
BLUR_VARIANCE = 100.0
"""Variance of the Laplacian below which an image is blurry (the usual threshold for 8-bit images, pyimagesearch's
'Blur detection with OpenCV')."""
BLUR_SHARE_OF_MEDIAN = 0.25
"""...and below this share of the dataset's median, so a dataset of soft images (paintings, renders) is judged
against itself, not against photos."""
TINY_SHARE = 0.5
"""An image whose shorter side (or square-root area) is under this share of the training resolution: upscaled more
than twice."""
EXTREME_ASPECT = 2.5
"""Wider or taller than 2.5:1 (past 21:9): heavily cropped, or alone in an aspect bucket."""
LISTED = 50
"""Files listed per finding, at most (the count says how many in all)."""
_WORKERS = min(4, os.cpu_count() or 2)


@dataclass
class Finding:
    kind: str
    """duplicates | tiny | blurry | aspect | trigger | same_captions | class_word | too_few | too_many"""
    message: str
    fix: str
    files: list[str] = field(default_factory=list)
    """The staged files it concerns (names under the images folder)."""
    groups: list[list[str]] = field(default_factory=list)
    """duplicates: each group of near-identical images (the first one is kept by 'remove flagged')."""
    severity: str = "warning"
    count: int = 0

    @property
    def removable(self) -> list[str]:
        """The files 'remove flagged images' takes out: every duplicate but the first of its group; the files of a
        tiny, blurry or extreme image; none for caption or count findings."""
        if self.kind == "duplicates":
            return [name for group in self.groups for name in group[1:]]
        return list(self.files) if self.kind in ("tiny", "blurry", "aspect") else []

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "removable": self.removable}


@dataclass(frozen=True)
class _Look:
    dhash: int
    sharpness: float
    colour: tuple[float, float, float]


def examine(manifest: Manifest, *, resolution: float, resolution_type: str, trigger: str | None,
            goal: str | None = None, min_images: int | None = None, max_images: int | None = None,
            class_word: str | None = None, concepts: list[Concept] | None = None) -> list[Finding]:
    """Every finding for the staged images (clips and edit pairs' inputs are not examined). `resolution`,
    `resolution_type`: the training size; `trigger`: the job's trigger word; `goal` with its image bounds and class
    word; `concepts`: their own trigger words."""
    images = manifest.images
    if not images:
        return []
    looks = _look_all(images)
    names = {id(entry): _name(entry, manifest.root) for entry in images}
    findings = [
        _duplicates(images, looks, names),
        _tiny(images, names, resolution=resolution, resolution_type=resolution_type),
        _blurry(images, looks, names),
        _aspect(images, names),
        _trigger(images, names, trigger=trigger, goal=goal, concepts=concepts or []),
        _same_captions(images, names),
        _class_word(images, names, goal=goal, class_word=class_word),
        _count(len(images), goal=goal, min_images=min_images, max_images=max_images),
    ]
    return [finding for finding in findings if finding is not None]


def _name(entry: ImageEntry, root: Path) -> str:
    try:
        return entry.path.relative_to(root).as_posix()
    except ValueError:
        return entry.path.name


def _look_all(images: list[ImageEntry]) -> dict[int, _Look | None]:
    with ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="doctor") as pool:
        return dict(zip((id(entry) for entry in images), pool.map(lambda e: _look(e.path), images), strict=True))


def _look(path: Path) -> _Look | None:
    """The image's difference hash and sharpness, from one small grey copy; None when it cannot be read now."""
    try:
        with Image.open(path) as image:
            if image.format == "JPEG":
                image.draft("RGB", (BLUR_SIDE, BLUR_SIDE))
            rgb = image.convert("RGB")
    except (OSError, ValueError):
        return None
    rgb.thumbnail((BLUR_SIDE, BLUR_SIDE))
    grey = rgb.convert("L")
    red, green, blue = (float(value) for value in np.asarray(rgb, dtype=np.float64).reshape(-1, 3).mean(axis=0))
    return _Look(dhash=dhash(grey), sharpness=laplacian_variance(grey), colour=(red, green, blue))


def dhash(image: Image.Image) -> int:
    """A 64-bit difference hash: the image as 9x8 grey pixels, one bit per pixel brighter than its right one."""
    small = np.asarray(image.convert("L").resize((HASH_SIZE + 1, HASH_SIZE), Image.Resampling.LANCZOS), dtype=np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int("".join("1" if bit else "0" for bit in bits), 2)


def laplacian_variance(image: Image.Image) -> float:
    """The variance of the 4-neighbour Laplacian of a grey image: low when it has no sharp edges."""
    pixels = np.asarray(image.convert("L"), dtype=np.float64)
    if pixels.shape[0] < 3 or pixels.shape[1] < 3:
        return 0.0
    laplacian = (pixels[:-2, 1:-1] + pixels[2:, 1:-1] + pixels[1:-1, :-2] + pixels[1:-1, 2:]
                 - 4 * pixels[1:-1, 1:-1])
    return float(laplacian.var())


def _duplicates(images: list[ImageEntry], looks: Mapping[int, _Look | None],
                names: Mapping[int, str]) -> Finding | None:
    """Groups of near-identical images (hashes within DUPLICATE_BITS), joined transitively."""
    known = [(names[id(e)], look) for e in images if (look := looks[id(e)]) is not None]
    if len(known) < 2:
        return None
    hashes = np.array([look.dhash for _, look in known], dtype=np.uint64)
    colours = np.array([look.colour for _, look in known], dtype=np.float64)
    parent = list(range(len(known)))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    for index in range(len(known) - 1):
        xor = np.bitwise_xor(hashes[index + 1:], hashes[index])
        distances = np.unpackbits(xor.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
        apart = np.linalg.norm(colours[index + 1:] - colours[index], axis=1)
        for other in np.nonzero((distances <= DUPLICATE_BITS) & (apart <= DUPLICATE_COLOUR))[0]:
            parent[root(index + 1 + int(other))] = root(index)
    groups: dict[int, list[str]] = {}
    for index, (name, _) in enumerate(known):
        groups.setdefault(root(index), []).append(name)
    found = [group for group in groups.values() if len(group) > 1]
    if not found:
        return None
    extra = sum(len(group) - 1 for group in found)
    shown = "; ".join(" = ".join(group[:4]) + (" ..." if len(group) > 4 else "") for group in found[:3])
    return Finding(kind="duplicates", count=extra, groups=found[:LISTED],
                   files=[name for group in found[:LISTED] for name in group],
                   message=f"{extra} images are near-duplicates of another ({len(found)} groups: {shown}): "
                           "each counts twice, and the LoRA learns that one photo",
                   fix="keep one image of each group ('Remove flagged images' keeps the first)")


def _edge(width: int, height: int, resolution_type: str) -> float:
    """The image's size as the resolution measures it: its shorter side (pixel), or the side of a square of its
    area (pixel_area; area in megapixels is compared as such)."""
    if resolution_type == "pixel":
        return float(min(width, height))
    if resolution_type == "area":
        return width * height / 1_000_000
    return float((width * height) ** 0.5)


def _tiny(images: list[ImageEntry], names: Mapping[int, str], *, resolution: float,
          resolution_type: str) -> Finding | None:
    limit = resolution * (TINY_SHARE ** 2 if resolution_type == "area" else TINY_SHARE)
    tiny = [e for e in images if _edge(e.width, e.height, resolution_type) < limit]
    if not tiny:
        return None
    listed = [f"{names[id(e)]} ({e.width}x{e.height})" for e in tiny[:3]]
    return Finding(kind="tiny", count=len(tiny), files=[names[id(e)] for e in tiny[:LISTED]],
                   message=f"{len(tiny)} images are far below the training resolution ({resolution:g}, "
                           f"{resolution_type}) and are upscaled more than twice, which teaches blur: "
                           f"{', '.join(listed)}{' ...' if len(tiny) > 3 else ''}",
                   fix="use larger originals, remove them, or lower config.resolution")


def _blurry(images: list[ImageEntry], looks: Mapping[int, _Look | None],
            names: Mapping[int, str]) -> Finding | None:
    measured = [(e, look.sharpness) for e in images if (look := looks[id(e)]) is not None]
    if len(measured) < 2:
        return None
    median = statistics.median(value for _, value in measured)
    blurry = [(e, value) for e, value in measured
              if value < BLUR_VARIANCE and value < BLUR_SHARE_OF_MEDIAN * median]
    if not blurry:
        return None
    listed = [f"{names[id(e)]} (sharpness {value:.0f})" for e, value in blurry[:3]]
    return Finding(kind="blurry", count=len(blurry), files=[names[id(e)] for e, _ in blurry[:LISTED]],
                   message=f"{len(blurry)} images are blurry (variance of the Laplacian under {BLUR_VARIANCE:g} and "
                           f"under a quarter of the dataset's median {median:.0f}): {', '.join(listed)}"
                           f"{' ...' if len(blurry) > 3 else ''}; the LoRA learns the blur",
                   fix="remove them or replace them with sharp ones")


def _aspect(images: list[ImageEntry], names: Mapping[int, str]) -> Finding | None:
    extreme = [e for e in images if max(e.width / e.height, e.height / e.width) > EXTREME_ASPECT]
    if not extreme:
        return None
    listed = [f"{names[id(e)]} ({e.width}x{e.height})" for e in extreme[:3]]
    return Finding(kind="aspect", count=len(extreme), files=[names[id(e)] for e in extreme[:LISTED]],
                   message=f"{len(extreme)} images are wider or taller than {EXTREME_ASPECT:g}:1: "
                           f"{', '.join(listed)}{' ...' if len(extreme) > 3 else ''}; a square crop cuts most of "
                           "them away, and without crops they sit alone in an aspect bucket",
                   fix="crop them to the subject, or remove them")


def _trigger(images: list[ImageEntry], names: Mapping[int, str], *, trigger: str | None, goal: str | None,
             concepts: list[Concept]) -> Finding | None:
    """Captions written with the trigger word in some and not in others (staging put it at the start of those): the
    others name the subject some other way, or forgot it. Captions that all leave it out are the usual case (the
    trigger is added) and no finding. A likeness or object with no trigger word at all is one."""
    if goal in ("likeness", "object") and not trigger and not any(c.trigger for c in concepts):
        return Finding(kind="trigger", count=len(images),
                       message=f"a {goal} without a trigger_word: nothing in the captions calls up what it learns",
                       fix="set trigger_word to a rare token (e.g. 'ohwx'), and class_word to what it is")
    unnamed = [e for e in images if e.trigger_in_caption is False]
    named = [e for e in images if e.trigger_in_caption]
    if not unnamed or not named:
        return None
    triggers = sorted({c.trigger for c in concepts if c.trigger} | ({trigger} if trigger else set()))
    word = " / ".join(f"'{t}'" for t in triggers) or "the trigger"
    return Finding(kind="trigger", count=len(unnamed), files=[names[id(e)] for e in unnamed[:LISTED]],
                   message=f"{len(unnamed)} of {len(unnamed) + len(named)} captions never named {word}, though "
                           "the others do: staging put it at the start of these. If they call the subject by another "
                           "word, the LoRA learns that word too",
                   fix="write the trigger word into those captions where the subject is named")


def _same_captions(images: list[ImageEntry], names: Mapping[int, str]) -> Finding | None:
    captions = {entry.caption.strip().lower() for entry in images}
    if len(images) < 3 or len(captions) > 1:
        return None
    return Finding(kind="same_captions", count=len(images), files=[names[id(e)] for e in images[:LISTED]],
                   message=f"all {len(images)} captions are the same ('{images[0].caption[:60]}'): the trigger "
                           "word learns everything in the pictures (background, clothes, light) at once",
                   fix="caption each image (captioning: {\"mode\": \"all\"}), describing what changes between them")


def _class_word(images: list[ImageEntry], names: Mapping[int, str], *, goal: str | None,
                class_word: str | None) -> Finding | None:
    """A likeness or object whose captions never say its class word."""
    if goal not in ("likeness", "object") or not class_word:
        return None
    missing = [e for e in images if class_word.lower() not in e.caption.lower()]
    if len(missing) < len(images):
        return None  # some say it: staging leads the trigger-less ones with it
    return Finding(kind="class_word", count=len(missing), files=[names[id(e)] for e in missing[:LISTED]],
                   message=f"no caption says the class word '{class_word}'",
                   fix="name the class in the captions ('a photo of ohwx woman ...') or set class_word")


def _count(count: int, *, goal: str | None, min_images: int | None, max_images: int | None) -> Finding | None:
    if goal is None:
        return None
    if min_images and count < min_images:
        return Finding(kind="too_few", count=count,
                       message=f"{count} images for a {goal}: {min_images} or more give a LoRA that generalises",
                       fix=f"add images until there are {min_images} or more, varied in pose, light and background")
    if max_images and count > max_images:
        return Finding(kind="too_many", count=count,
                       message=f"{count} images for a {goal}: more than {max_images} mostly adds time",
                       fix=f"keep the best {max_images} (sharp, varied); or train a style")
    return None
