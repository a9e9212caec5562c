"""Tiny Wan: UMT5 + a 2-layer 3D transformer + the causal 3D VAE; it trains on still images.

Flavours: "t2v" (Wan 2.1 text-to-video, the default); "i2v" (Wan 2.2 I2V's layout: WanImageToVideoPipeline, no CLIP
image encoder, a transformer that takes the noise, the first-frame mask and the image's latents, 16 + 4 + 16
channels); "ti2v" (Wan 2.2 TI2V's switch: WanPipeline with `expand_timesteps`, text or an image as the first latent
frame).
"""

from __future__ import annotations

from pathlib import Path

from tiny_models.parts import HIDDEN, causal_vae, t5_encoder

FLAVOURS = ("t2v", "i2v", "ti2v")


def build(out: Path, *, scratch: Path, flavour: str = "t2v") -> None:
    from diffusers import UniPCMultistepScheduler, WanImageToVideoPipeline, WanPipeline, WanTransformer3DModel

    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
        in_channels=36 if flavour == "i2v" else 16, out_channels=16,
        text_dim=HIDDEN, freq_dim=32, ffn_dim=64, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    )
    umt5, tokens = t5_encoder(d_model=HIDDEN, umt5=True)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    parts = {"tokenizer": tokens, "text_encoder": umt5, "vae": causal_vae(), "scheduler": scheduler,
             "transformer": transformer}
    if flavour == "i2v":
        pipeline = WanImageToVideoPipeline(**parts)
    else:
        pipeline = WanPipeline(**parts, expand_timesteps=flavour == "ti2v")
    pipeline.save_pretrained(out, safe_serialization=True)
