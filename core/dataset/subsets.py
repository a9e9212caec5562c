"""A dataset's subsets besides its training images, recognised from its own layout (docs/first-lora.md):

- **regularisation images** in `reg/` (or `dataset.reg_dir`): trained beside the dataset, without the trigger word,
  as SimpleTuner's regularisation data (`is_regularisation_data`), so the LoRA keeps what the class looked like;
- **held-out images** in `eval/` (or `dataset.eval_dir`), or a share of the images held out (`dataset.eval_share`):
  never trained on, SimpleTuner's evaluation loss is computed on them at each checkpoint;
- **masks**: `NAME.mask.png` beside `NAME.png` (any image suffix on either side): the loss counts where the mask
  is white, not where it is black (SimpleTuner's `conditioning_type: "mask"`).

`split_names` sorts the gathered files' relative names into these; staging (core/dataset/stage.py) writes each
subset into its own folder of the job's dataset: `reg/`, `eval/`, `masks/` (each mask under its image's staged
file name, which is how SimpleTuner links a conditioning image to its image). `fit_mask` makes a mask the size of
its image and writes it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from PIL import Image

REG_DIR = "reg"
EVAL_DIR = "eval"
MASKS_DIR = "masks"
SUBSET_DIRS = (REG_DIR, EVAL_DIR, MASKS_DIR)
"""The staged folders, beside images/ in the job's dataset."""
MASK_MARK = ".mask"
"""A mask's stem ends with it: face.mask.png is the mask of face.png."""

NO_IMAGE = "mask without an image"
BAD_MASK = "mask not a usable image"
HELD_OUT_MASK = "mask of a held-out image"
MASK_REASONS = (NO_IMAGE, BAD_MASK, HELD_OUT_MASK)

__all__ = [
    "EVAL_DIR",
    "MASKS_DIR",
    "MASK_REASONS",
    "REG_DIR",
    "SUBSET_DIRS",
    "Split",
    "Subsets",
    "fit_mask",
    "split_names",
    "white_mask",
]


@dataclass
class Subsets:
    """What staging made of a dataset's subsets (the training images are the manifest's)."""

    reg_root: Path | None = None
    reg: list[Path] = field(default_factory=list)
    """The staged regularisation images (their captions beside them, no trigger word)."""
    reg_generated: int = 0
    """How many of `reg` the base model rendered before training (dataset.reg_generate: core/generation/)."""
    eval_root: Path | None = None
    eval: list[Path] = field(default_factory=list)
    """The staged held-out images (captions as the training images have them)."""
    held_out: int = 0
    """How many of `eval` dataset.eval_share took from the training images (0: an eval/ folder, or none)."""
    masks_root: Path | None = None
    masks: int = 0
    """Training images with a mask of their own."""
    masks_filled: int = 0
    """Training images without one: a white mask (the whole image counts) is written for them."""
    masks_resized: list[str] = field(default_factory=list)
    """Masks of another size than their image, resized to it (their names)."""

    @property
    def empty(self) -> bool:
        return not (self.reg or self.eval or self.masks)

    def describe(self) -> dict[str, object]:
        """For the preflight report."""
        return {"regularisation_images": len(self.reg), "regularisation_generated": self.reg_generated,
                "eval_images": len(self.eval), "eval_held_out": self.held_out,
                "masked_images": self.masks, "unmasked_images": self.masks_filled if self.masks else 0,
                "masks_resized": list(self.masks_resized)}


@dataclass
class Split:
    """Gathered names sorted into the subsets."""

    train: list[str] = field(default_factory=list)
    reg: list[str] = field(default_factory=list)
    eval: list[str] = field(default_factory=list)
    masks: dict[str, str] = field(default_factory=dict)
    """Training image name -> its mask's name."""
    unpaired: list[tuple[str, str]] = field(default_factory=list)
    """(mask name, reason) for each mask that has no training image."""
    held_out: int = 0


def _under(name: str, folder: str) -> bool:
    parts, prefix = PurePosixPath(name).parts, PurePosixPath(folder.strip("/")).parts
    return len(parts) > len(prefix) and tuple(p.lower() for p in parts[:len(prefix)]) == tuple(
        p.lower() for p in prefix)


def _image_key(name: str) -> str:
    """A name's folder and stem, lower case: what pairs a mask with its image."""
    path = PurePosixPath(name)
    return str(path.parent / path.stem).lower()


def split_names(names: list[str], *, reg_dir: str | None = None, eval_dir: str | None = None,
                eval_share: float | None = None) -> Split:
    """Sort relative file names (images only) into training images, regularisation and held-out images, and masks.
    `eval_share` holds out that share of the training images (at least one, and one always left to train) when
    there is no held-out folder; which ones is decided by their names' hashes, the same on every run."""
    split = Split()
    mask_names: list[str] = []
    for name in names:
        if _under(name, reg_dir or REG_DIR):
            split.reg.append(name)
        elif _under(name, eval_dir or EVAL_DIR):
            split.eval.append(name)
        elif PurePosixPath(name).stem.lower().endswith(MASK_MARK):
            mask_names.append(name)
        else:
            split.train.append(name)
    if eval_share and not split.eval and len(split.train) > 1:
        count = min(max(1, round(len(split.train) * eval_share)), len(split.train) - 1)
        chosen = set(sorted(split.train, key=lambda n: hashlib.sha256(n.encode()).hexdigest())[:count])
        split.eval = [name for name in split.train if name in chosen]
        split.train = [name for name in split.train if name not in chosen]
        split.held_out = count
    train = {_image_key(name): name for name in split.train}
    held = {_image_key(name) for name in split.eval} if split.held_out else set()
    for mask in mask_names:
        key = _image_key(mask)[: -len(MASK_MARK)]
        if key in train:
            split.masks[train[key]] = mask
        else:
            split.unpaired.append((mask, HELD_OUT_MASK if key in held else NO_IMAGE))
    return split


def fit_mask(mask: Path, target: Path, *, size: tuple[int, int]) -> bool:
    """Write `mask` as a greyscale PNG (under `target`'s name, the image's) of `size`; True when it was resized.
    Raises OSError/ValueError when the mask cannot be read."""
    with Image.open(mask) as image:
        image.load()
        grey = image.convert("L")
    resized = grey.size != size
    if resized:
        grey = grey.resize(size, Image.Resampling.BILINEAR)
    grey.convert("RGB").save(target, format="PNG")  # SimpleTuner reads the first channel
    return resized


def white_mask(target: Path, *, size: tuple[int, int]) -> None:
    """A mask that keeps the whole image: for an image without one, in a dataset where others have one."""
    Image.new("RGB", size, (255, 255, 255)).save(target, format="PNG")
