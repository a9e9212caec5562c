"""An edit job's samples: pairs of its own dataset, rendered by SimpleTuner's edit validation.

SimpleTuner 4.10.1 validates an edit model (FLUX.1 Kontext, Qwen-Image-Edit, LongCat-Image-Edit:
`requires_validation_edit_captions`) from its datasets: `retrieve_validation_edit_images` walks the image backends
that do not say `disable_validation`, takes each one's first `num_eval_images` files (sorted by path), finds each
file's input in the backend's conditioning datasets (`conditioning_data`, by the same file name) and renders the
input with the file's caption as the prompt, under the shortname `<backend id>_<i>`. The project uses that as it is:

- the pairs the samples take (`choose_sample_pairs`): with `samples.hold_out: N`, the first N pairs by file name,
  moved out of the training dataset into `dataset/held_out/` (never trained on); else the first pairs, which stay in
  training too;
- a samples dataset (`write_sample_dataset`): `dataset/samples/sample_00.png` (the pair's target, its expected output)
  with the sample's prompt as its caption, and its input(s) under the same name in `dataset/samples_control/` (and
  `_2`, `_3`). Its backend is named `sample`, so SimpleTuner's shortnames are the project's `sample_0`, `sample_1`, ...
  (core/outputs.py finds them as any samples); it has `probability: 0` (SimpleTuner's way of a dataset that is never
  sampled for training, as its own generated audio datasets) and the training backend says `disable_validation`, so
  the samples come from that dataset alone;
- each sample's prompt: the job's `samples.prompts` (sample i edits pair i modulo the pairs), else the pair's
  instruction (`with_pair_prompts` fills them in, so the prompt library, the result and the card read them as any).

The end-of-run samples and the UI read the same files back through the run's config (`edit_samples`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import SpecError
from core.outputs import SAMPLE_SHORTNAME

if TYPE_CHECKING:
    from core.dataset import Manifest
    from core.jobdir import JobDir
    from core.spec import JobSpec

SAMPLES_BACKEND = "sample"
"""SimpleTuner names a validation sample `<backend id>_<i>`: this id gives the project's sample_0, sample_1, ..."""
SAMPLES_FOLDER = "samples"
HELD_OUT_FOLDER = "held_out"
MAX_PROMPT = 1000


@dataclass(frozen=True)
class SamplePair:
    """A pair the samples edit: the target (the expected output), its inputs in order, its instruction."""

    target: Path
    inputs: list[Path]
    instruction: str
    held_out: bool


def choose_sample_pairs(spec: JobSpec, manifest: Manifest, *, job: JobDir) -> tuple[Manifest, list[SamplePair]]:
    """The pairs an edit job's samples take, and the manifest left to train on. `samples.hold_out` N: the first N
    pairs by file name, moved into dataset/held_out/ (out of the training folders); 0: the first pairs (one per
    prompt, at least one), left in training. No samples, no pairs, or a dataloader list: ([] and the manifest)."""
    if spec.samples is None or manifest.pairs is None or isinstance(spec.dataloader, list) or not manifest.images:
        return manifest, []
    entries = sorted(manifest.images, key=lambda entry: entry.path.name)
    hold = spec.samples.hold_out
    if hold >= len(entries):
        raise SpecError(f"holds back {hold} pair{'s' if hold > 1 else ''} of the {len(entries)} the dataset has: at "
                        "least one must be left to train on", field="samples.hold_out")
    count = hold or min(max(len(spec.samples.prompts), 1), len(entries))
    folders = manifest.pairs.folders
    pairs = []
    for entry in entries[:count]:
        target, inputs, caption = entry.path, [folder / entry.path.name for folder in folders], _caption(entry)
        if hold:
            kept = job.dataset / HELD_OUT_FOLDER
            target = _move(target, kept / target.parent.name)
            _move(entry.path.with_suffix(".txt"), kept / entry.path.parent.name)
            inputs = [_move(path, kept / path.parent.name) for path in inputs]
        pairs.append(SamplePair(target=target, inputs=inputs, instruction=caption, held_out=bool(hold)))
    if hold:
        held = {entry.path.name for entry in entries[:count]}
        sizes = {name: size for name, size in manifest.pairs.sizes.items() if name not in held}
        manifest = replace(manifest, images=[entry for entry in manifest.images if entry.path.name not in held],
                           pairs=replace(manifest.pairs, sizes=sizes))
    return manifest, pairs


