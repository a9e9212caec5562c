"""LTX-Video and LTX-2, the video families after Wan: their frame rule and defaults, each tiny model read and planned
as SimpleTuner's `ltxvideo` / `ltxvideo2`, one real LoRA of each trained from two synthetic clips through
`python -m core run` (LTX-Video through the fix SimpleTuner 4.10.1 needs: tools/simpletuner_train.py), and an .mp4
preview rendered with each LoRA in the playground."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.adapters import GpuFacts
from core.errors import SpecError
from core.generation.playground import GenerateRequest, Playground
from core.spec import parse_job
from core.training.config import gpu_plan
from core.training.video import video_settings
from tests.support.clips import write_clip
from tests.support.comfyui_files import assert_generic_comfyui_file, tensors
from tests.test_demo_families import core_cli
from tests.test_playground import first_frame, mp4_frames

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
"""SimpleTuner's default LoRA target for both: the attention projections of every block (DEFAULT_LORA_TARGET)."""
FAMILIES = ("ltxvideo", "ltxvideo2")


def ltx_job(model: Path | str = "Lightricks/LTX-Video-0.9.5", dataset: Path | str = "/unused", *,
            video: dict | None = None, config: dict | None = None) -> dict:
    shorthand = {"minimum_image_size": 32, **({"video": video} if video is not None else {})}
    return {"dataset": {"path": str(dataset)},
            "config": {"model_name": str(model), "resolution": 64, "max_train_steps": 1, **(config or {})},
            "dataloader": shorthand, "trigger_word": "sks"}


# -- the family's rules ---------------------------------------------------------------------------------------------

def test_ltx_video_takes_8k_plus_1_frames_its_recipes_49_and_trains_image_to_video_by_default():
    settings = video_settings(parse_job(ltx_job()))
    assert parse_job(ltx_job()).model_family == "ltxvideo"
    assert settings.block() == {"num_frames": 49, "min_frames": 49, "max_frames": 5000, "is_i2v": True}
    with pytest.raises(SpecError) as refused:
        video_settings(parse_job(ltx_job(video={"num_frames": 13})))  # 4k+1 (Wan's VAE) is not LTX's 8k+1
    assert refused.value.field == "dataloader.video.num_frames"
    assert "ltxvideo trains on 8k+1 frames" in refused.value.message and "9 or 17" in refused.value.message


@pytest.mark.trainer_env
def test_the_tiny_ltx_is_read_as_ltxvideo_and_planned_from_simpletuners_ltx_recipe(tiny_family_model):
    """No model_family: the folder's LTXPipeline says it. On a 24 GB card the plan is the 0.9.5 example's settings;
    SimpleTuner publishes no memory figure for LTX-Video, so the card's size is not checked and the plan says so."""
    model = tiny_family_model("ltxvideo")
    index = json.loads((model / "model_index.json").read_text())
    assert index["_class_name"] == "LTXPipeline" and index["vae"][1] == "AutoencoderKLLTXVideo"
    spec = parse_job(ltx_job(model, video={"num_frames": 9}))
    assert spec.model_family == "ltxvideo"
    plan = gpu_plan(spec, device="cuda", gpu=GpuFacts(count=1, memory_gb=24, source="GPU_MEMORY_GB"))
    assert plan is not None and plan.recipe == "ltxvideo-0.9.5-t2v.peft-lora" and plan.fits is None
    assert plan.settings["validation_num_video_frames"] == 49 and "no published figure" in plan.vram_source


@pytest.mark.trainer_env
def test_the_tiny_ltx2_is_read_as_ltxvideo2_with_its_audio_parts_and_planned_from_its_own_size(tiny_family_model):
    """LTX-2's pipeline holds Gemma 3, the text connectors, the audio VAE and the vocoder beside the video parts.
    Its plan comes from the folder's safetensors headers and LTX-2's calibration, with the frames the job asks."""
    model = tiny_family_model("ltxvideo2")
    index = json.loads((model / "model_index.json").read_text())
    assert index["_class_name"] == "LTX2Pipeline" and index["text_encoder"][1] == "Gemma3ForConditionalGeneration"
    assert {"audio_vae", "vocoder", "connectors"} <= {name for name, value in index.items()
                                                     if isinstance(value, list) and value[0]}
    spec = parse_job(ltx_job(model, video={"num_frames": 9}))
    assert spec.model_family == "ltxvideo2"
    plan = gpu_plan(spec, device="cuda", gpu=GpuFacts(count=1, memory_gb=24, source="GPU_MEMORY_GB"),
                    system_memory_gb=64)
    assert plan is not None and plan.fits is True and plan.frames == 9
    assert f"safetensors headers of {model}" in plan.vram_source
    size = sum(path.stat().st_size for path in model.rglob("*") if path.is_file())
    assert size < 30 * 2**20


