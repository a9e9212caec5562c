"""Tiny FLUX.1 (dev layout, guidance-distilled): CLIP (pooled) + T5 (sequence), a 1+1-block transformer.

Flavour `kontext`: the same components saved as a FluxKontextPipeline (FLUX.1 Kontext keeps FLUX.1-dev's transformer
shape; the input image's latents are packed beside the target's in the sequence), which is what SimpleTuner's
`kontext` flavour loads."""

from __future__ import annotations

from pathlib import Path

from tiny_models.parts import HIDDEN, clip_config, clip_tokenizer, flow_scheduler, flux_vae, t5_encoder


def build(out: Path, *, scratch: Path, flavour: str | None = None) -> None:
    from diffusers import FluxKontextPipeline, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    # The rope axes (4, 6, 6) sum to the 16-wide attention head.
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=HIDDEN, pooled_projection_dim=HIDDEN, guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),
    )
    t5, t5_tokens = t5_encoder(d_model=HIDDEN)
    pipeline_class = FluxKontextPipeline if flavour == "kontext" else FluxPipeline
    pipeline = pipeline_class(
        scheduler=flow_scheduler(dynamic=True), vae=flux_vae(scaling=0.3611, shift=0.1159),
        text_encoder=CLIPTextModel(clip_config()), tokenizer=clip_tokenizer(scratch),
        text_encoder_2=t5, tokenizer_2=t5_tokens, transformer=transformer,
    )
    pipeline.save_pretrained(out, safe_serialization=True)
