"""The model card: YAML that huggingface_hub's own ModelCard parses, and a body a person can follow."""

from __future__ import annotations

import json
import re

import pytest
from huggingface_hub import ModelCard

from core.publishing.card import BASE_TAGS, CardFacts, render_model_card

TOKEN = "hf_PlantedToken0123456789abcdefXYZ"


def facts(**overrides) -> CardFacts:
    values = dict(
        repo_id="tester/sks-dog-lora",
        base_model="stabilityai/stable-diffusion-xl-base-1.0",
        model_family="sdxl",
        trigger_word="sks dog",
        steps=500,
        final_loss=0.08124,
        elapsed_s=754.0,
        dataset_size=12,
        config={"--lora_rank": 16, "--lora_alpha": 8, "--learning_rate": 0.0001, "--optimizer": "adamw_bf16",
                "--max_train_steps": 500, "--train_batch_size": 2, "--resolution": 1024, "--hub_token": TOKEN,
                "--lr_scheduler": "constant"},
        validation=[("validation_images/step_500_val_0.png", "a photo of sks dog on a beach"),
                    ("validation_images/step_500_val_1.png", 'sks dog: "portrait", #1 & more')],
        license="openrail++",
        tags=["dogs"],
    )
    values.update(overrides)
    return CardFacts(**values)


def code_block(card: str) -> str:
    return re.search(r"```python\n(.*?)```", card, re.S).group(1)


def test_huggingface_hub_parses_the_metadata():
    card = ModelCard(render_model_card(facts()))
    data = card.data.to_dict()
    assert data["base_model"] == "stabilityai/stable-diffusion-xl-base-1.0"
    assert data["library_name"] == "diffusers"
    assert data["license"] == "openrail++"
    assert data["instance_prompt"] == "sks dog"
    assert data["tags"] == [*BASE_TAGS, "sdxl", "dogs"]
    # Prompts with YAML-significant characters survive the round trip.
    assert data["widget"] == [
        {"text": "a photo of sks dog on a beach", "output": {"url": "validation_images/step_500_val_0.png"}},
        {"text": 'sks dog: "portrait", #1 & more', "output": {"url": "validation_images/step_500_val_1.png"}},
    ]


def test_unknown_license_and_missing_trigger_are_left_out_not_invented():
    text = render_model_card(facts(license=None, trigger_word=None, validation=[]))
    data = ModelCard(text).data.to_dict()
    assert "license" not in data and "instance_prompt" not in data and "widget" not in data
    assert "trained without a trigger word" in text


@pytest.mark.parametrize(("family", "pipeline"), [
    ("sdxl", "StableDiffusionXLPipeline"),
    ("flux", "FluxPipeline"),
    ("sd3", "StableDiffusion3Pipeline"),
    ("pixart_sigma", "DiffusionPipeline"),
])
def test_the_snippet_loads_this_lora_with_the_pipeline_of_its_family(family: str, pipeline: str):
    code = code_block(render_model_card(facts(model_family=family)))
    compile(code, "snippet", "exec")  # valid Python, as a user would paste it
    assert f"from diffusers import {pipeline}\n" in code
    assert f'{pipeline}.from_pretrained("stabilityai/stable-diffusion-xl-base-1.0"' in code
    assert 'load_lora_weights("tester/sks-dog-lora")' in code
    assert re.search(r'pipeline\(".*sks dog.*"\)', code)


def test_the_trigger_word_is_in_the_snippet_even_without_a_validation_prompt_that_has_it():
    code = code_block(render_model_card(facts(trigger_word="ohwx", validation=[])))
    assert 'pipeline("a photo of ohwx")' in code


def test_the_body_states_how_it_was_trained():
    text = render_model_card(facts())
    rows = dict(re.findall(r"^\| ([^|]+?) \| (.+?) \|$", text, re.M))
    assert rows["LoRA rank"] == "16"
    assert rows["LoRA alpha"] == "8"
    assert rows["Learning rate"] == "0.0001"
    assert rows["Optimizer"] == "adamw_bf16"
    assert rows["Batch size"] == "2"
    assert rows["Resolution"] == "1024"
    assert rows["Steps trained"] == "500"
    assert rows["Dataset size"] == "12 images"
    assert rows["Final loss"] == "0.0812"
    assert rows["Training time"] == "12m 34s"
    assert "Use `sks dog` in your prompt" in text


