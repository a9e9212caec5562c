"""Caption images and video clips with a vision-language model. Runs in the trainer env, as a script
(core/generation/captioning.py starts it):

    .venv-trainer/bin/python -P tools/caption_images.py REQUEST.json

REQUEST.json: {"model": a local folder or Hub id, "images": [paths], "style": "detailed"|"short"|"tags",
"max_length": new tokens, "batch_size": N, "device": "cpu"|"cuda"}. A path with a clip's suffix (.mp4, .mov, .m4v,
.webm, .mkv) is a clip: CLIP_FRAMES frames sampled evenly from first to last are decoded with PyAV, each is captioned
as an image, and the clip's caption is the one most of its frames got (all different: the middle frame's); nothing
is added to it. It writes JSON lines on stdout, flushed one by one so the caller can show progress and stop it at
any time (it kills the whole process group):

    {"event": "loaded", "model_type": "florence2", "device": "cpu", "load_s": 1.2}
    {"event": "caption", "index": 0, "caption": "..."}         one per image or clip, in order
    {"event": "done", "elapsed_s": 3.4}
    {"event": "error", "message": "..."}                         then exit 1

Models load through transformers' native classes (AutoProcessor, AutoModelForImageTextToText), never with
`trust_remote_code`: Florence-2 with its task tokens, every other model (Qwen2.5-VL, LLaVA-style JoyCaption,
SmolVLM, ...) with its chat template and a plain instruction.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

FLORENCE_TASKS = {"detailed": "<MORE_DETAILED_CAPTION>", "short": "<CAPTION>", "tags": "<CAPTION>"}
INSTRUCTIONS = {
    "detailed": "Write a detailed description of this image in one paragraph, for training an image model. "
                "Describe the subject, setting, colours, lighting and style. Do not start with 'This image'.",
    "short": "Write a one-sentence caption of this image.",
    "tags": "List 10 to 25 comma-separated tags that describe this image (subject, clothing, setting, style), "
            "most important first, nothing else.",
}
# The demuxer per clip suffix, as staging reads clips (core/dataset/clips.py): chosen by the suffix, never guessed from
# the content (a guessed one could be HLS or a concat list, which open other files). This script runs with -P, apart
# from the repo's packages, hence the copy.
DEMUXERS = {".mp4": "mov", ".mov": "mov", ".m4v": "mov", ".webm": "matroska", ".mkv": "matroska"}
CLIP_FRAMES = 3
"""Frames captioned per clip: first, middle, last. Each costs one image's captioning."""
_FILLER = re.compile(r"^(?:a|an|the|this|there|is|are|image|picture|photo|shows|of)\s+", re.IGNORECASE)


def emit(**event) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def as_tags(caption: str) -> str:
    """A caption -> comma-separated phrases, for models without a tag task (Florence-2)."""
    phrases = re.split(r"[,.;:]|\s+(?:and|with|in|on|of|at|while)\s+", caption)
    tags = []
    for phrase in phrases:
        phrase = phrase.strip().lower()
        while _FILLER.match(phrase):
            phrase = _FILLER.sub("", phrase, count=1)
        if phrase and phrase not in tags:
            tags.append(phrase)
    return ", ".join(tags)


class Captioner:
    def __init__(self, model: str, *, device: str):
        import torch
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        self.torch = torch
        self.device = device
        self.model_type = AutoConfig.from_pretrained(model).model_type
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        self.processor = AutoProcessor.from_pretrained(model)
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is not None and self.model_type != "florence2":
            tokenizer.padding_side = "left"  # decoder-only models continue the prompt: pad on the left to batch
        self.model = AutoModelForImageTextToText.from_pretrained(model, dtype=dtype).to(device).eval()

    def caption(self, images: list, *, style: str, max_length: int) -> list[str]:
        with self.torch.inference_mode():
            if self.model_type == "florence2":
                texts = self._florence(images, task=FLORENCE_TASKS[style], max_length=max_length)
            else:
                texts = self._chat(images, instruction=INSTRUCTIONS[style], max_length=max_length)
        texts = [" ".join(text.split()) for text in texts]
        return [as_tags(text) for text in texts] if style == "tags" and self.model_type == "florence2" else texts

    def _florence(self, images: list, *, task: str, max_length: int) -> list[str]:
        inputs = self.processor(text=[task] * len(images), images=images, return_tensors="pt", padding=True)
        inputs = inputs.to(self.device, self.model.dtype)
        out = self.model.generate(**inputs, max_new_tokens=max_length)
        return self.processor.batch_decode(out, skip_special_tokens=True)

    def _chat(self, images: list, *, instruction: str, max_length: int) -> list[str]:
        messages = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]
                    for _ in images]
        prompts = [self.processor.apply_chat_template(m, add_generation_prompt=True, tokenize=False)
                   for m in messages]
        inputs = self.processor(text=prompts, images=[[image] for image in images], return_tensors="pt",
                                padding=True).to(self.device)
        inputs = {k: v.to(self.model.dtype) if v.is_floating_point() else v for k, v in inputs.items()}
        out = self.model.generate(**inputs, max_new_tokens=max_length, do_sample=False)
        new_tokens = out[:, inputs["input_ids"].shape[1]:]
        return self.processor.batch_decode(new_tokens, skip_special_tokens=True)


