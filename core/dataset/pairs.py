"""Edit pairs: a dataset whose images are the wanted outputs of an edit, each with its input image(s), recognised
from the dataset's own layout (docs/edit-pairs.md).

Two conventions, recognised without a hand-written dataloader:
- **control folders** (SimpleTuner's and ai-toolkit's layout): `control/NAME.png` is the input of `NAME.png`, the
  folder beside the images (or beside the folder holding them: `images/NAME.png` + `control/NAME.png`). A second and
  third input: `control_2/`, `control_3/`. `dataset.control_dir` names other folders (relative to the dataset).
- **start/end names** (fal's edit trainers): `NAME_start.png` is the input of `NAME_end.png`; more inputs
  `NAME_start2.png`, `NAME_start3.png`. The instruction is `NAME.txt` (or `NAME_end.txt`).
A file name matches by its stem: the extension may differ between a target and its input.

`split_pairs` turns the gathered files into targets (trained like images) and their inputs; a file that is not part
of a whole pair is listed with the reason. Staging (core/dataset/stage.py) writes each input into
`control/`, `control_2/`, ... of the job's dataset under its target's exact file name, which is how SimpleTuner
links a conditioning image to its target (`conditioning_data`, reference_strict).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

CONTROL_DIRS = ("control", "control_2", "control_3")
"""The input folders recognised in a dataset, in input order; also the staged folders' names."""
MAX_INPUTS = len(CONTROL_DIRS)
START_END = re.compile(r"^(?P<name>.+?)_(?P<side>start|end)(?P<index>[23]?)$", re.IGNORECASE)
SIZE_RATIO_LIMIT = 100.0
"""A pair whose input and target differ this many times in pixel count is left out: one of them is the wrong file."""

# The reasons a file is not part of a pair (Skipped.reason), the same for every file skipped for it.
NO_INPUT = "edit target without an input"
NO_TARGET = "edit input without a target"
FEWER_INPUTS = "edit pair with fewer inputs than the others"
BAD_INPUT = "edit input not a usable image"
SIZE_APART = "edit pair sides too far apart in size"
PAIR_REASONS = (NO_INPUT, NO_TARGET, FEWER_INPUTS, BAD_INPUT, SIZE_APART)
LAYOUTS = ("control folders", "start/end names")

__all__ = [
    "CONTROL_DIRS",
    "MAX_INPUTS",
    "PAIR_REASONS",
    "SIZE_RATIO_LIMIT",
    "PairSet",
    "Split",
    "describe_convention",
    "split_pairs",
]


@dataclass
class PairSet:
    """A staged pair dataset's inputs: the targets are the manifest's images."""

    layout: str
    """"control folders" or "start/end names"."""
    folders: list[Path]
    """The staged input folders, one per input (control/, control_2/, ...): each holds one file per target, named as
    the target is."""
    sizes: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    """Staged target file name -> its inputs' (width, height), in input order."""
    looked_for: str = ""

    @property
    def inputs(self) -> int:
        return len(self.folders)


@dataclass
class Split:
    """Gathered files, read as pairs: `targets` and, per target (same order), its input files."""

    targets: list[str]
    inputs: list[list[str]]
    unpaired: list[tuple[str, str, str]]
    """(file, reason, detail) for each file that is not part of a whole pair."""
    layout: str
    instructions: dict[str, str] = field(default_factory=dict)
    """target name -> the caption file name that holds its instruction, where it is not the target's own."""


def describe_convention(control_dirs: list[str] | None = None) -> str:
    """What staging looks for, for messages: the job's own folders, or both conventions."""
    if control_dirs:
        return ", ".join(f"{name.rstrip('/')}/NAME.ext" for name in control_dirs) + " beside the images"
    return ("a control/ folder beside the images with the same file names (control/NAME.png for NAME.png; "
            "control_2/, control_3/ for more inputs), or NAME_start.png / NAME_end.png files")


def _norm(folder: str) -> tuple[str, ...]:
    return tuple(part for part in PurePosixPath(folder.strip().strip("/")).parts if part not in ("", "."))


def split_pairs(names: list[str], *, captions: set[str] = frozenset(),  # type: ignore[assignment]
                control_dirs: list[str] | None = None) -> Split | None:
    """Read gathered image names (relative paths, '/'-separated) as pairs; None when the dataset holds none (no
    control folder, no _start/_end name). `captions`: the caption files' names, for NAME.txt of a start/end pair.
    `control_dirs`: the job's own input folders (dataset.control_dir), in input order."""
    if control_dirs:
        folders = [_norm(name) for name in control_dirs]
        return _by_folders(names, folders, explicit=True)
    if any(any(part.lower() in CONTROL_DIRS for part in PurePosixPath(name).parts[:-1]) for name in names):
        return _by_folders(names, None, explicit=False)
    if any(START_END.match(PurePosixPath(name).stem) for name in names):
        return _by_names(names, captions=captions)
    return None


def _slot_of(parts: tuple[str, ...], folders: list[tuple[str, ...]] | None) -> tuple[int, tuple[str, ...]] | None:
    """(input slot, the folder the control folder sits in) of a file under a control folder; None for a target."""
    directory = parts[:-1]
    if folders is not None:  # the job's own folders: their files match a target of the same name anywhere
        for slot, folder in enumerate(folders):
            if folder and directory[:len(folder)] == folder:
                return slot, folder[:-1]
        return None
    for index, part in enumerate(directory):
        if part.lower() in CONTROL_DIRS:
            return CONTROL_DIRS.index(part.lower()), directory[:index]
    return None


