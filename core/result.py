"""What a job gives back: the JobResult, and its JSON in the output shape the README's API section shows."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from core.outputs import Sample, samples_output

VIDEO_SUFFIXES = frozenset({".mp4", ".webm", ".gif"})



def human_size(size: float) -> str:
    """'3.7 MB', '512 B': a byte count for people, in decimal units (kB, MB, GB), as the Hub and disks count them.
    The one size formatter of every message, log line and status."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size:.0f} B"


def human_duration(seconds: float) -> str:
    """'2h 15m', '3m 4s', '12.3s': the seed's metrics.elapsed_time."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes}m" if hours else f"{minutes}m {secs}s"


@dataclass
class Metrics:
    steps: int = 0
    total_steps: int | None = None
    loss: float | None = None
    losses: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    eval_losses: list[tuple[int, float]] = field(default_factory=list)
    """(step, evaluation loss on the held-out images), one per checkpoint; empty without held-out images."""

    def to_dict(self) -> dict[str, Any]:
        evaluated = {"eval_loss": self.eval_losses[-1][1],
                     "eval_losses": [[step, loss] for step, loss in self.eval_losses]} if self.eval_losses else {}
        return {
            "loss": self.loss,
            "steps": self.steps,
            "total_steps": self.total_steps,
            "elapsed_s": round(self.elapsed_s, 2),
            "elapsed_time": human_duration(self.elapsed_s),
            **evaluated,
        }


_PATH_FIELDS = ("job_dir", "output_dir", "lora_path", "model_dir", "comfyui_path", "log_path")


@dataclass
class ExpertResult:
    """One expert of a job that trained both of a two-expert model's (core/simpletuner/experts.py)."""

    name: str
    """high | low"""
    folder: str
    """Its folder in the output and in the published repo: high_noise, low_noise."""
    lora_path: Path
    steps: int = 0
    loss: float | None = None
    trained: bool = True
    """False: an earlier job finished it (resume_from "auto") and its LoRA was fetched."""
    comfyui_path: Path | None = None
    """Its LoRA in ComfyUI/kohya format, beside lora_path; None when not written."""

    def to_output(self, *urls: dict[str, str]) -> dict[str, Any]:
        """Its LoRA's URL (published) or path, by its place in the repo: `<folder>/<file name>`."""
        place = f"{self.folder}/{self.lora_path.name}"
        found = next((found[place] for found in urls if place in found), None)
        comfyui = f"{self.folder}/{self.comfyui_path.name}" if self.comfyui_path else None
        comfyui_url = next((found[comfyui] for found in urls if comfyui in found), None) if comfyui else None
        return {"expert": self.name, "folder": self.folder, "lora": found or str(self.lora_path),
                "comfyui": comfyui_url or (str(self.comfyui_path) if self.comfyui_path else None),
                "steps": self.steps, "loss": self.loss, "trained": self.trained}


