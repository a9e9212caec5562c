"""Where a trained run goes: the Hub repo (card, license, ComfyUI files), the bucket, checkpoints while training,
safekeeping when a push fails, and the destination checks made before anything starts.

What other packages and the faces may use is listed in __all__."""

from core.publishing.bucket import upload_outputs
from core.publishing.card import CardExpert, CardFacts
from core.publishing.card_pairs import card_pairs
from core.publishing.checkpoints import CheckpointUploads, checkpoint_folder, fallback_destinations
from core.publishing.destinations import (
    BucketDestination,
    Destinations,
    HubDestination,
    bucket_of,
    check_destinations,
    destinations_of,
    endpoint_bucket,
    require_destination,
)
from core.publishing.hub_repo import publish_to_hub
from core.publishing.license import base_model_license
from core.publishing.lora_files import add_lora_files, is_comfyui_file
from core.publishing.safekeeping import keep_outputs, outputs_stored
from core.publishing.webhook import JobWebhook, webhook_of

__all__ = [
    "BucketDestination",
    "CardExpert",
    "CardFacts",
    "CheckpointUploads",
    "Destinations",
    "HubDestination",
    "JobWebhook",
    "add_lora_files",
    "base_model_license",
    "bucket_of",
    "card_pairs",
    "check_destinations",
    "checkpoint_folder",
    "destinations_of",
    "endpoint_bucket",
    "fallback_destinations",
    "is_comfyui_file",
    "keep_outputs",
    "outputs_stored",
    "publish_to_hub",
    "require_destination",
    "upload_outputs",
    "webhook_of",
]
