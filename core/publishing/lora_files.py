"""The LoRA files a run gives: the diffusers file SimpleTuner writes, and the same LoRA in ComfyUI/kohya format.

core.outputs.LORA_FILE is what diffusers' `load_lora_weights` and the Hub's widget read; ComfyUI (and
Forge, Automatic1111) want kohya-style keys (`lora_unet_...`, `lora_te1_...`). `add_comfyui_files` writes
`<name>.safetensors` beside the diffusers file in the output folder and in every checkpoint-N folder, with
SimpleTuner's own converters (the ones behind its `--lora_format comfyui`), by running tools/convert_lora.py in the
trainer env: torch never loads in the app's process. `<name>` is the Hub repo's name, else one made from the job.

A family whose diffusers file ComfyUI loads as it is (SimpleTuner marks it NATIVE_COMFYUI_LORA_SUPPORT: FLUX.2) gets
no second file and no warning: its note (NATIVE_NOTE_PREFIX) says so, and the model card shows the diffusers file in
ComfyUI's LoRA loader. A failed conversion is a warning, never a lost run: the diffusers file is there either way.
Run again for the same folder, it converts only what is missing and renames the file when the repo's name changed
(the UI publishes a run under a repo named after training).
"""

from __future__ import annotations

import json
import re
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from core.adapters import TrainerEnv
from core.errors import SetupError
from core.events import EventSink, JobWarning, LogLine, ignore_event
from core.outputs import LORA_FILE, checkpoints, lora_file
from core.result import JobResult
from core.settings import TOOLS_DIR, Settings
from core.spec import JobSpec

CONVERT_SCRIPT = TOOLS_DIR / "convert_lora.py"
CONVERT_TIMEOUT_S = 600
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
# Runs whose output gets no ComfyUI-format file, and why (the model card shows it).
NOT_CONVERTED = {
    "full": "not applicable: a full fine-tune is a diffusers model folder, not a LoRA",
    "lycoris": "not needed: ComfyUI's LoRA loader reads SimpleTuner's LyCORIS keys (lycoris_...) in "
               f"{LORA_FILE} as they are",
}
NATIVE_NOTE_PREFIX = "not needed: ComfyUI loads this family's"
"""How tools/convert_lora.py's note for a family ComfyUI reads as SimpleTuner saves it begins."""


def comfyui_reads_diffusers_file(note: str | None) -> bool:
    """Whether a run's ComfyUI note says ComfyUI loads its diffusers file as it is (no other file needed)."""
    return bool(note) and str(note).startswith(NATIVE_NOTE_PREFIX)


@dataclass
class ComfyUIFiles:
    """What add_comfyui_files did."""

    file: Path | None = None
    """The output folder's ComfyUI-format file; None when there is none."""
    native: bool = False
    """ComfyUI loads the diffusers file as it is: no file, by design."""
    note: str | None = None
    """Why there is none (an unsupported family, a failed conversion), or how it was made."""
    checkpoints: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def add_lora_files(spec: JobSpec, result: JobResult, *, settings: Settings, on_event: EventSink = ignore_event) -> None:
    """The pipeline's step after training (and before each publish): give `result` its ComfyUI file, named after
    the job's Hub repo; what went wrong lands in result.warnings. A full fine-tune has no LoRA to convert, and
    ComfyUI reads a LyCORIS adapter as SimpleTuner writes it: both get a note, no file."""
    if result.kind in NOT_CONVERTED:
        result.comfyui_path, result.comfyui_note = None, NOT_CONVERTED[result.kind]
        return
    name = comfyui_name(repo_id=spec.hub.repo_id if spec.hub else None, trigger_word=spec.trigger_word,
                        model_family=spec.model_family, job_name=Path(result.job_dir).name)
    for expert in result.experts:  # a two-expert model: one file per expert, named for it
        done = add_comfyui_files(expert.lora_path.parent, name=f"{name}-{expert.folder}",
                                 model_family=spec.model_family, settings=settings, on_event=on_event)
        expert.comfyui_path = done.file
        result.comfyui_note = None if done.file else done.note
        result.warnings += [warning for warning in done.warnings if warning not in result.warnings]
    if result.experts or result.output_dir is None or not (Path(result.output_dir) / LORA_FILE).is_file():
        return
    done = add_comfyui_files(result.output_dir, name=name, model_family=spec.model_family, settings=settings,
                             on_event=on_event)
    result.comfyui_path = done.file
    result.comfyui_note = None if done.file else done.note
    result.warnings += [warning for warning in done.warnings if warning not in result.warnings]


