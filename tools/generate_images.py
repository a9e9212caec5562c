"""Render images with diffusers, in the trainer env: a warm server (JSON lines on stdin/stdout) or one request.

    python tools/generate_images.py --serve            # one JSON request per stdin line, one JSON answer per line
    python tools/generate_images.py --once '{...}'     # load, render, print one answer, exit (the cold path)

A request: {"model": folder or Hub id, "lora": file or null, "strength": 1.0, "prompt": "...",
"negative_prompt": "", "seed": 42, "steps": 20, "guidance": 5.0, "width": 1024, "height": 1024, "count": 1,
"out_dir": folder, "name": "file stem", "frames": 17, "fps": 16, "placement": "gpu", "vae_tiling": false,
"input_image": PNG path, a list of PNG paths (an edit "plus" pipeline's inputs) or null}. The answer: {"ok": true,
"images": [paths], "seconds": {...}, "warm": {"pipeline": bool, "lora": bool}, "input_image": {...} or null} or
{"ok": false, "error": "..."}.

`input_image` (checked and saved as a PNG by core/dataset/input_image.py) is the first frame of the clip, or the
image an edit pipeline edits (FluxKontextPipeline, QwenImageEditPipeline, QwenImageEditPlusPipeline with a list of
up to three, LongCatImageEditPipeline): it is scaled to cover the asked size and cropped to it at the centre, then
given as the pipeline's `image` (FLUX.1 Kontext also gets `max_area` and `_auto_resize=False`, so neither its input
nor its output is moved to another size). A pipeline whose __call__ takes `image` gets it as it is; a Wan 2.2 TI2V
pipeline (WanPipeline with `expand_timesteps`: the image becomes the first latent frame) is switched to its
image-to-video sibling (`<Name>ImageToVideoPipeline.from_pipe`, the same components, LoRA adapters included); any
other pipeline refuses it.

`placement` is where the pipeline goes, as core/generation/preview_fit.py planned it before anything was loaded:
"cpu" (no GPU), "gpu" (all of it), "model_offload" (diffusers' enable_model_cpu_offload: one component on the GPU at
a time) or "sequential_offload" (enable_sequential_cpu_offload: one layer at a time); `vae_tiling` tiles and slices
the VAE where it can. A video pipeline (its __call__ takes num_frames: Wan, LTX, ...) renders `frames` frames
(num_videos_per_prompt, not num_images_per_prompt) and writes `<name>-<i>.mp4` (diffusers' export_to_video, through
imageio-ffmpeg) at `fps`; an image pipeline writes `<name>-<i>.png`.

Warm means: the pipeline is loaded once per model and kept; a LoRA is loaded once per file as its own adapter and
switched on (at the asked strength) or off per request, so a click on another checkpoint costs one small file read.
Only this script's answers go to stdout; everything libraries print goes to stderr. It is run by
core/generation/playground.py with `python -P`, so no project module shadows a library's.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import sys
import time
from pathlib import Path

_ANSWERS = sys.stdout
DEFAULT_FRAMES = 17
EDIT_PIPELINES = ("FluxKontextPipeline", "QwenImageEditPipeline", "QwenImageEditPlusPipeline",
                  "LongCatImageEditPipeline")
"""Pipelines that edit their `image` (core/simpletuner/families.py's EDIT_PIPELINES)."""
"""A video request without `frames`: 4k+1 (what Wan's VAE needs), about a second at 16 fps."""
sys.stdout = sys.stderr  # diffusers, transformers and tqdm print; only answers may reach the real stdout


class Renderer:
    """One pipeline at a time (a new model replaces the old one: GPU memory holds one), its LoRAs as adapters."""

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.model: tuple[str, str, bool] | None = None
        """(model, placement, vae_tiling) of the loaded pipeline: offload hooks cannot be taken off, so another
        placement loads the pipeline again."""
        self.pipeline = None
        self.image_pipeline = None
        """The pipeline that takes an input image, when it is not `pipeline` itself (from_pipe: shared modules)."""
        self.adapters: dict[str, str] = {}
        """LoRA file (path + mtime) -> adapter name."""

    def _load(self, model: str, *, placement: str, vae_tiling: bool) -> bool:
        key = (model, placement, vae_tiling)
        if key == self.model:
            return True
        from diffusers import DiffusionPipeline

        self.pipeline = self.image_pipeline = None
        self.adapters = {}
        if self.device == "cuda":
            self.torch.cuda.empty_cache()
        pipeline = DiffusionPipeline.from_pretrained(model, torch_dtype=self.dtype)
        _bound_tokenizers(pipeline)
        pipeline.set_progress_bar_config(disable=True)
        self.pipeline, self.model = _placed(pipeline, placement=placement, device=self.device), key
        if vae_tiling:
            _tile_vae(pipeline)
        return False

    def _lora(self, lora: str | None, strength: float) -> bool:
        """Switch the adapter for this request; True when it was loaded already."""
        pipeline = self.pipeline
        if not lora:
            if self.adapters:
                pipeline.disable_lora()
            return True
        path = Path(lora)
        key = f"{path.resolve()}:{path.stat().st_mtime_ns}"
        warm = key in self.adapters
        if not warm:
            name = "lora_" + hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()[:12]
            pipeline.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name)
            self.adapters[key] = name
        pipeline.enable_lora()
        pipeline.set_adapters([self.adapters[key]], adapter_weights=[float(strength)])
        return warm

    def render(self, request: dict) -> dict:
        started = time.perf_counter()
        placement = str(request.get("placement") or ("gpu" if self.device == "cuda" else "cpu"))
        warm_pipeline = self._load(str(request["model"]), placement=placement,
                                   vae_tiling=bool(request.get("vae_tiling")))
        loaded = time.perf_counter()
        warm_lora = self._lora(request.get("lora"), float(request.get("strength", 1.0)))
        swapped = time.perf_counter()
        out_dir = Path(request["out_dir"])
        out_dir.mkdir(parents=True, exist_ok=True)
        generator = self.torch.Generator(device="cpu").manual_seed(int(request.get("seed", 42)))
        pipeline, video, conditioned = self.pipeline, _is_video(self.pipeline), None
        given = request.get("input_image")
        sources = [Path(path) for path in (given if isinstance(given, list) else [given] if given else [])]
        width, height = int(request.get("width") or 1024), int(request.get("height") or 1024)
        if sources:
            pipeline = self._taking_image()
            images = [_covering(path, width=width, height=height) for path in sources]
            edit = type(pipeline).__name__ in EDIT_PIPELINES
            conditioned = {"width": images[0].width, "height": images[0].height, "pipeline": type(pipeline).__name__,
                           "conditions": "first_frame" if video else "edit" if edit else "image"}
            if edit:
                conditioned["images"] = len(images)
        arguments = {"prompt": request["prompt"], "num_inference_steps": int(request.get("steps", 20)),
                     "guidance_scale": float(request.get("guidance", 5.0)), "generator": generator,
                     "num_videos_per_prompt" if video else "num_images_per_prompt": int(request.get("count", 1))}
        if video:
            arguments.update(num_frames=int(request.get("frames") or DEFAULT_FRAMES), output_type="np")
        accepts = inspect.signature(pipeline.__call__).parameters
        if request.get("width") and request.get("height") and "width" in accepts:
            arguments.update(width=int(request["width"]), height=int(request["height"]))
        if request.get("negative_prompt"):
            arguments["negative_prompt"] = request["negative_prompt"]
        if conditioned is not None:
            arguments["image"] = images if len(images) > 1 else images[0]
            arguments.update(_edit_size(accepts, width=width, height=height))
        with self.torch.inference_mode():
            output = pipeline(**arguments)
        stem = str(request.get("name") or f"image-{int(time.time() * 1000)}")
        if video:
            paths = _write_videos(output.frames, out_dir=out_dir, stem=stem, fps=int(request.get("fps") or 16))
        else:
            paths = []
            for index, image in enumerate(output.images):
                path = out_dir / f"{stem}-{index}.png"
                image.save(path)
                paths.append(str(path))
        done = time.perf_counter()
        return {"ok": True, "images": paths, "video": video, "placement": placement, "input_image": conditioned,
                "warm": {"pipeline": warm_pipeline, "lora": warm_lora},
                "seconds": {"load": round(loaded - started, 3), "lora": round(swapped - loaded, 3),
                            "render": round(done - swapped, 3), "total": round(done - started, 3)}}


    def _taking_image(self):
        """The loaded pipeline, or its image-to-video sibling, that takes an input image; ValueError when none."""
        pipeline = self.pipeline
        if "image" in inspect.signature(pipeline.__call__).parameters:
            return pipeline
        if self.image_pipeline is None and getattr(pipeline.config, "expand_timesteps", False):
            import diffusers

            sibling = getattr(diffusers, type(pipeline).__name__.replace("Pipeline", "ImageToVideoPipeline"), None)
            if sibling is not None:
                self.image_pipeline = sibling.from_pipe(pipeline)
                self.image_pipeline.set_progress_bar_config(disable=True)
        if self.image_pipeline is None:
            raise ValueError(f"{type(pipeline).__name__} renders from text only: it takes no input image")
        return self.image_pipeline


