"""Caption images with a vision-language model. Runs in the trainer env, as a script (core/generation/captioning.py
starts it):

    .venv-trainer/bin/python -P tools/caption_images.py REQUEST.json

REQUEST.json: {"model": a local folder or Hub id, "images": [paths], "style": "detailed"|"short"|"tags",
"max_length": new tokens, "batch_size": N, "device": "cpu"|"cuda"}. It writes JSON lines on stdout, flushed one
by one so the caller can show progress and stop it at any time (it kills the whole process group):

    {"event": "loaded", "model_type": "florence2", "device": "cpu", "load_s": 1.2}
    {"event": "caption", "index": 0, "caption": "..."}         one per image, in order
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
from pathlib import Path

FLORENCE_TASKS = {"detailed": "<MORE_DETAILED_CAPTION>", "short": "<CAPTION>", "tags": "<CAPTION>"}
INSTRUCTIONS = {
    "detailed": "Write a detailed description of this image in one paragraph, for training an image model. "
                "Describe the subject, setting, colours, lighting and style. Do not start with 'This image'.",
    "short": "Write a one-sentence caption of this image.",
    "tags": "List 10 to 25 comma-separated tags that describe this image (subject, clothing, setting, style), "
            "most important first, nothing else.",
}
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


def run(request: dict) -> None:
    from PIL import Image

    started = time.monotonic()
    captioner = Captioner(request["model"], device=request.get("device") or "cpu")
    emit(event="loaded", model_type=captioner.model_type, device=captioner.device,
         load_s=round(time.monotonic() - started, 3))
    paths, batch = request["images"], max(1, int(request.get("batch_size") or 1))
    begun = time.monotonic()
    for first in range(0, len(paths), batch):
        chunk = paths[first:first + batch]
        images = []
        for path in chunk:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        texts = captioner.caption(images, style=request.get("style") or "detailed",
                                  max_length=int(request.get("max_length") or 256))
        for offset, text in enumerate(texts):
            emit(event="caption", index=first + offset, caption=text.strip())
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
