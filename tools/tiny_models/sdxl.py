"""The tiny SDXL model (27 MB): two CLIP encoders, a 2-block UNet, a 4-channel VAE."""

from __future__ import annotations

from pathlib import Path

from tiny_models.parts import clip_config, clip_tokenizer


def build(out: Path, *, scratch: Path) -> None:
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    # 80 = 32 pooled + 6 time ids x 8; 64 = the two encoders' 32 + 32.
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=80, cross_attention_dim=64, norm_num_groups=32,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(16, 16, 16, 16), layers_per_block=1,
        latent_channels=4, norm_num_groups=16, sample_size=128, scaling_factor=0.13025,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        steps_offset=1, timestep_spacing="leading", prediction_type="epsilon",
    )
    tokenizer = clip_tokenizer(scratch)
    pipeline = StableDiffusionXLPipeline(
        vae=vae, text_encoder=CLIPTextModel(clip_config()), text_encoder_2=CLIPTextModelWithProjection(clip_config()),
        tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet, scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
    )
    pipeline.save_pretrained(out, safe_serialization=True)
