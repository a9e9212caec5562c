"""Tiny LTX-Video (0.9.5's layout): T5 + a 2-layer LTXVideoTransformer3DModel + the 128-channel causal video VAE.

The VAE keeps LTX-Video 0.9.5's down blocks and strides (4x4 patches, then spatial, temporal and two spatiotemporal
halvings: 32x in space, 8x in time, so clips of 8k+1 frames and sizes in 32s) and its timestep-conditioned decoder;
only the widths and depths shrink. SimpleTuner refuses latents that are not 128 channels wide, so they stay 128.
"""

from __future__ import annotations

from pathlib import Path

from tiny_models.parts import HIDDEN, t5_encoder

HEADS, HEAD_DIM = 2, 12
"""The 24-wide attention splits into the rope's three axes (time, height, width) evenly."""


def vae():
    from diffusers import AutoencoderKLLTXVideo

    return AutoencoderKLLTXVideo(
        latent_channels=128, block_out_channels=(8, 8, 16, 16, 32), down_block_types=("LTXVideo095DownBlock3D",) * 4,
        decoder_block_out_channels=(8, 16, 32), layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1), spatio_temporal_scaling=(True, True, True, True),
        decoder_spatio_temporal_scaling=(True, True, True), decoder_inject_noise=(False, False, False, False),
        downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
        upsample_residual=(True, True, True), upsample_factor=(2, 2, 2), timestep_conditioning=True,
        patch_size=4, patch_size_t=1, scaling_factor=1.0, encoder_causal=True, decoder_causal=False,
        spatial_compression_ratio=32, temporal_compression_ratio=8,
    )


def scheduler():
    """LTX-Video 0.9.5's flow schedule: shifted by the latent sequence length, ending at 0.1."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05,
                                           base_image_seq_len=1024, max_image_seq_len=4096, shift_terminal=0.1)


def build(out: Path, *, scratch: Path) -> None:
    from diffusers import LTXPipeline, LTXVideoTransformer3DModel

    transformer = LTXVideoTransformer3DModel(
        in_channels=128, out_channels=128, patch_size=1, patch_size_t=1, num_attention_heads=HEADS,
        attention_head_dim=HEAD_DIM, cross_attention_dim=HEADS * HEAD_DIM, num_layers=2, caption_channels=HIDDEN,
    )
    t5, tokens = t5_encoder(d_model=HIDDEN)
    pipeline = LTXPipeline(scheduler=scheduler(), vae=vae(), text_encoder=t5, tokenizer=tokens,
                           transformer=transformer)
    pipeline.save_pretrained(out, safe_serialization=True)
