"""Build a tiny random Florence-2 captioning model offline. Runs in the trainer env, as a script:

    .venv-trainer/bin/python -P tools/build_tiny_captioner.py DIR

It imports transformers, so nothing else in the project imports it: `python -m core demo-captioner DIR` runs it as
a subprocess (see core/generation/demo.py). The model is transformers' native `Florence2ForConditionalGeneration` (no
`trust_remote_code`), the layout of florence-community/Florence-2-base shrunk to about 1 MB: a 4-stage DaViT vision
tower on 64 px images (2 x 2 patches + 1 pooled token = 5 image tokens), a 1+1-layer BART of width 32, and a small
byte-level BPE (BART's special tokens, then `<image>`) trained here with the `tokenizers` library. Random weights,
seed 0: its captions are gibberish, but they go through the real processor and `generate()`.
"""

from __future__ import annotations

import argparse
import re
import shutil
import string
import sys
from pathlib import Path

IMAGE_SIZE = 64
IMAGE_PLACEHOLDERS = (IMAGE_SIZE // 32) ** 2 + 1
"""The vision tower downsamples 32x (strides 4, 2, 2, 2); the projector adds one pooled token."""
WIDTH = 32
SPECIAL = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
"""BART's ids 0-4: bos, pad, eos, unk, mask."""
IMAGE_PLACEHOLDER = "<image>"
WORDS = ("a an the of on in with and photo picture image red green blue yellow purple orange teal pink circle square "
         "triangle plain background describe detailed what does show shown is are text paragraph locate objects "
         "region person dog cat tree sky water house car street smiling standing sitting white black").split()


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import BartTokenizer

    backend = Tokenizer(models.BPE(**{"unk_token": "<unk>"}))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [" ".join(WORDS)] * 4 + [string.ascii_letters + string.digits + string.punctuation]
    backend.train_from_iterator(corpus, trainer=trainer)
    backend.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    names = {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>", "unk_token": "<unk>",
             "pad_token": "<pad>", "mask_token": "<mask>"}
    return BartTokenizer(tokenizer_object=backend, **names, extra_special_tokens={"image_token": IMAGE_PLACEHOLDER},
                         model_max_length=1024)


def build_model(tokenizer):
    from transformers import BartConfig, Florence2Config, Florence2ForConditionalGeneration, Florence2VisionConfig

    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_PLACEHOLDER)
    text = BartConfig(vocab_size=len(tokenizer), d_model=WIDTH, encoder_layers=1, decoder_layers=1,
                      encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                      max_position_embeddings=256, bos_token_id=0, pad_token_id=1, eos_token_id=2,
                      decoder_start_token_id=2, forced_eos_token_id=2, scale_embedding=False)
    vision = Florence2VisionConfig(depths=(1, 1, 1, 1), embed_dim=(8, 16, 16, 32), num_heads=(1, 2, 2, 4),
                                   num_groups=(1, 2, 2, 4), window_size=2, projection_dim=WIDTH,
                                   drop_path_rate=0.0, max_position_embeddings=50)
    config = Florence2Config(text_config=text.to_dict(), vision_config=vision.to_dict(),
                             image_token_id=image_token_id)
    model = Florence2ForConditionalGeneration(config)
    # Captions of a few lowercase words: random weights would otherwise stop at once or pick byte pieces that
    # decode to no valid text. Only the special tokens (</s> excepted) and non-word pieces are suppressed.
    word = re.compile(r" ?[a-z]+")
    special = [index for index in range(len(tokenizer)) if index != 2
               and (index < len(SPECIAL) or not word.fullmatch(tokenizer.decode([index])))]
    model.generation_config.update(decoder_start_token_id=2, bos_token_id=0, eos_token_id=2, pad_token_id=1,
                                   min_new_tokens=3, max_new_tokens=20, num_beams=1, do_sample=False,
                                   no_repeat_ngram_size=1, suppress_tokens=special)
    return model


def build_processor(tokenizer):
    from transformers import CLIPImageProcessor, Florence2Processor

    image_processor = CLIPImageProcessor(
        do_resize=True, size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_center_crop=False,
        do_rescale=True, do_normalize=True, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
        do_convert_rgb=True)
    image_processor.image_seq_length = IMAGE_PLACEHOLDERS
    return Florence2Processor(image_processor=image_processor, tokenizer=tokenizer)


def build(out: Path) -> None:
    import torch

    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    model = build_model(tokenizer)
    processor = build_processor(tokenizer)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="build_tiny_captioner.py",
                                     description="Build a tiny random Florence-2 captioner offline.")
    parser.add_argument("dir")
    args = parser.parse_args(argv)
    out = Path(args.dir).absolute()
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # the leftovers of an interrupted build
    build(partial)
    partial.rename(out)  # a half-built model never sits where a finished one is expected
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
