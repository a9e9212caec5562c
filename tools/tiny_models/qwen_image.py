"""Tiny Qwen-Image (v1.0 layout): a 2-layer Qwen2.5-VL text encoder, a 2-layer MMDiT, the causal 3D VAE."""

from __future__ import annotations

from pathlib import Path

from tiny_models.parts import HIDDEN, causal_vae, flow_scheduler
from tiny_models.tokenizers_offline import qwen2_tokenizer


def _text_encoder(tokenizer):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    # mrope_section (1, 1, 2) splits half of the 8-wide head (32 / 4 heads) over time, height, width.
    text = dict(vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [1, 1, 2]},
                bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
                eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
                pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"))
    vision = dict(depth=1, hidden_size=HIDDEN, intermediate_size=64, num_heads=4, out_hidden_size=HIDDEN,
                  fullatt_block_indexes=[0])
    return Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids))


def build(out: Path, *, scratch: Path) -> None:
    from diffusers import QwenImagePipeline, QwenImageTransformer2DModel

    tokenizer = qwen2_tokenizer()
    transformer = QwenImageTransformer2DModel(
        patch_size=2, in_channels=64, out_channels=16, num_layers=2, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=HIDDEN, axes_dims_rope=(4, 6, 6),
    )
    pipeline = QwenImagePipeline(scheduler=flow_scheduler(dynamic=True), vae=causal_vae(qwen=True),
                                 text_encoder=_text_encoder(tokenizer), tokenizer=tokenizer, transformer=transformer)
    pipeline.save_pretrained(out, safe_serialization=True)
