"""The base model stage: which files of a Hub model repo are fetched (file lists of the real SDXL and FLUX.1-dev
repos), and the download itself against the local Hub server into an HF_HOME cache: progress, a second job that
downloads nothing, nothing at all when offline or local, and typed errors that never carry the token. (A real job that
trains from the fetched model is test_captioning.py's captioned job: one training for both stages.)"""

from __future__ import annotations

import dataclasses
import json
import random
import threading
import time
from pathlib import Path

import pytest

from core.adapters.hub import RetryPolicy
from core.errors import JobCancelled, ModelDownloadError
from core.events import DownloadProgress, JobWarning, LogLine
from core.models.base_model import fetch_base_model, fetch_repo, hub_models, pipeline_components, plan_model_files
from core.settings import Settings
from core.spec.job import parse_job
from tests.support.hub_server import running_hub_server

TOKEN = "hf_BaseModelTestToken0123456789abcdefXYZ"
FAST = RetryPolicy(attempts=3, backoff_s=0.05)

# stabilityai/stable-diffusion-xl-base-1.0 at its main branch (2023-10 on; sizes left out).
SDXL_FILES = """
.gitattributes 01.png LICENSE.md README.md comparison.png model_index.json pipeline.png
sd_xl_base_1.0.safetensors sd_xl_base_1.0_0.9vae.safetensors sd_xl_offset_example-lora_1.0.safetensors
scheduler/scheduler_config.json
text_encoder/config.json text_encoder/flax_model.msgpack text_encoder/model.fp16.safetensors text_encoder/model.onnx
text_encoder/model.safetensors text_encoder/openvino_model.bin text_encoder/openvino_model.xml
text_encoder_2/config.json text_encoder_2/flax_model.msgpack text_encoder_2/model.fp16.safetensors
text_encoder_2/model.onnx text_encoder_2/model.onnx_data text_encoder_2/model.safetensors
text_encoder_2/openvino_model.bin text_encoder_2/openvino_model.xml
tokenizer/merges.txt tokenizer/special_tokens_map.json tokenizer/tokenizer_config.json tokenizer/vocab.json
tokenizer_2/merges.txt tokenizer_2/special_tokens_map.json tokenizer_2/tokenizer_config.json tokenizer_2/vocab.json
unet/config.json unet/diffusion_flax_model.msgpack unet/diffusion_pytorch_model.fp16.safetensors
unet/diffusion_pytorch_model.safetensors unet/model.onnx unet/model.onnx_data unet/openvino_model.bin
unet/openvino_model.xml
vae/config.json vae/diffusion_flax_model.msgpack vae/diffusion_pytorch_model.fp16.safetensors
vae/diffusion_pytorch_model.safetensors
vae_1_0/config.json vae_1_0/diffusion_pytorch_model.fp16.safetensors vae_1_0/diffusion_pytorch_model.safetensors
vae_decoder/config.json vae_decoder/model.onnx vae_decoder/openvino_model.bin vae_decoder/openvino_model.xml
vae_encoder/config.json vae_encoder/model.onnx vae_encoder/openvino_model.bin vae_encoder/openvino_model.xml
""".split()
SDXL_INDEX = {
    "_class_name": "StableDiffusionXLPipeline", "_diffusers_version": "0.19.0.dev0",
    "force_zeros_for_empty_prompt": True, "add_watermarker": None,
    "scheduler": ["diffusers", "EulerDiscreteScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"], "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"], "feature_extractor": [None, None], "image_encoder": [None, None],
}
SDXL_COMPONENTS = ["scheduler", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "unet", "vae"]

# black-forest-labs/FLUX.1-dev at its main branch.
FLUX_FILES = """
.gitattributes LICENSE.md README.md ae.safetensors dev_grid.jpg flux1-dev.safetensors model_index.json
scheduler/scheduler_config.json
text_encoder/config.json text_encoder/model.safetensors
text_encoder_2/config.json text_encoder_2/model-00001-of-00002.safetensors
text_encoder_2/model-00002-of-00002.safetensors
text_encoder_2/model.safetensors.index.json
tokenizer/merges.txt tokenizer/special_tokens_map.json tokenizer/tokenizer_config.json tokenizer/vocab.json
tokenizer_2/special_tokens_map.json tokenizer_2/spiece.model tokenizer_2/tokenizer.json
tokenizer_2/tokenizer_config.json
transformer/config.json transformer/diffusion_pytorch_model-00001-of-00003.safetensors
transformer/diffusion_pytorch_model-00002-of-00003.safetensors
transformer/diffusion_pytorch_model-00003-of-00003.safetensors
transformer/diffusion_pytorch_model.safetensors.index.json
vae/config.json vae/diffusion_pytorch_model.safetensors
""".split()
FLUX_COMPONENTS = ["scheduler", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "transformer", "vae"]