def _caption(entry: Any) -> str:
    """The target's instruction as training reads it: its caption file (captioning may have written it), else the
    staged caption."""
    path = Path(entry.path).with_suffix(".txt")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        text = entry.caption
    return " ".join(text.split())[:MAX_PROMPT]


def _move(path: Path, folder: Path) -> Path:
    if not path.exists():
        return folder / path.name
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.move(str(path), folder / path.name))


def with_pair_prompts(spec: JobSpec, pairs: list[SamplePair]) -> JobSpec:
    """`spec` with each pair's instruction as a sample prompt, when its samples give none."""
    if not pairs or spec.samples is None or spec.samples.prompts:
        return spec
    prompts = [pair.instruction or pair.target.stem for pair in pairs]
    return spec.model_copy(update={"samples": spec.samples.model_copy(update={"prompts": prompts})})


@dataclass(frozen=True)
class SampleDataset:
    """The staged samples dataset: `images` (each sample's expected output and its prompt as its caption) and one
    input folder per input, each file named as its sample."""

    images: Path
    inputs: list[Path]
    count: int


def write_sample_dataset(pairs: list[SamplePair], prompts: list[str], *, job: JobDir) -> SampleDataset | None:
    """dataset/samples/sample_NN.<ext> (+ .txt: the prompt) and dataset/samples_control*/sample_NN.<ext>: sample i
    edits pair i modulo the pairs. None without pairs."""
    if not pairs or not prompts:
        return None
    images = job.dataset / SAMPLES_FOLDER
    inputs = [job.dataset / (f"{SAMPLES_FOLDER}_control" + (f"_{index + 1}" if index else ""))
              for index in range(len(pairs[0].inputs))]
    for folder in (images, *inputs):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    for index, prompt in enumerate(prompts):
        pair = pairs[index % len(pairs)]
        name = f"{_stem(index)}{pair.target.suffix}"
        shutil.copyfile(pair.target, images / name)
        (images / name).with_suffix(".txt").write_text(prompt, encoding="utf-8")
        for source, folder in zip(pair.inputs, inputs, strict=True):
            shutil.copyfile(source, folder / name)  # the target's name: how SimpleTuner finds a target's input
    return SampleDataset(images=images, inputs=inputs, count=len(prompts))


def _stem(index: int) -> str:
    """sample_00, sample_01, ...: SimpleTuner takes a dataset's files sorted by path, so they sort in prompt order."""
    return f"{SAMPLES_BACKEND}_{index:02d}"


@dataclass(frozen=True)
class EditSample:
    """One edit sample's files: its input(s) and its expected output (the pair's target)."""

    inputs: list[Path]
    expected: Path


def edit_samples(config: dict[str, Any]) -> dict[str, EditSample]:
    """shortname (sample_0, ...) -> the input(s) and expected output of each edit sample, read from a trainer
    config.json's multidatabackend.json ({} for a run with no samples dataset)."""
    try:
        backends = json.loads(Path(str(config.get("--data_backend_config"))).read_text())
    except (OSError, ValueError, TypeError):
        return {}
    by_id = {backend.get("id"): backend for backend in backends if isinstance(backend, dict)}
    sample = by_id.get(SAMPLES_BACKEND)
    if not sample or not sample.get("instance_data_dir"):
        return {}
    links = sample.get("conditioning_data") or []
    folders = [Path(by_id.get(link, {}).get("instance_data_dir", "")) for link in
               ([links] if isinstance(links, str) else links)]
    found = {}
    for path in sorted(Path(sample["instance_data_dir"]).iterdir()):
        if path.suffix == ".txt" or not path.stem.startswith(f"{SAMPLES_BACKEND}_"):
            continue
        index = int(path.stem.rsplit("_", 1)[1])
        found[SAMPLE_SHORTNAME.format(index)] = EditSample(inputs=[folder / path.name for folder in folders],
                                                           expected=path)
    return found
