"""What the project knows of SimpleTuner 4.10.1, from its own tables (core/data/): which flags a job may set, model
families and their Hub ids, per-GPU recipes, LyCORIS presets, and what each training kind writes.

What other packages and the faces may use is listed in __all__."""

from core.simpletuner.experts import BOTH, Expert, expert_pair, resolve_experts
from core.simpletuner.families import (
    VIDEO_FAMILIES,
    edit_inputs,
    flavour_settings,
    hub_ids,
    identify,
    input_images,
    is_edit_model,
    lookup,
    model_index_path,
    model_table,
    resolve_family,
    takes_input_image,
)
from core.simpletuner.flags import FILE_CONTENT, INLINE_JSON, check_flag, classify, owned_flags
from core.simpletuner.kinds import (
    FULL,
    LYCORIS_CONFIG_FILE,
    check_training_kind,
    expected_output,
    implied_flags,
    kind_of,
    trained_component,
)
from core.simpletuner.lycoris import with_preset
from core.simpletuner.recipes import Recipe, families_with_recipes, recipe_for

__all__ = [
    "BOTH",
    "FILE_CONTENT",
    "FULL",
    "INLINE_JSON",
    "LYCORIS_CONFIG_FILE",
    "VIDEO_FAMILIES",
    "Expert",
    "Recipe",
    "check_flag",
    "check_training_kind",
    "classify",
    "edit_inputs",
    "expected_output",
    "expert_pair",
    "families_with_recipes",
    "flavour_settings",
    "hub_ids",
    "identify",
    "implied_flags",
    "input_images",
    "is_edit_model",
    "kind_of",
    "lookup",
    "model_index_path",
    "model_table",
    "owned_flags",
    "recipe_for",
    "resolve_experts",
    "resolve_family",
    "takes_input_image",
    "trained_component",
    "with_preset",
]
