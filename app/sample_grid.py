"""The Train tab's sample grid: the job's `samples` prompts as rendered at each step, a row per step and a column
per prompt. Images form a compact table: each row starts with its step, each image is captioned with its own
prompt and opens at full size when clicked. An edit run's samples go to a gallery instead, each sample's input(s),
the result and the expected output (the pair's target) side by side, a row per sample. A video family's samples
(.mp4) are video players, each with its first frame as the poster, the browser's controls, and its step and prompt
under it: a gallery shows a video as a muted thumbnail that plays only in its preview."""

from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from app.dataset_store import make_thumbnail
from core.outputs import SAMPLE_SHORTNAME, find_samples, samples_by_step
from core.spec import JobSpec
from core.training import edit_samples, sample_labels

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".webm"})
"""What SimpleTuner writes for a video family's sample (and a browser's <video> plays)."""
POSTERS_DIR = "posters"
"""In the run's job folder: the videos' first frames, made once (make_thumbnail's cache)."""
POSTER_SIZE = 512
PLAYER_PX = 384
"""The widest a player gets: a small sample is not blown up to the page's width."""
CELL_PX = 160
"""An image's width in the compact grid: a few checkpoints by a few prompts fit on one screen."""
"""The widest a player gets: a small sample is not blown up to the page's width."""


@dataclass(frozen=True)
class SampleCell:
    path: Path
    step: int
    prompt: str
    inputs: tuple[Path, ...] = ()
    """An edit sample's input image(s)."""
    expected: Path | None = None
    """An edit sample's expected output: its pair's target."""

    @property
    def caption(self) -> str:
        return f"step {self.step} · {self.prompt}"

    @property
    def is_video(self) -> bool:
        return self.path.suffix.lower() in VIDEO_SUFFIXES


def sample_cells(spec: JobSpec, job_dir: Path) -> tuple[list[SampleCell], int]:
    """The run's samples in grid order (a row per step, a column per prompt), and the number of columns. A row
    ends at the first prompt not rendered yet (that step is still going). An edit run's cells carry their inputs
    and expected output; its prompts, when the job gave none, are its pairs' instructions (the run's prompt
    library)."""
    if spec.samples is None:
        return [], 1
    config = _trainer_config(Path(job_dir))
    # each prompt with its own settings, if any; an edit run without prompts: its pairs' instructions
    prompts = sample_labels(spec.samples, spec.trigger_word) or _library(config)
    edits = edit_samples(config)
    output = Path(job_dir) / "output"
    cells = []
    for step, row in sorted(samples_by_step(find_samples(output, prompts)).items()):
        by_index = {sample.index: sample for sample in row}
        for index in range(len(prompts)):
            if index not in by_index:
                break
            edit = edits.get(SAMPLE_SHORTNAME.format(index))
            cells.append(SampleCell(path=output / by_index[index].path, step=step, prompt=by_index[index].prompt,
                                    inputs=tuple(edit.inputs) if edit else (),
                                    expected=edit.expected if edit else None))
    return cells, max(len(prompts), 1)


def _trainer_config(job_dir: Path) -> dict:
    try:
        return json.loads((job_dir / "trainer" / "config" / "config.json").read_text())
    except (OSError, ValueError):
        return {}


def _library(config: dict) -> dict[str, str]:
    """The prompts SimpleTuner got ({shortname: prompt}): an edit run fills in its pairs' instructions."""
    try:
        library = json.loads(Path(str(config.get("--user_prompt_library"))).read_text())
    except (OSError, ValueError):
        return {}
    return {str(name): str(prompt) for name, prompt in library.items()} if isinstance(library, dict) else {}


