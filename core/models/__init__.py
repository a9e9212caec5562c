"""The models a job loads: its base model and caption model, fetched from the Hub into the cache with progress.

What other packages and the faces may use is listed in __all__."""

from core.models.base_model import fetch_base_model, fetch_repo
from core.models.caption_model import caption_download, fetch_caption_model
from core.models.local import check_local_models, local_model
from core.models.prefetch import ModelFetch

__all__ = [
    "ModelFetch",
    "caption_download",
    "check_local_models",
    "fetch_base_model",
    "fetch_caption_model",
    "fetch_repo",
    "local_model",
]
