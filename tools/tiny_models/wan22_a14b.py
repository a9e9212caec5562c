"""Tiny Wan 2.2 image-to-video A14B: two experts (`transformer`, `transformer_2`) switched at `boundary_ratio`, UMT5,
the causal 3D VAE, no image encoder (2.2 conditions on the first frame's latents: 16 noise + 16 image + 4 mask
input channels). The experts differ in depth (1 and 2 layers), so a LoRA's keys tell which one it was trained on."""

from __future__ import annotations

from pathlib import Path

from tiny_models.parts import HIDDEN, causal_vae, t5_encoder

BOUNDARY_RATIO = 0.9
"""Wan 2.2 I2V A14B's own (and SimpleTuner's i2v-14b-2.2 flavours')."""


def expert(*, layers: int):
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=36, out_channels=16,
        text_dim=HIDDEN, freq_dim=32, ffn_dim=64, num_layers=layers, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    )


def build(out: Path, *, scratch: Path) -> None:
    from diffusers import UniPCMultistepScheduler, WanImageToVideoPipeline

    umt5, tokens = t5_encoder(d_model=HIDDEN, umt5=True)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    pipeline = WanImageToVideoPipeline(tokenizer=tokens, text_encoder=umt5, vae=causal_vae(), scheduler=scheduler,
                                       transformer=expert(layers=1), transformer_2=expert(layers=2),
                                       boundary_ratio=BOUNDARY_RATIO)
    pipeline.save_pretrained(out, safe_serialization=True)
