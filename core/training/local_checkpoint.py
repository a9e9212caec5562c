"""resume_from as a local checkpoint folder: what the UI's *Resume* sends for a run its restarted app found
interrupted (the checkpoint-N folder that run left in its job folder).

Only where local paths are allowed (the UI; the worker takes Hub, s3:// and https:// sources only,
core/training/resume.py),
and only under the data folder (DATA_DIR). The folder is copied (hard links where the file system allows), so the
interrupted run keeps its own; its per-dataset sampler state is dropped, as core/training/resume.py does for the same
reason.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from core.errors import ErrorCode, ResumeError
from core.events import EventSink, LogLine, ignore_event
from core.outputs import SAMPLER_STATES, STATE_FILE, checkpoint_step
from core.training.resume import FIELD


def is_local(source: str) -> bool:
    """A resume_from naming a folder on this machine (an absolute path)."""
    return source.startswith("/")


def copy_local_checkpoint(source: str, output_dir: Path, *, root: Path, on_event: EventSink = ignore_event) -> Path:
    """The checkpoint folder `source` copied into `output_dir/checkpoint-N`; a ResumeError (field resume_from)
    when it is outside `root` or is no complete checkpoint."""
    folder = Path(source).resolve()
    if not folder.is_relative_to(Path(root).resolve()):
        raise ResumeError(f"{source}: a local checkpoint must be inside the data folder ({root})", field=FIELD,
                          code=ErrorCode.INVALID_INPUT)
    if checkpoint_step(folder) is None or not (folder / STATE_FILE).is_file():
        raise ResumeError(f"{source}: not a complete SimpleTuner checkpoint-N folder (no {STATE_FILE} in it)",
                          field=FIELD, code=ErrorCode.RESUME_NOT_FOUND)
    target = Path(output_dir) / folder.name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(folder, target, copy_function=_link_or_copy,
                    ignore=shutil.ignore_patterns(SAMPLER_STATES))
    on_event(LogLine(f"resuming from {folder.name} of an earlier run ({folder})"))
    return target


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)  # another file system, or one without hard links
