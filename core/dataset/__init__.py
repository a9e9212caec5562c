"""The dataset stage: fetch (URL, S3, Hub dataset, inline files, a local path), extract safely, check images, pair
captions and apply the trigger word, read edit pairs, set regularisation and held-out images and masks apart -> a
Manifest.

What other packages and the faces may use is listed in __all__."""

from core.dataset.archive import IMAGE_SUFFIXES, ExtractLimits, archive_kind, extract_archive
from core.dataset.clips import CLIP_SUFFIXES, DEMUXERS
from core.dataset.concepts import MAIN_FOLDER, Concept, concepts_of
from core.dataset.doctor import Finding, examine
from core.dataset.input_image import (
    InputImageError,
    clip_first_frame,
    input_image_file,
)
from core.dataset.pairs import CONTROL_DIRS, PAIR_REASONS, PairSet, describe_convention
from core.dataset.stage import (
    CLIPS_DIR,
    DOWNLOAD_DIR,
    IMAGES_DIR,
    CaptionOptions,
    ClipEntry,
    ImageEntry,
    Manifest,
    Skipped,
    StagingLimits,
    apply_trigger,
    caption_options,
    clean_caption,
    describe_source,
    has_trigger,
    resolve_local_path,
    stage_dataset,
)
from core.dataset.subsets import MASK_REASONS, REG_DIR, SUBSET_DIRS, Subsets

__all__ = [
    "CLIPS_DIR",
    "CLIP_SUFFIXES",
    "CONTROL_DIRS",
    "DEMUXERS",
    "DOWNLOAD_DIR",
    "IMAGES_DIR",
    "IMAGE_SUFFIXES",
    "MAIN_FOLDER",
    "MASK_REASONS",
    "PAIR_REASONS",
    "REG_DIR",
    "SUBSET_DIRS",
    "CaptionOptions",
    "ClipEntry",
    "Concept",
    "ExtractLimits",
    "Finding",
    "ImageEntry",
    "InputImageError",
    "Manifest",
    "PairSet",
    "Skipped",
    "StagingLimits",
    "Subsets",
    "apply_trigger",
    "archive_kind",
    "caption_options",
    "clean_caption",
    "clip_first_frame",
    "concepts_of",
    "describe_convention",
    "describe_source",
    "examine",
    "extract_archive",
    "has_trigger",
    "input_image_file",
    "resolve_local_path",
    "stage_dataset",
]