def _by_folders(names: list[str], folders: list[tuple[str, ...]] | None, *, explicit: bool) -> Split | None:
    inputs: dict[tuple[tuple[str, ...], str], dict[int, str]] = {}
    targets: list[str] = []
    for name in names:
        parts = PurePosixPath(name).parts
        slot = _slot_of(parts, folders)
        if slot is None:
            targets.append(name)
            continue
        index, base = slot
        rest = parts[len(folders[index]) if folders else len(base) + 1:]  # below the control folder
        key = ((() if explicit else base) + rest[:-1], PurePosixPath(rest[-1]).stem.lower())
        inputs.setdefault(key, {})[index] = name
    if not inputs and not explicit:
        return None
    found: list[tuple[str, dict[int, str]]] = []
    unpaired: list[tuple[str, str, str]] = []
    used: set[tuple[tuple[str, ...], str]] = set()
    for name in targets:
        parts = PurePosixPath(name).parts
        stem = PurePosixPath(name).stem.lower()
        here: tuple[tuple[str, ...], str] = (parts[:-1], stem)
        beside = (parts[:-2], stem) if len(parts) > 1 else None  # images/NAME.png beside control/NAME.png
        anywhere = ((), stem) if explicit else None
        match = next((key for key in (here, beside, anywhere) if key is not None and key in inputs), None)
        if match is None or match in used:
            where = _expected(name, folders)
            unpaired.append((name, NO_INPUT, f"no input found at {where}"))
            continue
        used.add(match)
        found.append((name, inputs[match]))
    for key, slots in inputs.items():
        if key not in used:
            unpaired += [(name, NO_TARGET, "no image of the same name beside the control folder")
                         for name in slots.values()]
    return _whole(found, unpaired, layout=LAYOUTS[0])


def _expected(name: str, folders: list[tuple[str, ...]] | None) -> str:
    path = PurePosixPath(name)
    folder = "/".join(folders[0]) if folders else "/".join((*path.parts[:-1], CONTROL_DIRS[0]))
    return f"{folder}/{path.stem}.*"


def _by_names(names: list[str], *, captions: set[str]) -> Split:
    ends: dict[tuple[str, str], str] = {}
    starts: dict[tuple[str, str], dict[int, str]] = {}
    unpaired: list[tuple[str, str, str]] = []
    for name in names:
        path = PurePosixPath(name)
        match = START_END.match(path.stem)
        if match is None:
            unpaired.append((name, NO_INPUT, "neither NAME_start nor NAME_end: not part of a pair"))
            continue
        key = (str(path.parent), match["name"].lower())
        if match["side"].lower() == "end":
            ends[key] = name
        else:
            starts.setdefault(key, {})[int(match["index"] or 1) - 1] = name
    found: list[tuple[str, dict[int, str]]] = []
    instructions: dict[str, str] = {}
    for key, name in ends.items():
        slots = starts.get(key)
        if not slots:
            unpaired.append((name, NO_INPUT, f"no {PurePosixPath(name).stem[:-4]}_start.* beside it"))
            continue
        found.append((name, slots))
        caption = _instruction(name, captions)
        if caption:
            instructions[name] = caption
    for key, slots in starts.items():
        if key not in ends:
            unpaired += [(name, NO_TARGET, "no NAME_end.* beside it") for name in slots.values()]
    split = _whole(found, unpaired, layout=LAYOUTS[1])
    split.instructions = {name: caption for name, caption in instructions.items() if name in split.targets}
    return split


def _instruction(target: str, captions: set[str]) -> str | None:
    """NAME.txt (any caption extension) for NAME_end.png, when the target has no NAME_end.txt of its own."""
    path = PurePosixPath(target)
    base = path.stem[: -len("_end")] if path.stem.lower().endswith("_end") else path.stem
    wanted = str(path.parent / base).lower().removeprefix("./")
    return next((name for name in sorted(captions) if str(PurePosixPath(name).with_suffix("")).lower() == wanted),
                None)


def _whole(found: list[tuple[str, dict[int, str]]], unpaired: list[tuple[str, str, str]], *, layout: str) -> Split:
    """Keep the pairs with the dataset's number of inputs, each input slot filled from the first (SimpleTuner needs
    every input folder to hold a file for every target); the others are listed."""
    counts = Counter(filled for _, slots in found if (filled := _filled(slots)))
    count = max(counts, key=lambda n: (counts[n], n)) if counts else 1
    targets, inputs = [], []
    for name, slots in found:
        if _filled(slots) != count:
            detail = (f"has {_filled(slots)} inputs in order (control/, control_2/, ... or _start, _start2, ...),"
                      f" most pairs have {count}")
            unpaired += [(name, FEWER_INPUTS, detail)] + [(s, FEWER_INPUTS, detail) for s in slots.values()]
            continue
        targets.append(name)
        inputs.append([slots[index] for index in range(count)])
    return Split(targets=targets, inputs=inputs, unpaired=unpaired, layout=layout)


def _filled(slots: dict[int, str]) -> int:
    """How many inputs in order from the first: control/ and control_3/ without control_2/ count one."""
    count = 0
    while count in slots:
        count += 1
    return count
