"""Tiny Z-Image: a 2-layer Qwen3 text encoder (SimpleTuner reads its second-to-last hidden state), a 1-layer
single-stream transformer with one refiner layer each for noise and caption, the 16-channel flux-style VAE."""

from __future__ import annotations

from pathlib import Path

from tiny_models.parts import HIDDEN, flow_scheduler, flux_vae, qwen3_encoder


def build(out: Path, *, scratch: Path) -> None:
    from diffusers import ZImagePipeline, ZImageTransformer2DModel

    qwen3, tokenizer = qwen3_encoder(layers=2)
    # 2 heads of 16; the rope axes (4, 6, 6) sum to the head.
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32, n_layers=1, n_refiner_layers=1,
        n_heads=2, n_kv_heads=2, cap_feat_dim=HIDDEN, axes_dims=[4, 6, 6], axes_lens=[256, 128, 128],
    )
    pipeline = ZImagePipeline(scheduler=flow_scheduler(dynamic=False), vae=flux_vae(scaling=0.3611, shift=0.1159),
                              text_encoder=qwen3, tokenizer=tokenizer, transformer=transformer)
    pipeline.save_pretrained(out, safe_serialization=True)
