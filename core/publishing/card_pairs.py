"""An edit run's before/after examples for its model card: a few of the training pairs (each input, the
instruction, the target), as small images that go up with the repo.

The staged dataset of an edit job holds the targets in `dataset/images/` and each one's inputs under the same file
name in `dataset/control/`, `dataset/control_2/`, ... (core/dataset/stage.py). The first few whole pairs, by name,
are copied at most CARD_IMAGE_PX a side (a card shows them small; a training image may be many megabytes) into the
job's own folder, and listed with their paths in the repo (`pairs/NAME_input.png`, `pairs/NAME_output.png`): the
card links only those, never a path on this machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

CARD_PAIRS = 3
"""How many pairs the card shows."""
CARD_IMAGE_PX = 512
REPO_FOLDER = "pairs"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")


@dataclass
class CardPair:
    """One before/after example: its images' paths in the repo and the instruction."""

    inputs: list[str]
    output: str
    instruction: str
    files: dict[str, Path] = field(default_factory=dict)
    """Repo path -> the local file that goes up there (what the commit uploads; the card never shows it)."""


def card_pairs(dataset: Path, *, input_folders: list[str], out: Path, limit: int = CARD_PAIRS) -> list[CardPair]:
    """The first `limit` whole pairs of a staged edit dataset (`dataset`: the job's dataset folder), their images
    written small into `out`. Empty when the staged files are gone (a push long after the run)."""
    images = dataset / "images"
    if not input_folders or not images.is_dir():
        return []
    found: list[CardPair] = []
    for target in sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()):
        sources = [dataset / folder / target.name for folder in input_folders]
        if not all(source.is_file() for source in sources):
            continue
        pair = _written(target, sources, out=out, stem=_safe_stem(target.stem, taken=len(found)))
        if pair is not None:
            found.append(pair)
        if len(found) >= limit:
            break
    return found


def _written(target: Path, sources: list[Path], *, out: Path, stem: str) -> CardPair | None:
    sides = [(f"{stem}_input{'' if index == 0 else index + 1}", source) for index, source in enumerate(sources)]
    files: dict[str, Path] = {}
    for name, source in [*sides, (f"{stem}_output", target)]:
        written = _small_copy(source, out / f"{name}.png")
        if written is None:
            return None
        files[f"{REPO_FOLDER}/{name}.png"] = written
    paths = list(files)
    caption = target.with_suffix(".txt")
    instruction = caption.read_text(encoding="utf-8", errors="replace").strip() if caption.is_file() else ""
    return CardPair(inputs=paths[:-1], output=paths[-1], instruction=instruction, files=files)


def _small_copy(source: Path, target: Path) -> Path | None:
    """`source` as a PNG at most CARD_IMAGE_PX a side; None when it cannot be read (the pair is not shown)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(source) as image:
            picture = ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    picture.thumbnail((CARD_IMAGE_PX, CARD_IMAGE_PX))
    target.parent.mkdir(parents=True, exist_ok=True)
    picture.save(target, format="PNG")
    return target


def _safe_stem(stem: str, *, taken: int) -> str:
    """A repo file name from a target's name: letters, digits, '-', '_' and '.', numbered so two never clash."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "pair"
    return f"{taken + 1:02d}-{clean[:60]}"
