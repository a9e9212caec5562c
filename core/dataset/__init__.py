"""The dataset stage: fetch (URL, S3, Hub dataset, inline files, a local path), extract safely, check images, pair
captions and apply the trigger word -> a Manifest.

What other packages and the faces may use is listed in __all__."""

from core.dataset.archive import IMAGE_SUFFIXES, ExtractLimits, archive_kind, extract_archive
from core.dataset.stage import (
    DOWNLOAD_DIR,
    IMAGES_DIR,
    CaptionOptions,
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

__all__ = [
    "DOWNLOAD_DIR",
    "IMAGES_DIR",
    "IMAGE_SUFFIXES",
    "CaptionOptions",
    "ExtractLimits",
    "ImageEntry",
    "Manifest",
    "Skipped",
    "StagingLimits",
    "apply_trigger",
    "archive_kind",
    "caption_options",
    "clean_caption",
    "describe_source",
    "extract_archive",
    "has_trigger",
    "resolve_local_path",
    "stage_dataset",
]