def gallery_items(cells: list[SampleCell], *, columns: int) -> tuple[list[tuple[str, str]], int]:
    """The gallery's (image, caption) items and its columns: an image sample per cell, or for an edit run a row per
    sample of its input(s), the result and the expected output."""
    images = [cell for cell in cells if not cell.is_video]
    if not any(cell.expected for cell in images):
        return [(str(cell.path), cell.caption) for cell in images], columns
    items: list[tuple[str, str]] = []
    for cell in images:
        items += [(str(path), f"input · {cell.prompt}") for path in cell.inputs]
        items.append((str(cell.path), cell.caption))
        if cell.expected is not None:
            items.append((str(cell.expected), f"expected · {cell.prompt}"))
    return items, max(len(cell.inputs) for cell in images) + 2


def is_edit_grid(cells: list[SampleCell]) -> bool:
    """An edit run's samples (input, result, expected): the gallery shows them."""
    return any(cell.expected for cell in cells)


def render_images(cells: list[SampleCell]) -> str:
    """The image samples as a compact table: a row per step labelled with it, a column per prompt, each image
    captioned with its own prompt and linked to its full size."""
    rows: dict[int, list[SampleCell]] = {}
    for cell in cells:
        if not cell.is_video:
            rows.setdefault(cell.step, []).append(cell)
    if not rows:
        return ""
    body = []
    for step, row in rows.items():
        figures = "".join(
            f'<td><figure style="margin:0;width:{CELL_PX}px"><a href="{html.escape(file_url(cell.path))}" '
            f'target="_blank" rel="noopener"><img src="{html.escape(file_url(cell.path))}" '
            f'alt="{html.escape(cell.caption)}" title="{html.escape(cell.caption)}" loading="lazy" '
            f'style="width:{CELL_PX}px;height:auto;display:block"></a>'
            f'<figcaption style="font-size:0.8em;line-height:1.2">{html.escape(cell.prompt)}</figcaption></figure></td>'
            for cell in row)
        body.append(f'<tr data-step="{step}"><th scope="row" style="white-space:nowrap;vertical-align:middle;'
                    f'padding-right:8px">step {step}</th>{figures}</tr>')
    return ("<p><b>Samples</b>: a row per checkpoint, a column per prompt (click an image for full size)</p>"
            '<div style="overflow-x:auto"><table class="sample-table" style="border-collapse:separate;'
            f'border-spacing:6px;width:auto">{"".join(body)}</table></div>')


def file_url(path: Path) -> str:
    """Gradio's URL of a file in the app's allowed folder (the data folder), relative to the page: it works behind a
    proxy's path prefix too."""
    return f"gradio_api/file={quote(str(path))}"


def poster(video: Path, *, job_dir: Path) -> Path | None:
    """The video's first frame as a JPEG in the run's folder; None when it cannot be read (still being written)."""
    try:
        return make_thumbnail(video, folder=Path(job_dir) / POSTERS_DIR, size=POSTER_SIZE)
    except Exception as exc:  # FFmpeg's and Pillow's errors alike: the player shows without a poster then
        logger.warning("no poster for %s: %s", video.name, exc)
        return None


def render_videos(cells: list[SampleCell], *, columns: int, job_dir: Path) -> str:
    """The video samples as a grid of players (poster, controls), each captioned with its step and prompt."""
    figures = []
    for cell in cells:
        if not cell.is_video:
            continue
        still = poster(cell.path, job_dir=job_dir)
        poster_attr = f' poster="{html.escape(file_url(still))}"' if still else ""
        caption = html.escape(cell.caption)
        figures.append(
            f'<figure class="sample-video" data-step="{cell.step}" style="margin:0">'
            f'<video controls loop muted playsinline preload="metadata"{poster_attr} '
            f'src="{html.escape(file_url(cell.path))}" title="{caption}" aria-label="{caption}" '
            f'style="width:100%;height:auto;background:#000"></video>'
            f"<figcaption>{caption}</figcaption></figure>")
    if not figures:
        return ""
    return ("<p><b>Samples</b>: a row per checkpoint, a column per prompt</p>"
            f'<div class="sample-videos" style="display:grid;gap:8px;'
            f'grid-template-columns:repeat({max(columns, 1)},minmax(0,{PLAYER_PX}px))">{"".join(figures)}</div>')
