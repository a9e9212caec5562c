"""SimpleTuner's train.py with the fixes a family needs in SimpleTuner 4.10.1. accelerate launches it in place of
train.py (core/training/trainer.py's launch_command, only for the families in FIXED_FAMILIES there):

    accelerate launch --config_file CFG tools/simpletuner_train.py

The fix for LTX-Video: its model class asks for a pipeline-specific scheduler (`requires_special_scheduler_setup`)
but does not implement the hook that returns one (`_load_scheduler_for_pipeline`, which Wan's class does), so the
text-embedding cache builds `LTXPipeline(...)` without its required `scheduler` and every run stops with
"LTXPipeline.__init__() missing 1 required positional argument: 'scheduler'" before a step. Here the hook returns the
model's own scheduler (its `scheduler/` folder), which is what `LTXPipeline.from_pretrained` would load.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path


def fix_ltxvideo() -> None:
    from simpletuner.helpers.models.ltxvideo.model import LTXVideo

    def load_scheduler(self, pipeline_type):
        from diffusers import FlowMatchEulerDiscreteScheduler

        return FlowMatchEulerDiscreteScheduler.from_pretrained(self._model_config_path(), subfolder="scheduler",
                                                               revision=getattr(self.config, "revision", None))

    if "_load_scheduler_for_pipeline" not in vars(LTXVideo):  # a later SimpleTuner's own hook wins
        LTXVideo._load_scheduler_for_pipeline = load_scheduler


def main() -> None:
    import simpletuner

    script = Path(simpletuner.__file__).parent / "train.py"
    # As if train.py itself were launched: its folder, not tools/, is the first import path.
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [str(script.parent), *(entry for entry in sys.path if entry and Path(entry).resolve() != Path(here))]
    sys.argv[0] = str(script)
    fix_ltxvideo()
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