def comfyui_name(*, repo_id: str | None, trigger_word: str | None, model_family: str, job_name: str) -> str:
    """The ComfyUI file's name without .safetensors: the Hub repo's name part, else '<trigger>-<family>-lora' (or
    '<family>-lora-<job>' without a trigger word). Never the diffusers file's own name."""
    if repo_id:
        name = repo_id.rsplit("/", 1)[-1]
    elif trigger_word:
        name = f"{trigger_word}-{model_family}-lora"
    else:
        name = f"{model_family}-lora-{job_name}"
    name = SAFE_NAME.sub("-", name).strip("-.") or "lora"
    return f"{name}-comfyui" if name == LORA_FILE.removesuffix(".safetensors") else name


def is_comfyui_file(path: Path) -> bool:
    """A file this module wrote: its safetensors header says lora_format comfyui (read without torch)."""
    try:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > 100_000_000:
                return False
            header = json.loads(handle.read(length))
    except (OSError, ValueError, struct.error):
        return False
    return (header.get("__metadata__") or {}).get("lora_format") == "comfyui"


def add_comfyui_files(output_dir: Path, *, name: str, model_family: str, settings: Settings,
                      on_event: EventSink = ignore_event) -> ComfyUIFiles:
    """Write `<name>.safetensors` beside each diffusers LoRA in `output_dir` and its checkpoint-N folders. Never
    raises for a failed conversion: the result's warnings say what went wrong."""
    output_dir = Path(output_dir)
    folders = [output_dir, *checkpoints(output_dir, with_lora=True)]  # complete or not: each LoRA gets its file
    folders = [folder for folder in folders if lora_file(folder).is_file()]
    done = ComfyUIFiles()
    target = f"{name}.safetensors"
    missing = []
    for folder in folders:
        _rename_earlier(folder, target)
        if not (folder / target).is_file():
            missing.append(folder)
    if missing:
        on_event(LogLine(f"writing the ComfyUI-format LoRA {target} ({len(missing)} file(s))"))
        report = _convert(missing, name=name, model_family=model_family, settings=settings, done=done)
        if report is not None:
            done.note = report.get("note") or None
            done.native = bool(report.get("native"))
            if not report.get("supported"):
                done.warnings.append(f"no ComfyUI-format file: {done.note}")
            for error in report.get("errors", []):
                where = Path(error.get("dir", "")).name or "output"
                done.warnings.append(f"the ComfyUI-format file for {where} was not written: {error.get('message')}")
    if (output_dir / target).is_file():
        done.file = output_dir / target
        on_event(LogLine(f"ComfyUI-format LoRA: {target}"))
    elif folders and not done.native:
        done.note = (done.warnings[0].removeprefix("no ComfyUI-format file: ") if done.warnings
                     else "the conversion did not write it")
    done.checkpoints = [folder / target for folder in folders[1:] if (folder / target).is_file()]
    for warning in done.warnings:
        on_event(JobWarning(warning, field="lora_files"))
    return done


def _rename_earlier(folder: Path, target: str) -> None:
    """A ComfyUI file written under another name (an earlier repo name) takes the new one."""
    for path in folder.glob("*.safetensors"):
        if path.name not in (target, LORA_FILE) and is_comfyui_file(path):
            if (folder / target).exists():
                path.unlink()
            else:
                path.rename(folder / target)


def _convert(folders: list[Path], *, name: str, model_family: str, settings: Settings,
             done: ComfyUIFiles) -> dict | None:
    try:
        # Offline and on the CPU: a conversion renames keys, it downloads nothing and needs no GPU.
        ran = TrainerEnv(settings).run(CONVERT_SCRIPT, ["--family", model_family, "--name", name, *map(str, folders)],
                                       timeout_s=CONVERT_TIMEOUT_S, device="cpu", offline=True)
    except SetupError as missing:
        done.warnings.append(f"no ComfyUI-format file: {missing.message}")
        done.note = "the trainer env that converts it is missing"
        return None
    except (OSError, subprocess.TimeoutExpired) as exc:
        done.warnings.append(f"no ComfyUI-format file: the conversion did not finish ({type(exc).__name__})")
        done.note = "the conversion did not finish"
        return None
    last = ran.stdout.strip().splitlines()[-1:] if ran.stdout.strip() else []
    try:
        report = json.loads(last[0]) if ran.returncode == 0 and last else None
    except ValueError:
        report = None
    if report is None:
        said = (ran.stderr.strip().splitlines() or ["no message"])[-1][:300]
        done.warnings.append(f"no ComfyUI-format file: the conversion failed (exit {ran.returncode}: {said})")
        done.note = "the conversion failed"
    return report
