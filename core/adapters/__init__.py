"""Adapters to the world outside the job: the Hub and S3 clients (their retries and error translation), HTTP downloads
under the address policy, the machine's GPUs, the trainer env's processes (and their process groups, found again by a
restarted app). Every other package reaches the network, and starts a trainer-env process, through here.

What other packages and the faces may use is listed in __all__."""

from core.adapters.address_policy import public_url
from core.adapters.fetch import download, file_name, probe
from core.adapters.gpus import (
    GpuFacts,
    GpuListing,
    detect_device,
    gpu_facts,
    parse_gpu_listing,
    plan_device,
    visible_gpu_ids,
)
from core.adapters.hub import (
    RETRY,
    UNAVAILABLE,
    CancelFlag,
    HubTarget,
    RetryPolicy,
    call_hub,
    check_repo_id,
    create_or_reuse_repo,
    hub_endpoint,
    hub_error,
    is_hub_model_id,
    is_offline,
    is_repo_id,
    list_folder_or_empty,
    offline_error,
    repo_path,
    stop_error,
)
from core.adapters.hub_bar import ByteBar, SilentBar
from core.adapters.process_mark import ProcessMark
from core.adapters.s3 import S3Config, require_keys, s3_client, s3_config, s3_error, s3_failures
from core.adapters.trainer_env import OFFLINE_ENV, TrainerEnv
from core.adapters.webhooks import DeliveryCounts, WebhookSender, check_webhook_url, signature, signing_key

__all__ = [
    "OFFLINE_ENV",
    "RETRY",
    "UNAVAILABLE",
    "ByteBar",
    "CancelFlag",
    "DeliveryCounts",
    "GpuFacts",
    "GpuListing",
    "HubTarget",
    "ProcessMark",
    "RetryPolicy",
    "S3Config",
    "SilentBar",
    "TrainerEnv",
    "WebhookSender",
    "call_hub",
    "check_repo_id",
    "check_webhook_url",
    "create_or_reuse_repo",
    "detect_device",
    "download",
    "file_name",
    "gpu_facts",
    "hub_endpoint",
    "hub_error",
    "is_hub_model_id",
    "is_offline",
    "is_repo_id",
    "list_folder_or_empty",
    "offline_error",
    "parse_gpu_listing",
    "plan_device",
    "probe",
    "public_url",
    "repo_path",
    "require_keys",
    "s3_client",
    "s3_config",
    "s3_error",
    "s3_failures",
    "signature",
    "signing_key",
    "stop_error",
    "visible_gpu_ids",
]
