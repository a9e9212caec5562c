"""Tokenizers built without a download: CLIP's real BPE, a tiny T5/UMT5 Unigram, tiny Qwen2 and Gemma BPEs."""

from __future__ import annotations

import gzip
import json
import string
from pathlib import Path

CLIP_MAX_LENGTH = 77
"""Set explicitly: left unset it is 1e30 and diffusers' FLUX pipeline overflows converting it to an int."""
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>",
]
_WORDS = ("a an the of on in with and photo picture image red green blue yellow purple orange teal pink circle "
          "square triangle plain background sks describe detailed colour color shape text style user assistant "
          "system").split()


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
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="<|endoftext|>",
                              model_max_length=CLIP_MAX_LENGTH)
    tokenizer.save_pretrained(folder)


def t5_tokenizer(*, max_length: int = 512):
    """A small Unigram T5 tokenizer (pad 0, </s> 1, unk 2, then pieces, then 100 <extra_id_N>)."""
    from transformers import T5TokenizerFast

    pieces = ["▁" + word for word in _WORDS] + ["▁"] + list(string.ascii_letters + string.digits + string.punctuation)
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(p, -float(i + 1)) for i, p in enumerate(pieces)]
    return T5TokenizerFast(vocab=vocab, extra_ids=100, model_max_length=max_length)


def qwen2_tokenizer():
    """A small byte-level BPE trained here with Qwen2's pre-tokenizer, plus Qwen's special tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    pattern = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
               r"|\s+(?!\S)|\s+")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=QWEN_SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [" ".join(_WORDS)] * 4 + [string.ascii_letters + string.digits + string.punctuation]
    backend.train_from_iterator(corpus, trainer=trainer)
    return Qwen2TokenizerFast(tokenizer_object=backend, unk_token=None, bos_token=None, eos_token="<|im_end|>",
                              pad_token="<|endoftext|>", model_max_length=32768)


GEMMA_SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
                        "<end_of_image>", "<image_soft_token>"]
"""Gemma 3's special tokens the text encoder's config names (pad 0, eos 1, bos 2, unk 3, the image markers)."""


def gemma_tokenizer(*, max_length: int = 1024):
    """A small SentencePiece-style BPE (▁ for spaces) trained here, with Gemma's special tokens and its <bos> first."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import GemmaTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=GEMMA_SPECIAL_TOKENS)
    corpus = [" ".join(_WORDS)] * 4 + [string.ascii_letters + string.digits + string.punctuation]
    backend.train_from_iterator(corpus, trainer=trainer)
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", backend.token_to_id("<bos>"))])
    return GemmaTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                              unk_token="<unk>", model_max_length=max_length, padding_side="left")