# madebyollin/sdxl-vae-fp16-fix: one diffusers component at the root, beside single-file copies.
VAE_FILES = """.gitattributes README.md config.json diffusion_pytorch_model.bin diffusion_pytorch_model.safetensors
sdxl.vae.safetensors sdxl_vae.safetensors images/sdxl-vae-fp16-fix-demo.png""".split()


def test_the_sdxl_plan_is_the_diffusers_weights_and_configs_only():
    plan = plan_model_files(SDXL_FILES, components=SDXL_COMPONENTS)
    assert plan == sorted([
        "model_index.json", "scheduler/scheduler_config.json",
        "text_encoder/config.json", "text_encoder/model.safetensors",
        "text_encoder_2/config.json", "text_encoder_2/model.safetensors",
        *[f"{tok}/{name}" for tok in ("tokenizer", "tokenizer_2")
          for name in ("merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json")],
        "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
    ])
    # Without model_index.json's list every folder with a config counts, but still no ONNX/OpenVINO/Flax/fp16 copy
    # and no root single-file checkpoint.
    loose = plan_model_files(SDXL_FILES)
    assert set(plan) < set(loose)
    assert not [p for p in loose if p.endswith((".onnx", ".onnx_data", ".msgpack", ".xml", ".fp16.safetensors"))
                or "openvino" in p or ("/" not in p and p.endswith(".safetensors"))]


def test_a_variant_in_the_config_picks_the_variant_weights():
    plan = plan_model_files(SDXL_FILES, components=SDXL_COMPONENTS, variant="fp16")
    weights = [p for p in plan if p.endswith(".safetensors")]
    assert weights == ["text_encoder/model.fp16.safetensors", "text_encoder_2/model.fp16.safetensors",
                       "unet/diffusion_pytorch_model.fp16.safetensors", "vae/diffusion_pytorch_model.fp16.safetensors"]
    # A component without that variant falls back to its plain weights.
    assert "transformer/diffusion_pytorch_model-00001-of-00003.safetensors" in plan_model_files(
        FLUX_FILES, components=FLUX_COMPONENTS, variant="fp16")


def test_the_flux_plan_takes_the_shards_and_skips_the_root_checkpoints():
    plan = plan_model_files(FLUX_FILES, components=FLUX_COMPONENTS)
    assert plan == sorted([
        "model_index.json", "scheduler/scheduler_config.json",
        "text_encoder/config.json", "text_encoder/model.safetensors",
        "text_encoder_2/config.json", "text_encoder_2/model-00001-of-00002.safetensors",
        "text_encoder_2/model-00002-of-00002.safetensors", "text_encoder_2/model.safetensors.index.json",
        "tokenizer/merges.txt", "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json",
        "tokenizer/vocab.json",
        "tokenizer_2/special_tokens_map.json", "tokenizer_2/spiece.model", "tokenizer_2/tokenizer.json",
        "tokenizer_2/tokenizer_config.json",
        "transformer/config.json", "transformer/diffusion_pytorch_model-00001-of-00003.safetensors",
        "transformer/diffusion_pytorch_model-00002-of-00003.safetensors",
        "transformer/diffusion_pytorch_model-00003-of-00003.safetensors",
        "transformer/diffusion_pytorch_model.safetensors.index.json",
        "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
    ])


def test_a_vae_repo_a_bin_only_folder_and_a_single_file_repo():
    assert plan_model_files(VAE_FILES) == ["config.json", "diffusion_pytorch_model.safetensors"]
    old = ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.bin",
           "text_encoder/config.json", "text_encoder/pytorch_model.bin", "text_encoder/training_args.bin"]
    assert plan_model_files(old) == ["model_index.json", "text_encoder/config.json", "text_encoder/pytorch_model.bin",
                                     "unet/config.json", "unet/diffusion_pytorch_model.bin"]
    single = [".gitattributes", "README.md", "sample.png", "dreamy_xl_v2.safetensors", "dreamy_xl_v2.json",
              "extras/other.safetensors", "dreamy_xl_v2.ckpt"]
    assert plan_model_files(single) == ["dreamy_xl_v2.json", "dreamy_xl_v2.safetensors"]