@dataclass
class JobResult:
    status: str
    """succeeded | dry_run | partial (stopped before the deadline: `resume_from` continues it)."""
    job_dir: Path
    output_dir: Path | None = None
    kind: str = "lora"
    """What was trained (core/simpletuner/kinds.py): lora | lycoris | full."""
    lora_path: Path | None = None
    """The adapter file (a LoRA's or a LyCORIS adapter's); None for a full fine-tune."""
    model_dir: Path | None = None
    """A full fine-tune's diffusers folder (`pipeline/` in the output folder); None for an adapter."""
    comfyui_path: Path | None = None
    """The same LoRA in ComfyUI/kohya format (`<name>.safetensors` beside lora_path); None when not written."""
    comfyui_note: str | None = None
    """Why there is no ComfyUI file, or how it was made (the card shows it)."""
    log_path: Path | None = None
    metrics: Metrics = field(default_factory=Metrics)
    preflight: dict[str, Any] = field(default_factory=dict)
    trainer_files: dict[str, Any] = field(default_factory=dict)
    checkpoints: list[Path] = field(default_factory=list)
    validation: list[tuple[str, str]] = field(default_factory=list)
    """(path inside the output folder, prompt) of each validation image or video (Wan writes .mp4)."""
    hub: dict[str, Any] | None = None
    """publish.HubResult.to_dict(): repo_id, url, commit, files {path: resolve URL}."""
    storage: dict[str, Any] | None = None
    """storage upload: {name: presigned URL}."""
    warnings: list[str] = field(default_factory=list)
    uploaded_checkpoints: list[dict[str, Any]] = field(default_factory=list)
    """Checkpoints uploaded while training (core/publishing/checkpoints.py): {step, location, resume_from}."""
    resume_from: str | None = None
    """A partial job's: the value a job's resume_from takes to continue it."""
    samples: list[Sample] = field(default_factory=list)
    """The job's sample images (core/training/samples.py), per step and prompt."""
    cache: dict[str, Any] | None = None
    """What came from the cache (core/cache/reuse.py): dataset status, text embeddings and latents reused, seconds
    saved."""
    experts: list[ExpertResult] = field(default_factory=list)
    """A job that trained both experts of a two-expert model: each one's LoRA, steps and loss, in order."""
    captioning: dict[str, Any] | None = None
    """What the caption stage did (core/generation/captioning.py CaptionReport): model, counts, timings, per-image
    sources."""
    webhook: dict[str, Any] | None = None
    """The job's webhook deliveries (core/publishing/webhook.py): {url, delivered, failed, dropped}."""

    def files(self) -> list[dict[str, Any]]:
        """The output files, with their URL where one was published."""
        if not self.output_dir or not self.output_dir.is_dir():
            return []
        urls = {**((self.hub or {}).get("files") or {}), **((self.storage or {}).get("files") or {})}
        out = []
        for path in sorted(p for p in self.output_dir.rglob("*") if p.is_file()):
            rel = path.relative_to(self.output_dir).as_posix()
            try:
                size = path.stat().st_size
            except FileNotFoundError:  # renamed or pruned while listed: a push in progress renames the ComfyUI file
                continue
            entry: dict[str, Any] = {"path": rel, "size": size}
            if rel in urls:
                entry["url"] = urls[rel]
            out.append(entry)
        return out

    def _model_checkpoint(self, lora_name: str | None, *urls: dict[str, str]) -> str | None:
        """The adapter file's URL or path; for a full fine-tune its diffusers folder: the Hub repo (the folder is
        its root), else the local folder."""
        if self.model_dir is not None:
            return (self.hub or {}).get("url") or str(self.model_dir)
        found = next((found[lora_name] for found in urls if lora_name in found), None) if lora_name else None
        return found or (str(self.lora_path) if self.lora_path else None)

    def _validation(self, *urls: dict[str, str]) -> list[dict[str, Any]]:
        """Each validation output: path in the output folder, prompt, image or video, and its URL when published."""
        out = []
        for path, prompt in self.validation:
            entry: dict[str, Any] = {"path": path, "prompt": prompt,
                                     "media": "video" if Path(path).suffix.lower() in VIDEO_SUFFIXES else "image"}
            url = next((found[path] for found in urls if path in found), None)
            if url:
                entry["url"] = url
            out.append(entry)
        return out

    def _url_or_path(self, path: Path | None, *urls: dict[str, str]) -> str | None:
        if path is None:
            return None
        return next((found[path.name] for found in urls if path.name in found), str(path))

    def to_state(self) -> dict[str, Any]:
        """Everything the result holds, as JSON: what a restarted app reads back (from_state) to publish or try a
        run it did not train itself. Not the API's output (to_output): paths stay local, nothing is left out."""
        state = {item.name: getattr(self, item.name) for item in fields(self)}
        state["metrics"] = asdict(self.metrics)
        state["samples"] = [asdict(sample) for sample in self.samples]
        state["validation"] = [list(pair) for pair in self.validation]
        state["checkpoints"] = [str(path) for path in self.checkpoints]
        return {name: str(value) if isinstance(value, Path) else value for name, value in state.items()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> JobResult:
        """The result to_state wrote; a key it does not know is left out (a later version's)."""
        known = {item.name for item in fields(cls)}
        data = {name: value for name, value in state.items() if name in known}
        for name in _PATH_FIELDS:
            if data.get(name) is not None:
                data[name] = Path(data[name])
        data["metrics"] = Metrics(**data.get("metrics") or {})
        data["samples"] = [Sample(**sample) for sample in data.get("samples") or []]
        data["validation"] = [(str(path), str(prompt)) for path, prompt in data.get("validation") or []]
        data["checkpoints"] = [Path(path) for path in data.get("checkpoints") or []]
        return cls(**data)

    def to_output(self) -> dict[str, Any]:
        """The API output (README, "The API"), the seed request's keys included. Holds no secret."""
        hub_files = (self.hub or {}).get("files") or {}
        bucket_files = (self.storage or {}).get("files") or {}
        lora_name = self.lora_path.name if self.lora_path else None
        return {
            "status": self.status,
            "hub": {k: v for k, v in self.hub.items() if k in ("repo_id", "url", "commit", "private")}
            if self.hub else None,
            "model_type": self.kind,
            "model_checkpoint": self.experts[0].to_output(hub_files, bucket_files)["lora"] if self.experts
            else self._model_checkpoint(lora_name, hub_files, bucket_files),
            "comfyui_checkpoint": self._url_or_path(self.comfyui_path, hub_files, bucket_files),
            "training_logs": bucket_files.get("training.log") or hub_files.get("training.log")
            or (str(self.log_path) if self.log_path else None),
            "files": self.files(),
            "metrics": self.metrics.to_dict(),
            **({"validation": self._validation(hub_files, bucket_files)} if self.validation else {}),
            "preflight": self.preflight,
            "warnings": self.warnings,
            **({"checkpoints": self.uploaded_checkpoints} if self.uploaded_checkpoints else {}),
            **({"experts": [expert.to_output(hub_files, bucket_files) for expert in self.experts]}
               if self.experts else {}),
            **({"samples": samples_output(self.samples, urls={**bucket_files, **hub_files})} if self.samples else {}),
            **({"resume_from": self.resume_from} if self.resume_from else {}),
            **({"cache": self.cache} if self.cache is not None else {}),
            **({"captioning": self.captioning} if self.captioning is not None else {}),
            **({"webhook": self.webhook} if self.webhook is not None else {}),
            **({"trainer_files": self.trainer_files} if self.status == "dry_run" else {}),
        }