@pytest.mark.parametrize(("images", "clips", "size"), [(0, 3, "3 clips (39 frames)"),
                                                       (2, 3, "2 images, 3 clips (39 frames)")])
def test_the_dataset_size_counts_video_clips_and_their_frames(images: int, clips: int, size: str):
    text = render_model_card(facts(model_family="wan", dataset_size=images, dataset_clips=clips, dataset_frames=39))
    assert dict(re.findall(r"^\| ([^|]+?) \| (.+?) \|$", text, re.M))["Dataset size"] == size


def test_the_card_never_shows_a_secret_from_the_config():
    text = render_model_card(facts())
    assert TOKEN not in text
    assert "hub_token" not in text
    assert '"--lora_rank": 16' in text  # the rest of the config is there, as trained


def test_a_local_base_model_folder_is_not_claimed_as_a_hub_model_and_its_path_is_not_shown():
    text = render_model_card(facts(base_model="/workspace/models/tiny-sdxl",
                                   config={"--pretrained_model_name_or_path": "/workspace/models/tiny-sdxl"}))
    assert "base_model" not in ModelCard(text).data.to_dict()
    assert "`tiny-sdxl` (a local model)" in text and "| Base model | `tiny-sdxl` |" in text
    assert 'from_pretrained("<your copy of tiny-sdxl>"' in text
    assert "/workspace" not in text  # a path of the training machine says nothing to a reader


def test_a_custom_licence_has_its_name_and_link_in_the_header():
    link = "https://huggingface.co/black-forest-labs/FLUX.1-dev/blob/main/LICENSE.md"
    text = render_model_card(facts(license="other", license_name="flux-1-dev-non-commercial-license",
                                   license_link=link))
    data = ModelCard(text).data.to_dict()
    assert (data["license"], data["license_name"], data["license_link"]) == (
        "other", "flux-1-dev-non-commercial-license", link)


def test_the_card_says_which_file_is_for_what():
    text = render_model_card(facts(comfyui_file="sks-dog-lora.safetensors"))
    rows = dict(re.findall(r"^\| `([^`]+)` \| (.+?) \|$", text, re.M))
    assert "diffusers" in rows["pytorch_lora_weights.safetensors"]
    assert "ComfyUI" in rows["sks-dog-lora.safetensors"]


@pytest.mark.parametrize(("family", "node"), [("sdxl", "LoraLoader"), ("flux", "LoraLoaderModelOnly")])
def test_the_comfyui_section_names_the_node_the_folder_and_the_file(family: str, node: str):
    text = render_model_card(facts(model_family=family, comfyui_file="sks-dog-lora.safetensors"))
    section = text.split("## Use it with ComfyUI", 1)[1].split("\n## ", 1)[0]
    assert "`ComfyUI/models/loras/`" in section and f"**{node}**" in section
    workflow = json.loads(re.search(r"```json\n(.*?)```", section, re.S).group(1))
    assert workflow["2"]["class_type"] == node
    assert workflow["2"]["inputs"]["lora_name"] == "sks-dog-lora.safetensors"
    assert ("clip" in workflow["2"]["inputs"]) is (node == "LoraLoader")


def test_without_a_comfyui_file_the_card_says_why():
    text = render_model_card(facts(comfyui_file=None, comfyui_note="SimpleTuner 4.10.1 has no model family 'x'"))
    section = text.split("## Use it with ComfyUI", 1)[1].split("\n## ", 1)[0]
    assert "no ComfyUI-format file: SimpleTuner 4.10.1 has no model family 'x'" in section
    assert "ComfyUI" not in dict(re.findall(r"^\| `([^`]+)` \| (.+?) \|$", text, re.M)).get(
        "pytorch_lora_weights.safetensors", "")