def test_the_components_are_those_model_index_json_names(tmp_path):
    index = tmp_path / "model_index.json"
    index.write_text(json.dumps(SDXL_INDEX))
    assert sorted(pipeline_components(index)) == SDXL_COMPONENTS
    index.write_text("not json")
    assert pipeline_components(index) is None


# -- against the local Hub server -------------------------------------------------------------------------------------

REPO = "stabilityai/sdxl-mini"
VAE_REPO = "madebyollin/vae-mini"


def blob(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def sdxl_mini() -> dict[str, bytes]:
    """A small repo in SDXL's layout: what must be fetched, beside copies that must not."""
    small = {"scheduler/scheduler_config.json": b'{"_class_name": "EulerDiscreteScheduler"}',
             "text_encoder/config.json": b'{"hidden_size": 32}', "tokenizer/vocab.json": b'{"a": 0}',
             "tokenizer/merges.txt": b"a b", "tokenizer/tokenizer_config.json": b'{"model_max_length": 77}',
             "unet/config.json": b'{"sample_size": 16}', "vae/config.json": b'{"latent_channels": 4}',
             "vae_1_0/config.json": b'{"latent_channels": 4, "v": 1}', "README.md": b"# sdxl mini"}
    index = {key: value for key, value in SDXL_INDEX.items() if key not in ("text_encoder_2", "tokenizer_2")}
    return {
        "model_index.json": json.dumps(index).encode(), **small,
        "text_encoder/model.safetensors": blob(200_000, 1), "text_encoder/model.fp16.safetensors": blob(100_000, 2),
        "text_encoder/model.onnx": blob(50_000, 3),
        "unet/diffusion_pytorch_model.safetensors": blob(3_000_000, 4),
        "unet/diffusion_pytorch_model.fp16.safetensors": blob(1_500_000, 5),
        "unet/openvino_model.bin": blob(60_000, 6), "unet/diffusion_flax_model.msgpack": blob(70_000, 7),
        "vae/diffusion_pytorch_model.safetensors": blob(500_000, 8),
        "vae_1_0/diffusion_pytorch_model.safetensors": blob(400_000, 9),
        "sd_xl_base_1.0.safetensors": blob(2_000_000, 10),
    }


PLANNED = ["model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json",
           "text_encoder/model.safetensors", "tokenizer/merges.txt", "tokenizer/tokenizer_config.json",
           "tokenizer/vocab.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
           "vae/diffusion_pytorch_model.safetensors"]


def job(model: str = REPO, **config):
    return parse_job({"input": {"dataset_url": "https://example.com/data.zip",
                                "config": {"model_name": model, "model_family": "sdxl", **config}}})


@pytest.fixture
def online(tmp_path, settings) -> Settings:
    return dataclasses.replace(settings, online=True, hf_home=tmp_path / "hf-home")


def cached_file(repo: str, path: str, settings: Settings) -> Path | None:
    """What SimpleTuner's offline loading of `repo` (revision main, HF_HOME) finds for `path`."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, path, cache_dir=settings.hf_home / "hub")
    return Path(found) if isinstance(found, str) else None


def downloads(hub) -> list[str]:
    return sorted(r.path.split("/resolve/", 1)[1].split("/", 1)[1] for r in hub.requests_to(r"/resolve/", "GET"))


def test_the_planned_files_land_in_the_cache_with_progress_and_a_second_job_downloads_nothing(tmp_path, online):
    files = sdxl_mini()
    events: list = []
    with running_hub_server(tmp_path, token=TOKEN) as hub:
        hub.add_repo(REPO, files=files)
        started = time.monotonic()
        folder = fetch_base_model(job(), settings=online, token=TOKEN, on_event=events.append)
        elapsed = time.monotonic() - started

        commit = hub.repos[REPO].head.oid
        assert folder == online.hf_home / "hub" / "models--stabilityai--sdxl-mini" / "snapshots" / commit
        for path in PLANNED:
            assert cached_file(REPO, path, online).read_bytes() == files[path], path
            assert (folder / path).read_bytes() == files[path]
        for skipped in set(files) - set(PLANNED):
            assert cached_file(REPO, skipped, online) is None, skipped
        assert downloads(hub) == PLANNED  # each planned file once, nothing else

        # model_index.json came first (it says which folders to plan) and is no part of the announced download.
        total = sum(len(files[path]) for path in PLANNED if path != "model_index.json")
        progress = [e for e in events if isinstance(e, DownloadProgress)]
        assert progress[0].bytes_done == 0 and progress[-1].bytes_done == total
        assert all(e.source == REPO and e.bytes_total == total for e in progress)
        assert [e.bytes_done for e in progress] == sorted(e.bytes_done for e in progress)
        assert len(progress) <= 2 + 2 * elapsed / 0.9  # throttled: about two a second at most
        logs = [e.message for e in events if isinstance(e, LogLine)]
        assert f"downloading {REPO}: 3.7 MB in 10 files" in logs

        # A second job on the same volume: one look at the Hub for the current commit, no file request.
        before = len(hub.requests)
        again: list = []
        assert fetch_base_model(job(), settings=online, token=TOKEN, on_event=again.append) == folder
        assert [r.path for r in hub.requests[before:]] == [f"/api/models/{REPO}/revision/main"]
        assert not [e for e in again if isinstance(e, DownloadProgress)]
        assert any("already in the cache" in e.message for e in again if isinstance(e, LogLine))
    assert TOKEN not in json.dumps([e.to_dict() for e in events + again])


def test_a_config_vae_on_the_hub_is_fetched_too(tmp_path, online):
    vae = {"config.json": b'{"_class_name": "AutoencoderKL"}', "diffusion_pytorch_model.safetensors": blob(300_000, 11),
           "diffusion_pytorch_model.bin": blob(300_000, 12), "sdxl_vae.safetensors": blob(300_000, 13)}
    with running_hub_server(tmp_path, token=TOKEN) as hub:
        hub.add_repo(REPO, files=sdxl_mini())
        hub.add_repo(VAE_REPO, files=vae, private=False)
        spec = job(vae=VAE_REPO)
        assert hub_models(spec) == [("config.model_name", REPO), ("config.vae", VAE_REPO)]
        fetch_base_model(spec, settings=online, token=TOKEN)
        assert cached_file(VAE_REPO, "diffusion_pytorch_model.safetensors", online).read_bytes() == \
            vae["diffusion_pytorch_model.safetensors"]
        assert cached_file(VAE_REPO, "sdxl_vae.safetensors", online) is None
        assert cached_file(VAE_REPO, "diffusion_pytorch_model.bin", online) is None


def test_offline_settings_or_a_local_model_make_no_request(tmp_path, online, settings):
    local_model = tmp_path / "my-model"
    local_model.mkdir()
    with running_hub_server(tmp_path, token=TOKEN) as hub:
        hub.add_repo(REPO, files=sdxl_mini())
        assert fetch_base_model(job(), settings=dataclasses.replace(online, online=False), token=TOKEN) is None
        assert fetch_base_model(job(str(local_model), vae=str(local_model)), settings=online, token=TOKEN) is None
        assert hub.requests == []
    assert not (online.hf_home / "hub").exists()


def test_hf_hub_offline_in_the_process_fetches_nothing_and_says_so(tmp_path, online, monkeypatch):
    with running_hub_server(tmp_path, token=TOKEN, connect=False) as hub:  # offline mode stays on (conftest)
        monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
        hub.add_repo(REPO, files=sdxl_mini())
        events: list = []
        assert fetch_base_model(job(), settings=online, token=TOKEN, on_event=events.append) is None
        assert hub.requests == []
    warnings = [e for e in events if isinstance(e, JobWarning)]
    assert warnings and "HF_HUB_OFFLINE" in warnings[0].message and warnings[0].field == "config.model_name"


def test_a_rejected_token_names_the_field_and_what_to_do_without_the_token(tmp_path, online):
    message = "Invalid credentials in Authorization header"
    with running_hub_server(tmp_path, token=TOKEN) as hub:
        hub.add_repo(REPO, files=sdxl_mini())
        hub.fail_next(r"^/api/models/", 401, body={"error": message}, headers={"X-Error-Message": message})
        with pytest.raises(ModelDownloadError) as caught:
            fetch_base_model(job(), settings=online, token=TOKEN)
        assert downloads(hub) == []
    error = caught.value
    assert (error.field, error.stage, error.code) == ("config.model_name", "model", "hub_auth")
    assert REPO in error.message and "accept the model's license" in error.message and "HF_TOKEN" in error.message
    assert TOKEN not in str(error) and TOKEN not in json.dumps(error.to_payload())


def test_a_gated_model_refused_at_download_is_an_access_error(tmp_path, online):
    with running_hub_server(tmp_path, token=TOKEN) as hub:
        hub.add_repo(REPO, files=sdxl_mini())
        hub.fail_next(r"/resolve/", 403, times=100, body={"error": "Access to model is restricted"},
                      headers={"X-Error-Code": "GatedRepo", "X-Error-Message": "Access to model is restricted"})
        with pytest.raises(ModelDownloadError) as caught:
            fetch_base_model(job(), settings=online, token=TOKEN)
    assert caught.value.code == "hub_auth" and caught.value.field == "config.model_name"
    assert "license" in caught.value.message and TOKEN not in str(caught.value)
    assert cached_file(REPO, "unet/diffusion_pytorch_model.safetensors", online) is None


def test_a_missing_repo_or_revision_names_it(tmp_path, online):
    with running_hub_server(tmp_path, token=TOKEN) as hub:
        hub.add_repo(REPO, files=sdxl_mini())
        with pytest.raises(ModelDownloadError) as missing:
            fetch_base_model(job("stabilityai/no-such-model"), settings=online, token=TOKEN)
        with pytest.raises(ModelDownloadError) as no_vae:
            fetch_base_model(job(vae="madebyollin/no-such-vae"), settings=online, token=TOKEN)
        with pytest.raises(ModelDownloadError) as revision:
            fetch_base_model(job(revision="v9"), settings=online, token=TOKEN)
    assert missing.value.code == "hub_not_found" and missing.value.field == "config.model_name"
    assert "stabilityai/no-such-model" in missing.value.message and "404" in missing.value.message
    assert no_vae.value.field == "config.vae" and "madebyollin/no-such-vae" in no_vae.value.message
    assert revision.value.field == "config.revision" and "'v9'" in revision.value.message
    assert TOKEN not in str(missing.value) + str(no_vae.value) + str(revision.value)


def test_a_dropped_connection_or_a_503_is_tried_again(tmp_path, online):
    files = sdxl_mini()
    with running_hub_server(tmp_path, token=TOKEN) as hub:
        hub.add_repo(REPO, files=files)
        hub.fail_next(r"^/api/models/", drop=True)
        hub.fail_next(r"/resolve/.*/unet/diffusion_pytorch_model.safetensors$", 503, method="GET")
        fetch_repo(REPO, field="config.model_name", cache_dir=online.hf_home / "hub", token=TOKEN, retry=FAST)
        assert [r.status for r in hub.requests_to(r"/resolve/.*/unet/diffusion_pytorch_model.safetensors$", "GET")] \
            == [503, 200]
    assert cached_file(REPO, "unet/diffusion_pytorch_model.safetensors", online).read_bytes() == \
        files["unet/diffusion_pytorch_model.safetensors"]


def test_an_unreachable_hub_uses_a_complete_cached_copy_or_says_it_cannot_download(tmp_path, online):
    cache, empty = online.hf_home / "hub", tmp_path / "empty-cache"
    with running_hub_server(tmp_path, token=TOKEN) as hub:
        hub.add_repo(REPO, files=sdxl_mini())
        folder = fetch_base_model(job(), settings=online, token=TOKEN)
        hub.fail_next(r"^/api/models/", drop=True, times=100)
        before = len(hub.requests)
        events: list = []
        assert fetch_repo(REPO, field="config.model_name", cache_dir=cache, token=TOKEN, on_event=events.append,
                          retry=FAST) == folder
        assert any("cannot be reached" in e.message for e in events if isinstance(e, LogLine))
        with pytest.raises(ModelDownloadError) as caught:
            fetch_repo(REPO, field="config.model_name", cache_dir=empty, token=TOKEN, retry=FAST)
        assert [r.path for r in hub.requests[before:]] == [f"/api/models/{REPO}/revision/main"] * 6  # 3 tries each
    assert caught.value.field == "config.model_name" and "cannot reach the Hub" in caught.value.message
    assert hub.endpoint in caught.value.message and TOKEN not in caught.value.message


def test_a_cancelled_job_downloads_no_weights(tmp_path, online):
    cancel = threading.Event()
    cancel.set()

    def worker_sink(event):  # what worker/handler.py's sink does once a job is cancelled
        if isinstance(event, DownloadProgress):
            raise JobCancelled("cancelled before training started")

    with running_hub_server(tmp_path, token=TOKEN) as hub:
        hub.add_repo(REPO, files=sdxl_mini())
        with pytest.raises(JobCancelled) as caught:
            fetch_base_model(job(), settings=online, token=TOKEN, cancel=cancel)
        with pytest.raises(JobCancelled):
            fetch_base_model(job(), settings=online, token=TOKEN, on_event=worker_sink)
        assert [path for path in downloads(hub) if path.endswith(".safetensors")] == []
    assert caught.value.stage == "model"
    assert not [t for t in threading.enumerate() if t.name.startswith("download ")]
