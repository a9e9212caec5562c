"""A job's video settings: SimpleTuner's `video` block of a video backend, its defaults and the family's frame rule.

What SimpleTuner 4.10.1 does with the block (data_backend/factory.py, metadata/backends/, caching/vae.py):
- `num_frames` missing: 150 (5 s at the `framerate` flag's 30 fps), with a warning; `min_frames` missing: num_frames;
  `min_frames` below `num_frames` stops the run. A clip with fewer frames than `min_frames` (after the family's
  rounding) or more than `max_frames` is left out of the buckets.
- The family's model class rounds frame counts down to what its VAE and transformer take (`adjust_video_frames`:
  8k+1 for Wan, LTX-Video, LTX-2, Sana-Video and LongCat-Video), num_frames and min_frames included.
- Each clip is one sample: it is decoded whole, rounded down to the family's rule, and the VAE cache keeps its first
  `num_frames` frames (`samples[:, :, :num_frames]`). A longer clip does not give several windows: the rest of it is
  never trained on.
Here the defaults come from the family's SimpleTuner recipe (its `validation_num_video_frames`: 81 for Wan, as in
SimpleTuner's 480p/81-frame example dataloader), and a frame count the family cannot take is refused, naming the
nearest counts it can, instead of being rounded down behind the user's back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.dataset import CLIP_SUFFIXES, ClipEntry, Skipped
from core.errors import SpecError
from core.simpletuner import VIDEO_FAMILIES, recipe_for
from core.spec import ClipLimits, DataloaderOptions, JobSpec

if TYPE_CHECKING:
    from core.training.gpu_fit import GpuPlan

DEFAULT_NUM_FRAMES = 81
"""SimpleTuner's example video dataloader (multidatabackend-small-video-480p+81f.json), for a family with no recipe."""
# (step, remainder): the frame counts a family's model class takes are step*k + remainder (adjust_video_frames).
FRAME_RULES: dict[str, tuple[int, int]] = {family: (8, 1) for family in
                                           ("wan", "ltxvideo", "ltxvideo2", "sanavideo", "longcat_video")}
I2V_FAMILIES = frozenset({"ltxvideo", "ltxvideo2"})
"""Families whose video backends SimpleTuner makes image-to-video unless the block says is_i2v false."""


@dataclass(frozen=True)
class VideoSettings:
    num_frames: int
    """Frames of each training sample (a clip's first num_frames)."""
    min_frames: int
    """A clip with fewer frames gives no sample."""
    max_frames: int
    """A clip with more frames gives no sample."""
    is_i2v: bool
    extra: dict[str, Any]
    """The block's other keys (bucket_strategy, frame_interval), passed on as given."""

    def block(self) -> dict[str, Any]:
        """SimpleTuner's `video` block."""
        return {"num_frames": self.num_frames, "min_frames": self.min_frames, "max_frames": self.max_frames,
                "is_i2v": self.is_i2v, **self.extra}


def is_video_family(family: str) -> bool:
    return family in VIDEO_FAMILIES


