"""Tiny Chroma: FLUX's layout without CLIP (T5 only) and with a small modulation approximator."""

from __future__ import annotations

from pathlib import Path

from tiny_models.parts import HIDDEN, flow_scheduler, flux_vae, t5_encoder


def build(out: Path, *, scratch: Path) -> None:
    from diffusers import ChromaPipeline, ChromaTransformer2DModel

    transformer = ChromaTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=HIDDEN, axes_dims_rope=(4, 6, 6),
        approximator_num_channels=16, approximator_hidden_dim=HIDDEN, approximator_layers=1,
    )
    t5, t5_tokens = t5_encoder(d_model=HIDDEN)
    pipeline = ChromaPipeline(scheduler=flow_scheduler(dynamic=True), vae=flux_vae(scaling=0.3611, shift=0.1159),
                              text_encoder=t5, tokenizer=t5_tokens, transformer=transformer)
    pipeline.save_pretrained(out, safe_serialization=True)
