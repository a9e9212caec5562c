"""Tiny Wan 2.1 text-to-video: UMT5 + a 2-layer 3D transformer + the causal 3D VAE; it trains on still images."""

from __future__ import annotations

from pathlib import Path

from tiny_models.parts import HIDDEN, causal_vae, t5_encoder


def build(out: Path, *, scratch: Path) -> None:
    from diffusers import UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel

    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=HIDDEN, freq_dim=32, ffn_dim=64, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    )
    umt5, tokens = t5_encoder(d_model=HIDDEN, umt5=True)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    pipeline = WanPipeline(tokenizer=tokens, text_encoder=umt5, vae=causal_vae(), scheduler=scheduler,
                           transformer=transformer)
    pipeline.save_pretrained(out, safe_serialization=True)
