"""The built-in demo: tiny random models (built offline by the trainer env) and a small generated dataset.

Tests, the CPU demo in the UI and the benchmarks use these, so a newcomer trains end to end without a GPU. SDXL is
the default; FLUX.1, SD3.5, Chroma, Qwen-Image, Wan, LTX-Video and LTX-2 have tiny models too (docs/families.md).
"""

from __future__ import annotations

import fcntl
from pathlib import Path

from core.adapters import TrainerEnv
from core.errors import SetupError
from core.settings import TOOLS_DIR, Settings

TINY_MODEL_SCRIPT = TOOLS_DIR / "build_tiny_model.py"
TINY_CAPTIONER_SCRIPT = TOOLS_DIR / "build_tiny_captioner.py"
COLOURS = [("red", (220, 40, 40)), ("green", (40, 180, 70)), ("blue", (40, 80, 220)), ("yellow", (230, 210, 40)),
           ("purple", (140, 60, 190)), ("orange", (240, 140, 30)), ("teal", (30, 170, 170)), ("pink", (240, 120, 180))]
SHAPES = ["circle", "square", "triangle"]
TINY_FAMILIES = ("sdxl", "flux", "sd3", "chroma", "qwen_image", "wan", "flux2", "z_image", "wan22_a14b", "ltxvideo",
                 "ltxvideo2")
"""The SimpleTuner model families tools/build_tiny_model.py can build (tools/tiny_models/, one module each)."""
TINY_FLAVOURS: dict[str, tuple[str, ...]] = {"flux": ("kontext",), "wan": ("t2v", "i2v", "ti2v")}
"""The variants a family's tiny model can be built as (tools/tiny_models' FLAVOURS): FLUX.1 Kontext (an edit model);
Wan's text-to-video (the default), its image-to-video (Wan 2.2 I2V's layout) and Wan 2.2 TI2V's text-or-image switch."""


def build_tiny_model(out: Path, *, settings: Settings, family: str = "sdxl", flavour: str | None = None) -> Path:
    """Write the tiny model of `family` (as `flavour`, one of TINY_FLAVOURS[family]; None: the family's default) to
    `out` (once: an existing model is kept). Runs in the trainer env."""
    if family not in TINY_FAMILIES:
        raise SetupError(f"no tiny model for the family {family!r}; one of: {', '.join(TINY_FAMILIES)}",
                         field="family")
    if flavour is not None and flavour not in TINY_FLAVOURS.get(family, ()):
        raise SetupError(f"the tiny {family} model has no flavour {flavour!r}; "
                         f"{', '.join(TINY_FLAVOURS.get(family, ())) or 'it has none'}", field="flavour")
    name = f"{family} {flavour}" if flavour else family
    args = [str(out.absolute()), "--family", family, *(["--flavour", flavour] if flavour else [])]
    return _built_by_script(out, marker="model_index.json", what=f"the tiny {name} model", settings=settings,
                            script=TINY_MODEL_SCRIPT, args=args)


def build_tiny_captioner(out: Path, *, settings: Settings) -> Path:
    """Write the tiny random Florence-2 captioner to `out` (once: an existing one is kept); `captioning.model` takes
    the folder. Runs in the trainer env, offline (its tokenizer is trained on the spot)."""
    return _built_by_script(out, marker="config.json", what="the tiny captioner", settings=settings,
                            script=TINY_CAPTIONER_SCRIPT, args=[str(out.absolute())])


def _built_by_script(out: Path, *, marker: str, what: str, settings: Settings, script: Path,
                     args: list[str]) -> Path:
    """Run a builder script of tools/ in the trainer env, offline and on the CPU, once: a folder holding `marker`
    is kept as it is."""
    out = out.absolute()
    if (out / marker).exists():
        return out
    trainer = TrainerEnv(settings)
    trainer.require()
    out.parent.mkdir(parents=True, exist_ok=True)
    # One builder at a time per folder (two UI sessions, two test processes): the second finds it built.
    with (out.parent / f".{out.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (out / marker).exists():
            return out
        # Offline even on an online machine: a tiny model is random weights and a tokenizer trained on the spot.
        done = trainer.run(script, args, device="cpu", offline=True)
    if done.returncode != 0:
        raise SetupError(f"building {what} failed: {done.stderr.strip().splitlines()[-1:]}")
    return out


def write_demo_pairs(out: Path, *, count: int = 4, size: int = 128) -> Path:
    """`count` edit pairs in the control-folder layout: `NAME.png` a coloured square (the wanted output),
    `control/NAME.png` the same colour as a circle (the input), `NAME.txt` the instruction."""
    from PIL import Image, ImageDraw

    (out / "control").mkdir(parents=True, exist_ok=True)
    box = (size // 5, size // 5, size * 4 // 5, size * 4 // 5)
    for index in range(count):
        colour_name, colour = COLOURS[index % len(COLOURS)]
        target, source = (Image.new("RGB", (size, size), (245, 245, 240)) for _ in range(2))
        ImageDraw.Draw(target).rectangle(box, fill=colour)
        ImageDraw.Draw(source).ellipse(box, fill=colour)
        stem = f"pair_{index:03d}"
        target.save(out / f"{stem}.png")
        source.save(out / "control" / f"{stem}.png")
        (out / f"{stem}.txt").write_text(f"turn the {colour_name} circle into a square")
    return out


def write_demo_dataset(out: Path, *, count: int = 8, size: int = 128) -> Path:
    """`count` coloured-shape PNGs with .txt captions of the same stem."""
    from PIL import Image, ImageDraw

    out.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        colour_name, colour = COLOURS[index % len(COLOURS)]
        shape = SHAPES[index % len(SHAPES)]
        image = Image.new("RGB", (size, size), (245, 245, 240))
        draw = ImageDraw.Draw(image)
        box = (size // 5, size // 5, size * 4 // 5, size * 4 // 5)
        if shape == "circle":
            draw.ellipse(box, fill=colour)
        elif shape == "square":
            draw.rectangle(box, fill=colour)
        else:
            draw.polygon([(size // 2, box[1]), (box[2], box[3]), (box[0], box[3])], fill=colour)
        stem = f"demo_{index:03d}"
        image.save(out / f"{stem}.png")
        (out / f"{stem}.txt").write_text(f"a {colour_name} {shape} on a plain background")
    return out
