"""Publishing to the Hub: the real huggingface_hub client against the project's local Hub server.

The output folder is shaped like SimpleTuner's (docs/simpletuner-notes.md, "Output folder of a LoRA run"), with a real
safetensors file and real PNGs. The push of a LoRA really trained by the core is in the pipeline's tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import requests
from huggingface_hub import HfApi, ModelCard, hf_hub_download
from PIL import Image
from safetensors.numpy import load_file, save_file

from core.adapters.hub import RetryPolicy, hub_endpoint
from core.errors import HubAuthError, HubConflict, HubNotFound, HubQuotaError, PublishError
from core.events import LogLine
from core.publishing.card import CardFacts
from core.publishing.destinations import HubDestination
from core.publishing.hub_repo import plan_hub_commit, publish_to_hub
from core.spec.job import HubSpec
from tests.support.hub_server import running_hub_server

TOKEN = "hf_PlantedToken0123456789abcdefXYZ"
REPO = "tester/sks-lora"
VALIDATION = [("validation_images/step_2_val_0.png", "a photo of sks dog"),
              ("validation_images/step_2_val_1.png", "sks dog in the snow")]


def write_lora_output(root: Path) -> Path:
    """A SimpleTuner LoRA output folder: weights, its own card, config, validation images, one checkpoint."""
    out = root / "output"
    rng = np.random.default_rng(0)
    weights = {f"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_{n}.lora_{ab}.weight":
               rng.standard_normal((4, 64) if ab == "A" else (64, 4)).astype(np.float32)
               for n in "qkv" for ab in "AB"}
    (out / "validation_images").mkdir(parents=True)
    (out / "checkpoint-2").mkdir()
    save_file(weights, str(out / "pytorch_lora_weights.safetensors"))
    save_file(weights, str(out / "checkpoint-2" / "pytorch_lora_weights.safetensors"))
    (out / "checkpoint-2" / "optimizer.bin").write_bytes(rng.bytes(2048))
    (out / "checkpoint-2" / "training_state.json").write_text('{"global_step": 2}')
    (out / "README.md").write_text("---\ntags: [simpletuner]\n---\n# SimpleTuner's own card, no trigger word\n")
    (out / "simpletuner_config.json").write_text(json.dumps({"--lora_rank": 4, "--max_train_steps": 2}))
    (out / "all_image_files_demo.json").write_text("{}")
    for (rel, _), color in zip(VALIDATION, ["red", "blue"], strict=True):
        Image.new("RGB", (64, 64), color).save(out / rel)
    return out


def card_facts(**overrides) -> CardFacts:
    values = dict(repo_id=REPO, base_model="stabilityai/stable-diffusion-xl-base-1.0", model_family="sdxl",
                  trigger_word="sks dog", steps=2, final_loss=0.1234, elapsed_s=31.5, dataset_size=6,
                  config={"--lora_rank": 4, "--learning_rate": 1e-4, "--max_train_steps": 2}, validation=VALIDATION)
    values.update(overrides)
    return CardFacts(**values)


@pytest.fixture
def output(tmp_path: Path) -> Path:
    return write_lora_output(tmp_path)


@pytest.fixture
def hub(tmp_path: Path):
    with running_hub_server(tmp_path, token=TOKEN, read_token="hf_ReadOnlyToken0123456789abcdef") as server:
        yield server


def push(output: Path, events: list, **kwargs):
    spec = kwargs.pop("spec", None) or HubSpec(repo_id=REPO)
    retry = RetryPolicy(attempts=kwargs.pop("attempts", 4), backoff_s=0.01)
    destination = HubDestination(spec, token=kwargs.pop("token", TOKEN), endpoint=hub_endpoint())
    return publish_to_hub(output, destination=destination, facts=kwargs.pop("facts", card_facts()),
                          on_event=events.append, retry=retry, **kwargs)


def statuses(events: list) -> list[str]:
    """What the push reported: it began, and whether it said it published (only after the commit succeeded)."""
    lines = [e.message for e in events if isinstance(e, LogLine)]
    began = ["started"] if any(line.startswith("pushing ") for line in lines) else []
    return began + (["completed"] if any(line.startswith("published ") for line in lines) else ["failed"])


def test_push_makes_one_private_commit_whose_files_read_back_byte_for_byte(hub, output: Path, tmp_path: Path):
    events: list = []
    result = push(output, events)

    assert result.private is True
    assert HfApi(endpoint=hub.endpoint, token=TOKEN).repo_info(REPO).private is True
    assert json.loads(hub.requests_to("/api/repos/create")[0].body)["visibility"] == "private"
    assert len(hub.commits(REPO)) == 1 and hub.commits(REPO)[0].oid == result.commit
    assert statuses(events) == ["started", "completed"]

    expected = {"README.md", "pytorch_lora_weights.safetensors", "simpletuner_config.json", *dict(VALIDATION)}
    assert set(result.files) == expected
    assert set(HfApi(endpoint=hub.endpoint, token=TOKEN).list_repo_files(REPO)) == expected | {".gitattributes"}
    for rel in ["pytorch_lora_weights.safetensors", *dict(VALIDATION)]:
        local = hf_hub_download(REPO, rel, endpoint=hub.endpoint, token=TOKEN, cache_dir=tmp_path / "cache")
        assert Path(local).read_bytes() == (output / rel).read_bytes(), rel
        # The resolve URL in the result serves the same bytes (with the token: the repo is private).
        got = requests.get(result.files[rel], headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        assert got.status_code == 200 and got.content == (output / rel).read_bytes()
        assert requests.get(result.files[rel], timeout=10).status_code == 404  # private: nothing without a token
    downloaded = hf_hub_download(REPO, "pytorch_lora_weights.safetensors", endpoint=hub.endpoint, token=TOKEN,
                                 cache_dir=tmp_path / "cache")
    assert set(load_file(downloaded)) == set(load_file(output / "pytorch_lora_weights.safetensors"))
    assert result.url == f"{hub.endpoint}/{REPO}"


def test_the_pushed_card_replaces_simpletuners_and_huggingface_hub_reads_it(hub, output: Path, tmp_path: Path):
    push(output, [])
    card = ModelCard.load(hf_hub_download(REPO, "README.md", endpoint=hub.endpoint, token=TOKEN,
                                          cache_dir=tmp_path / "cache"))
    assert card.data.base_model == "stabilityai/stable-diffusion-xl-base-1.0"
    assert card.data.instance_prompt == "sks dog"
    assert card.data.widget == [{"text": p, "output": {"url": path}} for path, p in VALIDATION]
    assert 'load_lora_weights("tester/sks-lora")' in card.text
    assert "SimpleTuner's own card" not in card.text
    # Every image the card's widget shows is in the repo.
    assert {w["output"]["url"] for w in card.data.widget} <= set(hub.repos[REPO].files)


def test_checkpoints_go_up_only_when_asked(hub, output: Path):
    push(output, [], spec=HubSpec(repo_id=REPO, include_checkpoints=True))
    files = hub.repos[REPO].files
    assert files["checkpoint-2/optimizer.bin"] == (output / "checkpoint-2" / "optimizer.bin").read_bytes()
    assert "checkpoint-2/pytorch_lora_weights.safetensors" in files
    ops = plan_hub_commit(output, facts=card_facts(), include_checkpoints=False)
    assert not any(op.path_in_repo.startswith("checkpoint-") for op in ops)
    assert "all_image_files_demo.json" not in files  # SimpleTuner's cache listings stay home


def test_two_500s_on_the_commit_are_retried_into_exactly_one_commit(hub, output: Path):
    hub.fail_next(r"/commit/main$", 500, times=2, body={"error": "Internal Error - We're working hard to fix this"})
    events: list = []
    result = push(output, events)
    assert [r.status for r in hub.requests_to(r"/commit/main$")] == [500, 500, 200]
    assert len(hub.commits(REPO)) == 1 and hub.commits(REPO)[0].oid == result.commit
    retries = [e for e in events if isinstance(e, LogLine) and "retrying" in e.message]
    assert len(retries) == 2 and "500" in retries[0].message
    assert statuses(events) == ["started", "completed"]


def test_a_dropped_connection_and_a_503_on_create_are_retried(hub, output: Path):
    hub.fail_next(r"/api/repos/create", drop=True)
    hub.fail_next(r"/api/repos/create", 503)
    result = push(output, [])
    assert [r.status for r in hub.requests_to("/api/repos/create")] == [0, 503, 200]
    assert hub.repos[REPO].private and result.commit == hub.commits(REPO)[0].oid


def test_an_html_error_page_from_a_proxy_is_retried(hub, output: Path):
    hub.fail_next(r"/api/validate-yaml", 502, body="<html><body>502 Bad Gateway</body></html>")
    result = push(output, [])
    assert [r.status for r in hub.requests_to("/api/validate-yaml")] == [502, 200]
    assert result.commit == hub.commits(REPO)[0].oid


def test_a_hub_that_keeps_failing_ends_in_a_publish_error_and_nothing_published(hub, output: Path):
    hub.fail_next(r"/commit/main$", 500, times=10, body={"error": "the storage backend is down"})
    events: list = []
    with pytest.raises(PublishError) as raised:
        push(output, events, attempts=3)
    assert "the storage backend is down" in raised.value.message and "3 attempts" in raised.value.message
    assert len(hub.requests_to(r"/commit/main$")) == 3
    assert hub.commits(REPO) == []
    assert statuses(events) == ["started", "failed"]


def test_401_names_the_token_problem_and_nothing_is_reported_as_published(hub, output: Path):
    wrong = "hf_WrongToken0123456789abcdefghij"
    events: list = []
    with pytest.raises(HubAuthError) as raised:
        push(output, events, token=wrong)
    error = raised.value
    assert error.field == "hub.token" and error.code == "hub_auth"
    assert "401" in error.message and "Invalid credentials in Authorization header" in error.message
    assert "HF_TOKEN" in error.message
    assert wrong not in str(error) and wrong not in json.dumps(error.to_payload())
    assert REPO not in hub.repos
    assert statuses(events) == ["started", "failed"]
    assert len(hub.requests_to("/api/repos/create")) == 1  # an auth error is not retried


def test_no_token_is_an_error_before_any_request(hub, output: Path):
    with pytest.raises(HubAuthError) as raised:
        push(output, [], token=None)
    assert raised.value.field == "hub.token" and "HF_TOKEN" in raised.value.message
    assert hub.requests == []


def test_a_read_only_token_gets_a_403_that_says_write_role(hub, output: Path):
    with pytest.raises(HubAuthError) as raised:
        push(output, [], token=hub.read_token)
    assert "403" in raised.value.message and "write role" in raised.value.message
    assert hub.commits(REPO) == []


def test_409_on_create_reuses_the_existing_repo(hub, output: Path):
    hub.add_repo(REPO, private=True, files={"notes.txt": b"kept"})
    events: list = []
    result = push(output, events)
    assert hub.requests_to("/api/repos/create")[0].status == 409
    files = hub.repos[REPO].files
    assert files["notes.txt"] == b"kept" and "pytorch_lora_weights.safetensors" in files
    assert len(hub.commits(REPO)) == 1 and result.commit == hub.repos[REPO].head.oid
    assert any(isinstance(e, LogLine) and "reusing" in e.message for e in events)


def test_an_existing_public_repo_is_not_filled_by_a_private_job(hub, output: Path):
    hub.add_repo(REPO, private=False)
    with pytest.raises(HubConflict) as raised:
        push(output, [])
    assert raised.value.field == "hub.private" and "public" in raised.value.message
    assert hub.commits(REPO) == []


def test_a_public_job_makes_a_public_repo(hub, output: Path):
    result = push(output, [], spec=HubSpec(repo_id=REPO, private=False))
    assert result.private is False and hub.repos[REPO].private is False


def test_404_is_a_typed_error_with_the_hubs_message(hub, output: Path):
    hub.fail_next(r"/preupload/", 404, body={"error": "Repository not found"}, headers={"X-Error-Code": "RepoNotFound"})
    with pytest.raises(HubNotFound) as raised:
        push(output, [])
    assert raised.value.field == "hub.repo_id" and "Repository not found" in raised.value.message


@pytest.mark.parametrize("status", [402, 413])
def test_quota_answers_are_a_quota_error_with_the_hubs_message(hub, output: Path, status: int):
    message = "You have exceeded your private storage quota (100GB). Upgrade to PRO."
    hub.fail_next(r"/commit/main$", status, body={"error": message})
    with pytest.raises(HubQuotaError) as raised:
        push(output, [])
    assert message in raised.value.message and str(status) in raised.value.message
    assert hub.commits(REPO) == []


def test_a_missing_lora_fails_before_any_request(hub, output: Path):
    (output / "pytorch_lora_weights.safetensors").unlink()
    with pytest.raises(PublishError) as raised:
        push(output, [])
    assert raised.value.field == "output_dir" and "pytorch_lora_weights.safetensors" in raised.value.message
    assert hub.requests == []


def test_offline_mode_is_a_clear_error(tmp_path: Path, output: Path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what a process started with HF_HUB_OFFLINE=1 has
    with running_hub_server(tmp_path, token=TOKEN, connect=False) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        with pytest.raises(PublishError) as raised:
            push(output, [])
        assert "HF_HUB_OFFLINE" in raised.value.message and server.requests == []


def test_the_planted_token_appears_nowhere_but_the_authorization_header(hub, output: Path, tmp_path: Path):
    # Plant it where a careless trainer would leak it: the config, the dataloader config, the log.
    config = {"--lora_rank": 4, "--hub_token": TOKEN, "--webhook_config": f"https://hooks.example/x?token={TOKEN}"}
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config))
    backends = tmp_path / "multidatabackend.json"
    backends.write_text(json.dumps([{"id": "s3-data", "type": "aws", "aws_secret_access_key": TOKEN}]))
    log = tmp_path / "training.log"
    log.write_text(f"loading\nHF_TOKEN={TOKEN}\nstep 2 loss 0.12\n")
    (output / "simpletuner_config.json").write_text(json.dumps(config))
    events: list = []

    result = push(output, events, facts=card_facts(config=config),
                  extra_files={"config/config.json": config_file, "config/multidatabackend.json": backends,
                               "training.log": log})
    hub.fail_next(r"/api/repos/create", 500, times=10, body={"error": "down"})
    with pytest.raises(PublishError) as failed:
        push(output, events, facts=card_facts(config=config), attempts=2)

    authorization = [v for r in hub.requests for k, v in r.headers.items() if k.lower() == "authorization"]
    assert f"Bearer {TOKEN}" in authorization  # the token really was in play
    seen = {
        "request bodies": b"\n".join(r.body for r in hub.requests).decode("utf-8", "replace"),
        "request headers": json.dumps([{k: v for k, v in r.headers.items() if k.lower() != "authorization"}
                                       for r in hub.requests]),
        "request paths": json.dumps([r.path + "?" + r.query for r in hub.requests]),
        "events": json.dumps([e.to_dict() for e in events]),
        "result": json.dumps(result.to_dict()),
        "error": json.dumps(failed.value.to_payload()) + str(failed.value),
        "repo files": b"\n".join(hub.repos[REPO].files.values()).decode("utf-8", "replace"),
        "LFS objects": b"\n".join(hub.lfs_objects.values()).decode("utf-8", "replace"),
    }
    for where, text in seen.items():
        assert TOKEN not in text, f"the token leaked into {where}"
    files = hub.repos[REPO].files
    assert json.loads(files["config/config.json"])["--lora_rank"] == 4
    assert "--hub_token" not in json.loads(files["config/config.json"])
    assert "aws_secret_access_key" not in json.loads(files["config/multidatabackend.json"])[0]
    assert b"step 2 loss 0.12" in files["training.log"]


def test_a_full_fine_tunes_pipeline_folder_is_the_repos_root(tmp_path: Path):
    out = tmp_path / "output"
    pipeline = out / "pipeline"
    for folder in ("unet", "vae", "scheduler"):
        (pipeline / folder).mkdir(parents=True)
        (pipeline / folder / "config.json").write_text("{}")
    save_file({"w": np.zeros((2, 2), np.float32)}, str(pipeline / "unet" / "diffusion_pytorch_model.safetensors"))
    (pipeline / "model_index.json").write_text('{"_class_name": "StableDiffusionXLPipeline"}')
    (pipeline / "README.md").write_text("SimpleTuner's card")
    ops = plan_hub_commit(out, facts=card_facts(kind="full"), include_checkpoints=False)
    paths = {op.path_in_repo for op in ops}
    assert {"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
            "vae/config.json", "scheduler/config.json", "README.md"} == paths
    card = next(op for op in ops if op.path_in_repo == "README.md").path_or_fileobj
    assert b"A full fine-tune of" in card
    # A full run that wrote no pipeline is no model: said, never an empty repo.
    (tmp_path / "empty-run").mkdir()
    with pytest.raises(PublishError, match=r"pipeline/model_index\.json is missing"):
        plan_hub_commit(tmp_path / "empty-run", facts=card_facts(kind="full"), include_checkpoints=False)


def test_a_lycoris_run_publishes_its_config_beside_the_weights(output: Path):
    (output / "lycoris_config.json").write_text('{"algo": "lokr", "multiplier": 1.0}')
    ops = plan_hub_commit(output, facts=card_facts(kind="lycoris"), include_checkpoints=False)
    assert {"pytorch_lora_weights.safetensors", "lycoris_config.json"} <= {op.path_in_repo for op in ops}