def usable_frames(family: str, frames: int) -> int:
    """The frames of a clip SimpleTuner keeps once the family's rule rounded it down."""
    step, rest = FRAME_RULES.get(family, (1, 0))
    if frames < rest or (frames - rest) % step == 0:
        return frames
    return ((frames - rest) // step) * step + rest


def _nearest(family: str, frames: int) -> str:
    step, rest = FRAME_RULES[family]
    below = usable_frames(family, frames)
    options = [str(count) for count in (below, below + step) if count >= max(rest, 1)]
    return " or ".join(options)


def shorthand_block(spec: JobSpec) -> dict[str, Any] | None:
    """The video block the dataloader shorthand gives, None when it gives none."""
    if isinstance(spec.dataloader, DataloaderOptions):
        block = spec.dataloader.backend_overrides.get("video")
        return dict(block) if isinstance(block, dict) else None
    return None


def default_num_frames(spec: JobSpec, *, plan: GpuPlan | None = None) -> int:
    """The recipe's frames (the GPU tier's on CUDA), else SimpleTuner's example's 81."""
    settings = plan.settings if plan is not None else {}
    frames = settings.get("validation_num_video_frames")
    if frames is None:
        try:
            frames = recipe_for(spec.model_family, spec.config.get("model_flavour"),
                                gpu_memory_gb=None).settings.get("validation_num_video_frames")
        except SpecError:
            frames = None
    return int(frames or DEFAULT_NUM_FRAMES)


def video_settings(spec: JobSpec, *, block: dict[str, Any] | None = None, plan: GpuPlan | None = None,
                   field: str = "dataloader.video") -> VideoSettings:
    """The video block a video backend of this job gets: `block` (the job's own; the shorthand's when None) with
    the defaults filled in. SpecError naming `field`.<key> for a count the family cannot take or an order SimpleTuner
    refuses."""
    given = dict(block if block is not None else shorthand_block(spec) or {})
    family = spec.model_family
    num_frames = int(given.pop("num_frames", default_num_frames(spec, plan=plan)))
    min_frames = int(given.pop("min_frames", num_frames))
    max_frames = int(given.pop("max_frames", ClipLimits().max_frames))
    for key, value in (("num_frames", num_frames), ("min_frames", min_frames)):
        if family in FRAME_RULES and usable_frames(family, value) != value:
            step, rest = FRAME_RULES[family]
            raise SpecError(f"{family} trains on {step}k+{rest} frames (SimpleTuner would round {value} down): "
                            f"use {_nearest(family, value)}", field=f"{field}.{key}")
    if min_frames < num_frames:
        raise SpecError(f"must be at least num_frames ({num_frames}): SimpleTuner stops on a smaller min_frames "
                        "(a clip shorter than num_frames cannot give a sample)", field=f"{field}.min_frames")
    if max_frames < min_frames:
        raise SpecError(f"must be at least min_frames ({min_frames})", field=f"{field}.max_frames")
    flavour = str(spec.config.get("model_flavour") or "")
    forced = (family == "wan" and flavour.startswith("i2v-")) or (
        family in ("kandinsky5_video", "hunyuanvideo") and flavour.startswith("i2v"))
    is_i2v = True if forced else bool(given.pop("is_i2v", family in I2V_FAMILIES))
    given.pop("is_i2v", None)
    return VideoSettings(num_frames=num_frames, min_frames=min_frames, max_frames=max_frames, is_i2v=is_i2v,
                         extra=given)


def job_video_settings(spec: JobSpec, *, num_frames: int | None = None) -> VideoSettings:
    """The settings of the job's (first) video backend: a native list's video entry, else the shorthand's block;
    `num_frames`: the default the trainer config uses (its GPU tier's recipe), when the job gives none."""
    block, field = shorthand_block(spec), "dataloader.video"
    if isinstance(spec.dataloader, list):
        found = [(index, b) for index, b in enumerate(spec.dataloader) if b.get("dataset_type") == "video"]
        if found:
            block, field = dict(found[0][1].get("video") or {}), f"dataloader.{found[0][0]}.video"
    block = dict(block or {})
    if num_frames is not None:
        block.setdefault("num_frames", num_frames)
    return video_settings(spec, block=block, field=field)


@dataclass
class ClipsReport:
    """What the staged clips give the training, under the job's video settings (SimpleTuner's rules: see above)."""

    clips: int
    clips_usable: int
    """Clips with at least min_frames (after the family's rounding) and at most max_frames."""
    total_frames: int
    total_seconds: float
    num_frames: int
    min_frames: int
    max_frames: int
    frame_buckets: dict[str, int]
    """'aspect@frames' -> clips: each sample is a clip's first num_frames frames (with bucket_strategy
    resolution_frames, its own rounded length)."""
    samples: int
    """Training samples per epoch from the clips: one per usable clip, x (repeats + 1)."""
    frames_unused: int
    """Frames of the usable clips past num_frames, which no sample holds."""
    longest: int
    """The most frames of one clip, after the family's rounding."""
    too_short: list[str]
    too_long: list[str]
    names: list[str]
    captions: dict[str, int]
    skipped: list[dict[str, str]]
    """Every file with a clip's suffix that staging skipped: name, reason, detail."""


def clips_report(clips: list[ClipEntry], skipped: list[Skipped], *, spec: JobSpec, settings: VideoSettings,
                 repeats: int, bucket_of: Callable[[int, int], float]) -> ClipsReport:
    """`clips`, `skipped`: the manifest's; `bucket_of(width, height)`: the aspect bucket SimpleTuner gives that size
    (core/training/preflight.py's)."""
    family = spec.model_family
    usable: list[ClipEntry] = []
    short: list[str] = []
    long: list[str] = []
    for clip in clips:
        frames = usable_frames(family, clip.frames)
        if frames < settings.min_frames:
            short.append(f"{clip.path.name} ({clip.frames} frames)")
        elif frames > settings.max_frames:
            long.append(f"{clip.path.name} ({clip.frames} frames)")
        else:
            usable.append(clip)
    interval = settings.extra.get("frame_interval") if settings.extra.get("bucket_strategy") == "resolution_frames" \
        else None
    buckets: dict[str, int] = {}
    for clip in usable:
        frames = settings.num_frames
        if interval:
            frames = max(usable_frames(family, clip.frames) // interval * interval, 1)
        key = f"{bucket_of(clip.width, clip.height):g}@{frames}"
        buckets[key] = buckets.get(key, 0) + 1
    captions: dict[str, int] = {}
    for clip in clips:
        captions[clip.caption_source] = captions.get(clip.caption_source, 0) + 1
    return ClipsReport(
        clips=len(clips), clips_usable=len(usable), total_frames=sum(c.frames for c in clips),
        total_seconds=round(sum(c.duration_s for c in clips), 3), num_frames=settings.num_frames,
        min_frames=settings.min_frames, max_frames=settings.max_frames,
        frame_buckets=dict(sorted(buckets.items(), key=lambda item: -item[1])),
        samples=len(usable) * (1 + repeats),
        frames_unused=sum(max(c.frames - settings.num_frames, 0) for c in usable),
        longest=max((usable_frames(family, c.frames) for c in clips), default=0),
        too_short=short, too_long=long, names=[c.path.name for c in clips], captions=captions,
        skipped=[{"name": s.name, "reason": s.reason, "detail": s.detail} for s in skipped
                 if any(s.name.lower().endswith(suffix) for suffix in CLIP_SUFFIXES)],
    )
