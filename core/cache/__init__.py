"""The reuse cache on the volume: staged datasets, generated captions, SimpleTuner's aspect buckets, and what a job
reused.

What other packages and the faces may use is listed in __all__."""

from core.cache.captions import cached_captions, keep_captions, model_identity, run_key
from core.cache.reg_images import keep_reg_images, reg_images_key, restore_reg_images
from core.cache.reuse import JobReuse, describe
from core.cache.store import Cache, file_sha256

__all__ = [
    "Cache",
    "JobReuse",
    "cached_captions",
    "describe",
    "file_sha256",
    "keep_captions",
    "keep_reg_images",
    "model_identity",
    "reg_images_key",
    "restore_reg_images",
    "run_key",
]