def _edit_size(accepts, *, width: int, height: int) -> dict:
    """FLUX.1 Kontext's pipeline rescales its output to `max_area` (1024x1024 by default) and its input to one of
    Kontext's preferred sizes: here both stay at the asked size, the input cropped as its target was in training
    (SimpleTuner's reference_strict pairs)."""
    extra: dict = {}
    if "max_area" in accepts:
        extra["max_area"] = width * height
    if "_auto_resize" in accepts:
        extra["_auto_resize"] = False
    return extra


def _covering(path: Path, *, width: int, height: int):
    """The image scaled to cover width x height and cropped to it at the centre (no stretching)."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        return ImageOps.fit(image.convert("RGB"), (width, height), method=Image.Resampling.LANCZOS)


def _placed(pipeline, *, placement: str, device: str):
    """The pipeline where the plan puts it; offloading keeps the weights in RAM and moves them in as needed."""
    if placement == "model_offload":
        pipeline.enable_model_cpu_offload()
        return pipeline
    if placement == "sequential_offload":
        pipeline.enable_sequential_cpu_offload()
        return pipeline
    return pipeline.to("cuda" if placement == "gpu" and device == "cuda" else device)


def _tile_vae(pipeline) -> None:
    """Decode in tiles and one sample at a time, where the VAE can (not every VAE has both)."""
    vae = getattr(pipeline, "vae", None)
    for switch in ("enable_tiling", "enable_slicing"):
        if callable(getattr(vae, switch, None)):
            try:
                getattr(vae, switch)()
            except NotImplementedError:  # some VAEs declare it and refuse
                continue


def _is_video(pipeline) -> bool:
    """A pipeline that renders frames: its __call__ takes num_frames (Wan, LTX, HunyuanVideo, ...)."""
    return "num_frames" in inspect.signature(pipeline.__call__).parameters


def _write_videos(frames, *, out_dir: Path, stem: str, fps: int) -> list[str]:
    """One .mp4 per rendered video (frames: a batch of videos, each a sequence of HxWx3 arrays in 0..1)."""
    from diffusers.utils import export_to_video

    paths = []
    for index, video in enumerate(frames):
        path = out_dir / f"{stem}-{index}.mp4"
        export_to_video(list(video), str(path), fps=fps)
        paths.append(str(path))
    return paths


def _bound_tokenizers(pipeline) -> None:
    """A tokenizer saved without model_max_length says 1e30, which diffusers passes to torch as a length
    (OverflowError): use the text encoder's own position limit instead."""
    for name in ("tokenizer", "tokenizer_2", "tokenizer_3"):
        tokenizer = getattr(pipeline, name, None)
        if tokenizer is None or getattr(tokenizer, "model_max_length", 0) < 10**6:
            continue
        encoder = getattr(pipeline, name.replace("tokenizer", "text_encoder"), None)
        limit = getattr(getattr(encoder, "config", None), "max_position_embeddings", None) or 77
        tokenizer.model_max_length = int(limit)


def _answer(answer: dict) -> None:
    _ANSWERS.write(json.dumps(answer) + "\n")
    _ANSWERS.flush()


def _safe(renderer: Renderer, request: dict) -> dict:
    try:
        return renderer.render(request)
    except Exception as exc:  # one bad request must not end a warm server
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}


def serve() -> None:
    renderer = Renderer()
    _answer({"ok": True, "ready": True, "device": renderer.device, "pid": os.getpid()})
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
        except json.JSONDecodeError as exc:
            _answer({"ok": False, "error": f"not JSON: {exc.msg}"})
            continue
        if request.get("stop"):
            break
        _answer(_safe(renderer, request))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--serve", action="store_true", help="answer JSON-line requests until stdin closes")
    mode.add_argument("--once", metavar="JSON", help="render one request and exit")
    args = parser.parse_args()
    if args.serve:
        serve()
        return 0
    answer = _safe(Renderer(), json.loads(args.once))
    _answer(answer)
    return 0 if answer.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
