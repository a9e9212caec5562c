"""Shared components: tiny CLIP, T5 and Qwen3 encoders, the 16-channel flux-style VAE, flow schedulers."""

from __future__ import annotations

from pathlib import Path

from tiny_models.tokenizers_offline import qwen2_tokenizer, t5_tokenizer, write_clip_tokenizer

HIDDEN = 32


def clip_config(*, hidden: int = HIDDEN):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=49408, hidden_size=hidden, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, projection_dim=hidden, bos_token_id=49406, eos_token_id=49407,
        pad_token_id=49407, hidden_act="gelu",
    )


def clip_tokenizer(scratch: Path):
    from transformers import CLIPTokenizer

    write_clip_tokenizer(scratch)
    return CLIPTokenizer.from_pretrained(scratch)


def t5_encoder(*, d_model: int, umt5: bool = False):
    """A 2-layer T5 (or UMT5) encoder with its tokenizer; the model's vocabulary is the tokenizer's size."""
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    tokenizer = t5_tokenizer()
    sizes = dict(vocab_size=len(tokenizer), d_model=d_model, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                 feed_forward_proj="gated-gelu", decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    if umt5:
        return UMT5EncoderModel(UMT5Config(**sizes)), tokenizer
    return T5EncoderModel(T5Config(**sizes)), tokenizer


def flux_vae(*, scaling: float, shift: float):
    """4 blocks: SimpleTuner assumes the 8x downsampling of the real 16-channel VAE."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(16, 16, 16, 16), layers_per_block=1,
        latent_channels=16, norm_num_groups=16, sample_size=128, scaling_factor=scaling, shift_factor=shift,
        use_quant_conv=False, use_post_quant_conv=False,
    )


def flow_scheduler(*, dynamic: bool):
    from diffusers import FlowMatchEulerDiscreteScheduler

    if dynamic:
        return FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                               base_image_seq_len=256, max_image_seq_len=4096)
    return FlowMatchEulerDiscreteScheduler(shift=3.0)


def causal_vae(*, qwen: bool = False):
    """Wan's causal 3D VAE layout (8x spatial, 16 latent channels); Qwen-Image has its own class of the same shape."""
    from diffusers import AutoencoderKLQwenImage, AutoencoderKLWan

    vae_class = AutoencoderKLQwenImage if qwen else AutoencoderKLWan
    return vae_class(base_dim=16, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1,
                     temperal_downsample=[False, True, True])


QWEN3_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)
"""Qwen3's chat layout, reduced to what SimpleTuner's prompt encoding uses (roles, the generation prompt, the empty
thinking block of enable_thinking=False)."""


def qwen3_encoder(*, layers: int):
    """A Qwen3 causal LM (its hidden states are the prompt embedding) with the tiny Qwen2 BPE and a chat template."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tokenizer = qwen2_tokenizer()
    tokenizer.chat_template = QWEN3_CHAT_TEMPLATE
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=1024,
                         bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
                         eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
                         pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"), tie_word_embeddings=True)
    return Qwen3ForCausalLM(config), tokenizer
