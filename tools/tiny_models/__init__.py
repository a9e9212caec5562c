"""Tiny random models, one module per SimpleTuner model family, each with `build(out: Path)`.

Only tools/build_tiny_model.py imports this package, in the trainer env (diffusers, transformers, tokenizers).
"""

FAMILIES = ("sdxl", "flux", "sd3", "chroma", "qwen_image", "wan", "flux2", "z_image", "wan22_a14b", "ltxvideo",
            "ltxvideo2")

FLAVOURS = {"flux": ("kontext",), "wan": ("t2v", "i2v", "ti2v")}
"""Variants a family's module builds besides its default layout (`build(out, scratch=..., flavour=...)`); wan's
default is t2v."""
