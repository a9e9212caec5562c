"""The tabs a user turns to after a training, through gradio_client against the app launched in this process: the
Playground (the warm generation process renders the LoRA beside the base model) and the Publish tab's checkpoint
picker (the Hub gets the weights of the checkpoint picked). One real training of the tiny model (the Tiny demo
preset: 10 steps, checkpoints at 5 and 10) is shared by the module's tests and test_app_api.py's (tests/conftest.py's
trained_app); the tiny model renders noise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gradio_client import Client

from tests.support.hub_server import running_hub_server

TOKEN = "hf_PlaygroundTabToken0123456789abcdXY"
pytestmark = pytest.mark.training


def client_of(trained_app) -> Client:
    """A client of the session's trained app (tests/conftest.py's trained_app), once its training succeeded."""
    assert trained_app.status["status"] == "succeeded", trained_app.status.get("error")
    return Client(trained_app.url, verbose=False, download_files=False)  # files stay on the server: same machine


def generate(client: Client) -> tuple[list[str], list[dict]]:
    """One click on Generate (the final LoRA, side by side with the base model): every status it showed, and the
    gallery it ended with."""
    job = client.submit("sks a red circle", "", 3, 2, 5.0, 1.0, "final LoRA", True, api_name="/playground_generate")
    job.result(timeout=600)
    outputs = job.outputs()
    return [status for status, _ in outputs], outputs[-1][1]


def test_the_playground_renders_with_and_without_the_lora_in_one_warm_process(trained_app):
    ui, client = trained_app.ui, client_of(trained_app)
    choices = client.predict(api_name="/playground_checkpoints")
    assert next(c[0] if isinstance(c, list) else c for c in choices["choices"]) == "final LoRA"

    first_statuses, first = generate(client)
    pid = ui.registry.playground.pid
    second_statuses, second = generate(client)

    assert ui.registry.playground.pid == pid  # the same generation process answered both clicks
    assert any("cold: the model was loaded" in status for status in first_statuses)
    assert any(status.startswith("final LoRA:") and "(warm)" in status for status in second_statuses)
    assert any(status.startswith("none (base model):") and "(warm)" in status for status in second_statuses)
    for gallery in (first, second):
        assert [item["caption"] for item in gallery] == ["final LoRA · seed 3", "none (base model) · seed 3"]
        assert all(Path(item["image"]["path"] if isinstance(item["image"], dict) else item["image"]).is_file()
                   for item in gallery)


def test_the_publish_tab_pushes_the_checkpoint_picked(trained_app, tmp_path: Path):
    ui, client = trained_app.ui, client_of(trained_app)
    offered = client.predict(api_name="/publish_checkpoints")
    values = [choice[1] if isinstance(choice, list) else choice for choice in offered["choices"]]
    assert values == ["last", "best", "5", "10"] and offered["value"] == "last"

    output_dir = ui.registry.last_trained().result.output_dir
    with running_hub_server(tmp_path, token=TOKEN) as hub:
        pushed = client.predict("tester/picked", True, TOKEN, "5", api_name="/push_to_hub")
        weights = hub.repos["tester/picked"].files["pytorch_lora_weights.safetensors"]
        best = client.predict("tester/best", True, TOKEN, "best", api_name="/push_to_hub")
    assert "tester/picked" in pushed and "checkpoint-5" in pushed
    assert weights == (output_dir / "checkpoint-5" / "pytorch_lora_weights.safetensors").read_bytes()
    assert weights != (output_dir / "pytorch_lora_weights.safetensors").read_bytes()
    assert "lowest smoothed loss" in best
    assert TOKEN not in json.dumps([offered, pushed, best])
