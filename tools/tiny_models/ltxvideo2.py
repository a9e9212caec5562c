"""Tiny LTX-2: Gemma 3 (2 layers, a 1-layer SigLIP vision tower) + the text connectors + a 2-layer audio-video
transformer + the 128-channel video VAE + the audio VAE and vocoder.

What ties the shapes together (as in LTX-2 itself):
- the connectors take every Gemma hidden state stacked (embeddings + 2 layers: `text_proj_in_factor` 3 x 32) and
  give the transformer 32-wide captions (`caption_channels`);
- the video VAE keeps LTX-2's down blocks and strides (32x in space, 8x in time: clips of 8k+1 frames, sizes in 32s;
  its compression ratios are written out, else diffusers derives 64 from the four spatial stages);
- the audio VAE packs its 4 latent channels x 4 mel bands (16 mel bins / 4) into the transformer's 16 audio
  channels, which is also the width its latent statistics have (`base_channels`); the vocoder reads the decoded
  2 channels x 16 mel bins and upsamples 240x (100 mel frames a second to 24 kHz), as LTX-2's does.
"""

from __future__ import annotations

from pathlib import Path

from tiny_models.tokenizers_offline import gemma_tokenizer

HIDDEN = 32
GEMMA_LAYERS = 2
MEL_BINS, AUDIO_LATENT_CHANNELS = 16, 4
AUDIO_CHANNELS = AUDIO_LATENT_CHANNELS * MEL_BINS // 4


def gemma(tokenizer):
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

    text = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=64,
                            num_hidden_layers=GEMMA_LAYERS, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                            max_position_embeddings=2048, sliding_window=64, pad_token_id=tokenizer.pad_token_id,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    vision = SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                image_size=28, patch_size=14)
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=1,
                          boi_token_index=tokenizer.convert_tokens_to_ids("<start_of_image>"),
                          eoi_token_index=tokenizer.convert_tokens_to_ids("<end_of_image>"),
                          image_token_index=tokenizer.convert_tokens_to_ids("<image_soft_token>"))
    return Gemma3ForConditionalGeneration(config)


def build(out: Path, *, scratch: Path) -> None:
    from diffusers import (
        AutoencoderKLLTX2Audio,
        AutoencoderKLLTX2Video,
        FlowMatchEulerDiscreteScheduler,
        LTX2Pipeline,
        LTX2VideoTransformer3DModel,
    )
    from diffusers.pipelines.ltx2.connectors import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    tokenizer = gemma_tokenizer()
    connectors = LTX2TextConnectors(
        caption_channels=HIDDEN, text_proj_in_factor=GEMMA_LAYERS + 1, video_connector_num_attention_heads=2,
        video_connector_attention_head_dim=16, video_connector_num_layers=1, video_connector_num_learnable_registers=8,
        audio_connector_num_attention_heads=2, audio_connector_attention_head_dim=16, audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=8, video_hidden_dim=HIDDEN, audio_hidden_dim=16,
    )
    transformer = LTX2VideoTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, cross_attention_dim=HIDDEN, caption_channels=HIDDEN,
        audio_num_attention_heads=2, audio_attention_head_dim=8, audio_cross_attention_dim=16,
        audio_in_channels=AUDIO_CHANNELS, audio_out_channels=AUDIO_CHANNELS, num_layers=2,
    )
    vae = AutoencoderKLLTX2Video(
        block_out_channels=(8, 16, 32, 32), decoder_block_out_channels=(8, 16, 32), layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1), spatial_compression_ratio=32, temporal_compression_ratio=8,
    )
    audio_vae = AutoencoderKLLTX2Audio(base_channels=AUDIO_CHANNELS, ch_mult=(1, 2, 4), num_res_blocks=1,
                                       latent_channels=AUDIO_LATENT_CHANNELS, mel_bins=MEL_BINS)
    vocoder = LTX2Vocoder(in_channels=2 * MEL_BINS, hidden_channels=32)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05,
                                                base_image_seq_len=1024, max_image_seq_len=4096, shift_terminal=0.1)
    pipeline = LTX2Pipeline(scheduler=scheduler, vae=vae, audio_vae=audio_vae, text_encoder=gemma(tokenizer),
                            tokenizer=tokenizer, connectors=connectors, transformer=transformer, vocoder=vocoder)
    pipeline.save_pretrained(out, safe_serialization=True)