# -- one real training, shared --------------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=FAMILIES)
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tiny_family_model) -> dict:
    """One step from two clips (9 and 17 frames; samples are their first 9). The learning rate is high so the
    single step moves the LoRA enough to change a render. The family comes from the model's folder."""
    family = request.param
    root = tmp_path_factory.mktemp(family)
    model = tiny_family_model(family)
    for index, frames in enumerate((9, 17)):
        write_clip(root / "data" / f"clip{index}.mp4", frames=frames, caption=f"a white bar moving, take {index}")
    job = ltx_job(model, root / "data", video={"num_frames": 9},
                  config={"checkpointing_steps": 100, "lora_rank": 2, "seed": 42, "learning_rate": 0.05})
    (root / "job.json").write_text(json.dumps(job))
    done = core_cli("run", str(root / "job.json"), "--workdir", str(root / "work"))
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    return {"family": family, "model": model, "work": root / "work", "result": json.loads(done.stdout)}


@pytest.mark.training
def test_an_ltx_lora_trains_from_two_clips_and_holds_the_transformers_attention(trained: dict):
    """LTX-2's LoRA holds its audio attention too (the audio self and cross attention, audio-to-video), as
    SimpleTuner targets them, but not video-to-audio (its LTX-2 class leaves that out); the clips have no sound,
    so SimpleTuner masks the audio loss."""
    family, result, work, model = trained["family"], trained["result"], trained["work"], trained["model"]
    assert result["status"] == "succeeded" and result["metrics"]["steps"] == 1
    assert result["preflight"]["clips"]["samples"] == 2 and result["preflight"]["clips"]["frame_buckets"] == {"1@9": 2}
    log = (work / "training.log").read_text()
    assert "Total number of videos: 2" in log  # SimpleTuner read the clips
    lora = work / "output" / "pytorch_lora_weights.safetensors"
    modules = {key.removeprefix("transformer.").rsplit(".lora_", 1)[0] for key in tensors(lora)}
    layers = {name.removesuffix(".weight") for name in tensors(model / "transformer" /
                                                               "diffusion_pytorch_model.safetensors")
              if name.endswith(".weight")}
    attention = {name for name in layers if name.startswith("transformer_blocks.") and name.endswith(LORA_TARGETS)
                 and ".video_to_audio_attn." not in name}
    kinds = {"ltxvideo": 2, "ltxvideo2": 5}[family]  # attn1, attn2 (+ audio_attn1, audio_attn2, audio_to_video_attn)
    assert modules == attention and len(modules) == 2 * kinds * 4  # 2 blocks x the kinds x q, k, v, out
    if family == "ltxvideo2":
        assert "no audio latents for this batch" in log
    comfyui = Path(result["comfyui_checkpoint"])
    assert comfyui.name == f"sks-{family}-lora.safetensors"
    assert_generic_comfyui_file(lora, comfyui, rank=2)


@pytest.mark.training
def test_the_ltx_lora_renders_an_mp4_preview_in_the_playground(trained: dict, settings, tmp_path: Path):
    """At the same seed: strength 0 is the base model's clip, strength 1 another one (the LoRA reached the
    transformer)."""
    model, lora = trained["model"], trained["work"] / "output" / "pytorch_lora_weights.safetensors"
    request = GenerateRequest(prompt="sks a white bar moving", steps=2, width=64, height=64, frames=9, seed=3)
    playground = Playground(settings=settings)
    try:
        base = playground.generate(request, model=str(model), lora=None, out_dir=tmp_path, name="base")
        off = playground.generate(request.model_copy(update={"strength": 0.0}), model=str(model), lora=lora,
                                  out_dir=tmp_path, name="off")
        styled = playground.generate(request, model=str(model), lora=lora, out_dir=tmp_path, name="lora")
    finally:
        playground.stop()
    [video] = styled.videos
    assert video.suffix == ".mp4" and mp4_frames(video.read_bytes()) == 9
    frames = {name: np.array(first_frame(r.videos[0].read_bytes()), np.int16)
              for name, r in (("base", base), ("off", off), ("lora", styled))}
    assert np.abs(frames["off"] - frames["base"]).max() <= 2
    assert np.abs(frames["lora"] - frames["base"]).mean() > 2
