"""Tiny SD3.5 (medium layout): two projected CLIP encoders + T5, a 2-layer MMDiT with one dual-attention layer."""

from __future__ import annotations

from pathlib import Path

from tiny_models.parts import HIDDEN, clip_config, clip_tokenizer, flow_scheduler, flux_vae, t5_encoder

T5_WIDTH = 64
"""SimpleTuner pads the two CLIP embeddings (32 + 32) up to T5's width, so T5 is as wide as both together."""


def build(out: Path, *, scratch: Path) -> None:
    from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    transformer = SD3Transformer2DModel(
        sample_size=16, patch_size=2, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=8,
        num_attention_heads=4, joint_attention_dim=T5_WIDTH, caption_projection_dim=HIDDEN,
        pooled_projection_dim=2 * HIDDEN, pos_embed_max_size=32, dual_attention_layers=(0,), qk_norm="rms_norm",
    )
    t5, t5_tokens = t5_encoder(d_model=T5_WIDTH)
    tokenizer = clip_tokenizer(scratch)
    pipeline = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=flow_scheduler(dynamic=False), vae=flux_vae(scaling=1.5305, shift=0.0609),
        text_encoder=CLIPTextModelWithProjection(clip_config()), tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(clip_config()), tokenizer_2=tokenizer,
        text_encoder_3=t5, tokenizer_3=t5_tokens,
    )
    pipeline.save_pretrained(out, safe_serialization=True)
