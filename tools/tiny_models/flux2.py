"""Tiny FLUX.2 klein (4B layout): a Qwen3 text encoder, a 1+1-block transformer without guidance embeddings, the
32-channel FLUX.2 VAE (2x2-patchified to the transformer's 128 channels)."""

from __future__ import annotations

from pathlib import Path

from tiny_models.parts import HIDDEN, flow_scheduler, qwen3_encoder

KLEIN_LAYERS = (9, 18, 27)
"""SimpleTuner stacks these hidden states of klein's Qwen3 as the prompt embedding, so the encoder needs 28 layers
(still under 1 MB at this width) and the transformer's text width is three encoder widths."""


def build(out: Path, *, scratch: Path) -> None:
    from diffusers import AutoencoderKLFlux2, Flux2KleinPipeline, Flux2Transformer2DModel

    qwen3, tokenizer = qwen3_encoder(layers=KLEIN_LAYERS[-1] + 1)
    # The rope axes (4, 4, 4, 4) sum to the 16-wide attention head.
    transformer = Flux2Transformer2DModel(
        patch_size=1, in_channels=128, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=len(KLEIN_LAYERS) * HIDDEN, timestep_guidance_channels=32,
        axes_dims_rope=(4, 4, 4, 4), guidance_embeds=False,
    )
    vae = AutoencoderKLFlux2(
        block_out_channels=(16, 16, 16, 16), layers_per_block=1, latent_channels=32, norm_num_groups=16,
        sample_size=128,
    )
    pipeline = Flux2KleinPipeline(scheduler=flow_scheduler(dynamic=True), vae=vae, text_encoder=qwen3,
                                  tokenizer=tokenizer, transformer=transformer)
    pipeline.save_pretrained(out, safe_serialization=True)