def test_a_family_comfyui_loads_as_saved_gets_the_diffusers_file_in_the_loader_and_no_why_not():
    """FLUX.2: SimpleTuner saves the layout ComfyUI loads, so the card puts the diffusers file in the LoRA node."""
    note = ("not needed: ComfyUI loads this family's pytorch_lora_weights.safetensors as it is (SimpleTuner 4.10.1's "
            "Flux2 says so, and its --lora_format comfyui writes no other file)")
    text = render_model_card(facts(model_family="flux2", comfyui_file=None, comfyui_note=note))
    section = text.split("## Use it with ComfyUI", 1)[1].split("\n## ", 1)[0]
    assert "none is needed" in section and "no ComfyUI-format file:" not in section
    workflow = json.loads(re.search(r"```json\n(.*?)```", section, re.S).group(1))
    assert workflow["2"]["inputs"]["lora_name"] == "pytorch_lora_weights.safetensors"
    rows = dict(re.findall(r"^\| `([^`]+)` \| (.+?) \|$", text, re.M))
    assert "ComfyUI as it is" in rows["pytorch_lora_weights.safetensors"]


def test_a_lycoris_card_loads_it_with_the_lycoris_library_and_names_the_algorithm():
    lokr = {"algo": "lokr", "multiplier": 1.0, "linear_dim": 10000, "linear_alpha": 1, "factor": 16}
    card = render_model_card(facts(kind="lycoris", lycoris=lokr, config={"--lora_type": "lycoris",
                                                                        "--lora_rank": 16}))
    meta = ModelCard(card).data.to_dict()
    assert "lycoris" in meta["tags"] and "lora" in meta["tags"]
    assert "A LyCORIS adapter (lokr) for" in card and "| Trained | LyCORIS (lokr) |" in card
    assert "| LoRA rank |" not in card  # a LyCORIS config has no LoRA rank
    code = code_block(card)
    assert "create_lycoris_from_weights(1.0, adapter, pipeline.unet)" in code and "load_lora_weights" not in code
    assert "`lycoris_config.json`" in card and "no separate ComfyUI file" in card
    assert "LoraLoaderModelOnly" in card and "pytorch_lora_weights.safetensors" in card  # no CLIP part


def test_a_full_fine_tune_card_loads_the_model_into_the_base_pipeline_and_has_no_comfyui_file():
    card = render_model_card(facts(kind="full", full_component=("unet", "UNet2DConditionModel"),
                                   config={"--model_type": "full", "--lora_rank": 16, "--learning_rate": 1e-5}))
    meta = ModelCard(card).data.to_dict()
    assert "lora" not in meta["tags"] and "full-finetune" in meta["tags"]
    assert meta["base_model_relation"] == "finetune"
    assert "A full fine-tune of" in card and "This LoRA" not in card and "| LoRA rank |" not in card
    code = code_block(card)
    assert 'unet = UNet2DConditionModel.from_pretrained("tester/sks-dog-lora", subfolder="unet"' in code
    assert 'StableDiffusionXLPipeline.from_pretrained("stabilityai/stable-diffusion-xl-base-1.0", unet=unet' in code
    assert "Not applicable" in card and "| `unet/` |" in card


def test_a_video_sample_is_linked_in_the_body_and_kept_out_of_the_image_widget():
    clip = "samples/step-500/0.mp4"
    card = ModelCard(render_model_card(facts(model_family="wan", validation=[
        (clip, "sks walking"), ("samples/step-500/1.png", "sks sitting")])))
    assert [item["output"]["url"] for item in card.data.to_dict()["widget"]] == ["samples/step-500/1.png"]
    assert f"[`{clip}`]({clip}) (video): sks walking" in card.text
    only_video = ModelCard(render_model_card(facts(model_family="wan", validation=[(clip, "sks walking")])))
    assert "widget" not in only_video.data.to_dict() and f"({clip})" in only_video.text


def test_a_video_familys_usage_code_writes_an_mp4_and_an_i2v_one_starts_from_an_image():
    image = render_model_card(facts())
    assert ".images[0]" in image and "export_to_video" not in image
    t2v = render_model_card(facts(model_family="wan", config={"--model_flavour": "t2v-480p-1.3b-2.1"}))
    assert "frames = pipeline(" in t2v and 'export_to_video(frames, "output.mp4"' in t2v
    assert ".images[0]" not in t2v and "image=first_frame" not in t2v
    i2v = render_model_card(facts(model_family="wan", config={"--model_flavour": "i2v-480p-14b-2.1"}))
    assert "pipeline(image=first_frame, prompt=" in i2v and "load_image(" in i2v
