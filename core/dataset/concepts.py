"""Concepts: sub-folders of a dataset trained as dataloader entries of their own, each with its repeats.

kohya's convention names a folder `<passes>_<name>` (`10_alice/`, `5_bob/`): each of its images is seen `passes`
times per epoch, and `<name>` is its trigger word. A plain sub-folder becomes a concept when the job gives it a count
(`dataset.repeats: {"alice": 10}`). Staging keeps a concept's images in `images/<folder>/`; with concepts, the images
of no concept go to `images/_main/` (an entry over `images/` would also list every concept's folder, SimpleTuner's
listing is recursive). SimpleTuner's `repeats` counts the passes after the first (`repeats: 0` is one pass), so a
concept of `passes` has `repeats = passes - 1`.

The concepts are read back from the staged folders (so a staged dataset from the cache has them too).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class _Image(Protocol):
    @property
    def path(self) -> Path: ...


class _Staged(Protocol):
    """What concepts_of reads of a staged dataset (stage.py's Manifest, which imports this module)."""

    @property
    def root(self) -> Path: ...

    @property
    def images(self) -> Sequence[_Image]: ...

KOHYA_FOLDER = re.compile(r"^(\d{1,4})_(\S.*)$")
MAIN_FOLDER = "_main"
"""With concepts, the staged folder of the images in no concept."""


@dataclass(frozen=True)
class Concept:
    folder: str
    """Its staged folder under images/ (the source folder's name, made file-system safe)."""
    name: str
    passes: int
    """How many times each image is seen per epoch (kohya's folder number; 1 for the images in no concept)."""
    trigger: str | None = None
    """Its own trigger word (a kohya folder's name after the number); None: the job's trigger_word."""
    images: int = 0

    @property
    def repeats(self) -> int:
        """SimpleTuner's `repeats`: the passes after the first."""
        return self.passes - 1


def safe_folder(name: str) -> str:
    """A source folder's name as a staged folder's."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:100] or "concept"


def concept_of(folder: str, *, repeats: Mapping[str, int]) -> Concept | None:
    """The concept a top-level source folder is, or None: a kohya name, or a folder `repeats` names (its count wins;
    matched by the folder's name, its name after a kohya number, or their staged forms)."""
    match = KOHYA_FOLDER.match(folder)
    name = match.group(2).strip() if match else folder
    given = _given(repeats, folder, name)
    if match is None and given is None:
        return None
    passes = given if given is not None else int(match.group(1)) if match else 1
    if passes < 1:
        return None  # `0_name` trains nothing in kohya; here it stays an ordinary folder
    return Concept(folder=safe_folder(folder), name=name, passes=passes, trigger=name if match else None)


def _given(repeats: Mapping[str, int], *names: str) -> int | None:
    for key, count in repeats.items():
        if key in names or safe_folder(key) in {safe_folder(name) for name in names}:
            return count
    return None


def concepts_of(manifest: _Staged, *, repeats: Mapping[str, int]) -> list[Concept]:
    """The staged dataset's concepts with their image counts ([] when it has none): each sub-folder of the staged
    images folder, the images of no concept (`_main`) as one of a single pass, unless the job gives it a count."""
    counts = Counter(_folder_of(entry.path, manifest.root) for entry in manifest.images)
    concepts = []
    for folder, count in sorted((name, count) for name, count in counts.items() if name is not None):
        if folder == MAIN_FOLDER:
            concepts.append(Concept(folder=folder, name="(no concept)", passes=1, images=count))
            continue
        concept = concept_of(folder, repeats=repeats) or Concept(folder=folder, name=folder, passes=1)
        concepts.append(Concept(folder=folder, name=concept.name, passes=concept.passes, trigger=concept.trigger,
                                images=count))
    return concepts


def _folder_of(path: Path, root: Path) -> str | None:
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return None
    return parts[0] if len(parts) > 1 else None
