"""Write the ComfyUI/kohya-format copy of a diffusers LoRA, with SimpleTuner's own converters. Runs in the trainer env:

    .venv-trainer/bin/python -P tools/convert_lora.py --family sdxl --name my-lora DIR [DIR ...]

Each DIR holds SimpleTuner's `pytorch_lora_weights.safetensors` (the run's output folder, a checkpoint-N folder);
`DIR/<name>.safetensors` is written beside it, with the keys SimpleTuner writes for `--lora_format comfyui`
(SDXL: kohya's `lora_unet_...`, `lora_te1_...` with `.alpha`; transformer families: `diffusion_model.`/`transformer.`
keys with `lora_A`/`lora_B` and `.alpha`). A family SimpleTuner marks NATIVE_COMFYUI_LORA_SUPPORT (FLUX.2) gets no
file: SimpleTuner's own `--lora_format comfyui` saves its diffusers keys unchanged, as ComfyUI loads them; the report
says `"native": true`. It imports torch and SimpleTuner, so the app never imports it: core/publishing/lora_files.py
runs it as a subprocess. Prints one JSON report on stdout:

    {"family": "sdxl", "supported": true, "native": false, "note": "...",
     "files": [{"dir": ..., "file": ..., "keys": 140}], "errors": [{"dir": ..., "message": ...}]}
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"
METADATA_KEY = "lora_adapter_metadata"  # diffusers' LORA_ADAPTER_METADATA_KEY
COMPONENTS = ("unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3", "controlnet")
NATIVE = "native"
"""converter()'s answer for a family whose diffusers file ComfyUI loads as it is."""


def model_class(family: str):
    """SimpleTuner's model class for `family`, or None when it has none."""
    import simpletuner.helpers.models  # noqa: F401  (registers the families)
    from simpletuner.helpers.models.registry import ModelRegistry

    found = ModelRegistry.get(family)
    if found is None:
        return None
    return found.get_real_class() if hasattr(found, "get_real_class") else found


def adapter_metadata(raw: dict[str, str] | None) -> tuple[dict, dict[str, dict]]:
    """(all components' LoRA config merged, {component: its config}) from the file's diffusers metadata, which
    packs each component's PEFT config as 'unet.r', 'unet.lora_alpha', ..."""
    text = (raw or {}).get(METADATA_KEY)
    if not text:
        return {}, {}
    packed = json.loads(text)
    per_component: dict[str, dict] = {}
    for key, value in packed.items():
        component, _, name = key.partition(".")
        if component in COMPONENTS and name:
            per_component.setdefault(component, {})[name] = value
    merged: dict = {}
    for values in per_component.values():
        merged.update(values)
    return merged, per_component


def converter(family: str):
    """(convert(state_dict, raw_metadata) -> state_dict, note) for `family`; None: not supported; NATIVE: no file
    is needed."""
    cls = model_class(family)
    if cls is None:
        return None, f"SimpleTuner {_version()} has no model family '{family}'"
    if getattr(cls, "NATIVE_COMFYUI_LORA_SUPPORT", False):
        # SimpleTuner's own --lora_format comfyui skips its conversion for these and saves the diffusers keys.
        return NATIVE, (f"not needed: ComfyUI loads this family's {DIFFUSERS_FILE} as it is (SimpleTuner "
                        f"{_version()}'s {cls.__name__} says so, and its --lora_format comfyui writes no other file)")
    # The converters are methods that read only class attributes (and, for a few, an optional loaded model):
    # an instance without __init__ is enough, and loads no model.
    instance = object.__new__(cls)

    def convert(weights: dict, raw: dict | None) -> dict:
        merged, per_component = adapter_metadata(raw)
        return instance._convert_lora_state_dict_to_comfyui(
            weights, adapter_metadata=merged or None, component_adapter_metadata=per_component or None)

    return convert, f"converted with SimpleTuner {_version()}'s {cls.__name__} ComfyUI converter"


def _version() -> str:
    from importlib.metadata import version

    return version("simpletuner")


def convert_dir(folder: Path, *, name: str, convert) -> dict:
    from safetensors import safe_open
    from safetensors.torch import save_file

    source = folder / DIFFUSERS_FILE
    with safe_open(str(source), framework="pt") as handle:
        raw = handle.metadata() or {}
        weights = {key: handle.get_tensor(key) for key in handle.keys()}
    converted = convert(weights, raw)
    if set(converted) == set(weights):
        raise ValueError("the converter left every key as it was: this LoRA's layout is not one it knows")
    metadata = {"format": "pt", "lora_format": "comfyui"}
    if raw.get(METADATA_KEY):
        metadata[METADATA_KEY] = raw[METADATA_KEY]
    target = folder / f"{name}.safetensors"
    partial = target.with_name(target.name + ".partial")
    save_file({k: v.contiguous() for k, v in converted.items()}, str(partial), metadata=metadata)
    partial.replace(target)  # a reader never sees half a file
    return {"dir": str(folder), "file": str(target), "keys": len(converted)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", required=True)
    parser.add_argument("--name", required=True, help="the ComfyUI file's name, without .safetensors")
    parser.add_argument("dirs", nargs="+", type=Path)
    args = parser.parse_args(argv)
    if args.name == DIFFUSERS_FILE.removesuffix(".safetensors") or "/" in args.name:
        parser.error(f"--name {args.name!r} would overwrite the diffusers file or leave the folder")

    report: dict = {"family": args.family, "supported": False, "native": False, "note": "", "files": [], "errors": []}
    try:
        convert, report["note"] = converter(args.family)
    except Exception as exc:  # an import that fails for one family is that family's problem, reported
        convert, report["note"] = None, f"SimpleTuner's '{args.family}' model cannot be loaded: {exc}"
    report["supported"] = convert is not None
    report["native"] = convert is NATIVE
    if convert is not None and convert is not NATIVE:
        for folder in args.dirs:
            try:
                report["files"].append(convert_dir(folder, name=args.name, convert=convert))
            except Exception as exc:  # one bad folder must not stop the others
                report["errors"].append({"dir": str(folder), "message": f"{type(exc).__name__}: {exc}"})
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