def clip_frames(path: str, *, count: int = CLIP_FRAMES) -> list:
    """`count` RGB frames spread evenly from the clip's first to its last (fewer when it has fewer frames)."""
    import av

    with av.open(path, format=DEMUXERS[Path(path).suffix.lower()]) as container:
        stream = container.streams.video[0]
        total = sum(1 for packet in container.demux(stream) if packet.size)  # one packet per frame, no decoding
        container.seek(0, stream=stream)
        wanted = sorted({round(i * (total - 1) / max(count - 1, 1)) for i in range(count)}) if total else []
        frames, last = [], None
        for index, frame in enumerate(container.decode(stream)):
            last = frame
            if index in wanted:
                frames.append(frame.to_image().convert("RGB"))
                if len(frames) == len(wanted):
                    break
    if len(frames) < len(wanted) and last is not None:
        frames.append(last.to_image().convert("RGB"))  # fewer frames decoded than packets: the last one still counts
    if not frames:
        raise ValueError(f"no frame decoded from {Path(path).name}")
    return frames


def merge_captions(texts: list[str]) -> str:
    """A clip's caption from its frames': the one most frames share; when all differ, the middle frame's."""
    text, votes = Counter(texts).most_common(1)[0]
    return text if votes > 1 else texts[len(texts) // 2]


def load_frames(path: str) -> list:
    """An image as one frame; a clip as its sampled frames."""
    if Path(path).suffix.lower() in DEMUXERS:
        return clip_frames(path)
    from PIL import Image

    with Image.open(path) as image:
        return [image.convert("RGB")]


def run(request: dict) -> None:
    started = time.monotonic()
    captioner = Captioner(request["model"], device=request.get("device") or "cpu")
    emit(event="loaded", model_type=captioner.model_type, device=captioner.device,
         load_s=round(time.monotonic() - started, 3))
    paths, batch = request["images"], max(1, int(request.get("batch_size") or 1))
    style, max_length = request.get("style") or "detailed", int(request.get("max_length") or 256)
    begun = time.monotonic()
    # Frames of several images and clips share a batch; a file's caption goes out once all its frames have theirs.
    pending: list[tuple[int, object]] = []
    texts: dict[int, list[str]] = {}
    wanted: dict[int, int] = {}

    def flush(chunk: list[tuple[int, object]]) -> None:
        for (index, _), text in zip(chunk, captioner.caption([frame for _, frame in chunk], style=style,
                                                             max_length=max_length), strict=True):
            texts.setdefault(index, []).append(text.strip())
            if len(texts[index]) == wanted[index]:
                emit(event="caption", index=index, caption=merge_captions(texts.pop(index)))

    for index, path in enumerate(paths):
        frames = load_frames(path)
        wanted[index] = len(frames)
        pending.extend((index, frame) for frame in frames)
        while len(pending) >= batch:
            flush(pending[:batch])
            del pending[:batch]
    if pending:
        flush(pending)
    emit(event="done", elapsed_s=round(time.monotonic() - begun, 3))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: caption_images.py REQUEST.json", file=sys.stderr)
        return 2
    try:
        run(json.loads(Path(argv[0]).read_text()))
    except Exception as exc:  # the caller reads this line; the traceback goes to stderr (its log)
        import traceback

        traceback.print_exc()
        emit(event="error", message=f"{type(exc).__name__}: {exc}"[:2000])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
