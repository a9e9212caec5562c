"""Print SimpleTuner's real flag list as JSON, from its own argument parser. Runs in the trainer env.

    .venv-trainer/bin/python tools/dump_simpletuner_flags.py > core/data/simpletuner_flags.json
"""

import argparse
import json
import sys
from importlib.metadata import version

from simpletuner.helpers.configuration.cmd_args import get_argument_parser
from simpletuner.helpers.training.optimizer_param import optimizer_choices


def _type_name(action: argparse.Action) -> str:
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return "bool"
    if isinstance(action.type, type) and action.type in (int, float, str, bool):
        return action.type.__name__
    name = getattr(action.type, "__name__", "") or ""
    return "bool" if "bool" in name else "str"


def main() -> None:
    flags = {}
    for action in get_argument_parser()._actions:
        longs = [opt for opt in action.option_strings if opt.startswith("--")]
        if not longs or action.dest == "help":
            continue
        entry = {"type": _type_name(action)}
        if action.choices:
            entry["choices"] = [c if isinstance(c, (int, float, str, bool)) else str(c) for c in action.choices]
        if action.nargs not in (None, 0):
            entry["nargs"] = str(action.nargs)
        if action.help and action.help != argparse.SUPPRESS:
            entry["help"] = " ".join(str(action.help).split())  # read by core/simpletuner/flags.py's rules
        for opt in longs:
            flags[opt[2:]] = entry
    # The parser takes any string for --optimizer; the real names live in SimpleTuner's optimizer table.
    flags["optimizer"] = {**flags["optimizer"], "choices": sorted(optimizer_choices)}
    document = {"simpletuner_version": version("simpletuner"), "flags": dict(sorted(flags.items()))}
    json.dump(document, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
