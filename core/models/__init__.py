"""The models a job loads: its base model and caption model, fetched from the Hub into the cache with progress, and
their sizes read from the weights' headers.

What other packages and the faces may use is listed in __all__."""

from core.models.base_model import fetch_base_model, fetch_repo
from core.models.caption_model import caption_download, fetch_caption_model
from core.models.local import check_local_models, local_model
from core.models.prefetch import ModelFetch
from core.models.sizes import ComponentSize, SizeError, header_size, model_sizes

__all__ = [
    "ComponentSize",
    "ModelFetch",
    "SizeError",
    "caption_download",
    "check_local_models",
    "fetch_base_model",
    "fetch_caption_model",
    "fetch_repo",
    "header_size",
    "local_model",
    "model_sizes",
]
