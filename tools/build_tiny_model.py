"""Build a tiny random model of one SimpleTuner family offline. Runs in the trainer env, as a script:

    .venv-trainer/bin/python -P tools/build_tiny_model.py DIR [--family F] [--flavour V]

(F: tiny_models.FAMILIES; V: one of tiny_models.FLAVOURS[F], e.g. flux's kontext, wan's i2v)

It imports diffusers and transformers, so nothing else in the project imports it: `python -m core demo-model DIR`
runs it as a subprocess (see core/generation/demo.py). One module per family in tools/tiny_models/; shapes and the
offline tokenizers are described in docs/families.md. Random weights, seed 0; every model is under 30 MB.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

# Only this folder joins sys.path (run with -P, the project root stays off it): `tiny_models` shadows no library.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tiny_models import FAMILIES, FLAVOURS


def build(out: Path, *, family: str, flavour: str | None = None) -> None:
    import importlib

    import torch

    torch.manual_seed(0)
    scratch = out / "_scratch"
    extra = {"flavour": flavour} if flavour else {}
    importlib.import_module(f"tiny_models.{family}").build(out, scratch=scratch, **extra)
    shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="build_tiny_model.py", description="Build a tiny random model offline.")
    parser.add_argument("dir")
    parser.add_argument("--family", choices=FAMILIES, default="sdxl")
    parser.add_argument("--flavour", help="a variant of the family's tiny model (tiny_models.FLAVOURS)")
    args = parser.parse_args(argv)
    if args.flavour and args.flavour not in FLAVOURS.get(args.family, ()):
        parser.error(f"the tiny {args.family} has no flavour {args.flavour!r} "
                     f"(it has: {', '.join(FLAVOURS.get(args.family, ())) or 'none'})")
    out = Path(args.dir).absolute()
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # the leftovers of an interrupted build
    build(partial, family=args.family, flavour=args.flavour)
    partial.rename(out)  # a half-built model never sits where a finished one is expected
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
