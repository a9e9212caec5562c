"""Build the tiny random SDXL model (27 MB) offline. Runs in the trainer env, as a script:

    .venv-trainer/bin/python tools/build_tiny_model.py DIR

It imports diffusers and transformers, so nothing else in the project imports it: `python -m core demo-model DIR`
runs it as a subprocess (see core/demo.py). Shapes are FACTS.md section 1; random weights, seed 0.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path


def _bytes_to_unicode() -> dict[int, str]:
    """OpenAI CLIP's byte -> unicode table, so the BPE vocabulary matches the real tokenizer's."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def write_clip_tokenizer(folder: Path) -> None:
    """Rebuild CLIP's 49,408-token BPE from the merges file open_clip ships (no download)."""
    import open_clip
    from transformers import CLIPTokenizer

    merges_gz = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    merges = gzip.open(merges_gz).read().decode("utf-8").split("\n")
    merges = merges[1 : 49152 - 256 - 2 + 1]
    pairs = [tuple(merge.split()) for merge in merges]
    vocab = list(_bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab.extend("".join(pair) for pair in pairs)
    vocab.extend(["<|startoftext|>", "<|endoftext|>"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({token: index for index, token in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(pair) for pair in pairs) + "\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="<|endoftext|>")
    tokenizer.save_pretrained(folder)


def build(out: Path) -> None:
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(0)
    text_config = CLIPTextConfig(
        vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, projection_dim=32, bos_token_id=49406, eos_token_id=49407,
        pad_token_id=49407, hidden_act="gelu",
    )
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
    tokenizer_dir = out / "_tokenizer"
    write_clip_tokenizer(tokenizer_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    pipeline = StableDiffusionXLPipeline(
        vae=vae, text_encoder=CLIPTextModel(text_config), text_encoder_2=CLIPTextModelWithProjection(text_config),
        tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet, scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
    )
    pipeline.save_pretrained(out, safe_serialization=True)
    for path in sorted(tokenizer_dir.iterdir()):
        path.unlink()
    tokenizer_dir.rmdir()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: build_tiny_model.py DIR", file=sys.stderr)
        return 2
    out = Path(argv[0]).absolute()
    partial = out.with_name(out.name + ".partial")
    build(partial)
    partial.rename(out)  # a half-built model never sits where a finished one is expected
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
