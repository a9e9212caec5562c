"""Which SimpleTuner flags a job may set, and how: a policy derived from SimpleTuner's own flag list.

A job is untrusted input (the worker runs whatever an API caller sends), and SimpleTuner trusts its config: some
flags name a program it runs, some a file it reads or a folder it writes, some a Hub repo or torch hub entry whose
code it loads. The rules read each flag's name and help text from core/data/simpletuner_flags.json, so a flag that
a later SimpleTuner adds is classified the same way; the explicit tables below only correct the rules.

Kinds (docs/job-limits.md lists what each means for a user):
- PROGRAM: the value is a program or code that would run -> refused (a bool is refused only when true).
- OWNED: a folder SimpleTuner writes -> the job's value is ignored (with a warning); the job's folder is used.
- MODEL: a Hub repo id -> accepted as `owner/name` only, never a local path or URL.
- BASE_MODEL: the base model and its VAE -> a Hub repo id or a local folder (the model cache, the demo model).
- INLINE_JSON: SimpleTuner takes inline JSON or a file path -> only inline JSON (an object or a list).
- FILE_CONTENT: SimpleTuner reads a JSON file -> the job gives the content inline; it is written into the job folder.
- REFUSED: a path, a place outside the job or a channel out of it (other publishing, sharing a cache) -> refused.
- TEXT: reviewed free text (prompts, names, module lists) -> accepted (length and character limits apply).
- TYPED: a number, a bool or a choice -> accepted after its type check; a choice that runs a program is refused.
A free-text flag that is none of these (a new one nobody has reviewed) is refused: free text is allow-listed.
"""

from __future__ import annotations

import json
import re
from typing import Any

PROGRAM, OWNED, MODEL, BASE_MODEL, INLINE_JSON, FILE_CONTENT, REFUSED, TEXT, TYPED, UNREVIEWED = (
    "program", "owned", "model", "base_model", "inline_json", "file_content", "refused", "text", "typed",
    "unreviewed",
)

# The words that mark a flag whose value runs something: a script, a command, a hook, code from a repo.
PROGRAM_WORDS = re.compile(
    r"(?<![a-z])(script|command|cmd|hooks?\b|exec|shell|subprocess|torch ?hub|remote code|custom code)", re.IGNORECASE
)
# The words that mark a flag whose value is a place on disk.
PATH_NAME = re.compile(r"(_dir|_path|_file|_root|_folder|library|_dirs|_paths|_files)$|^cache_dir|_dir_")
PATH_HELP = re.compile(r"\b(path|paths|directory|folder|file|filename)\b", re.IGNORECASE)
WRITE_HELP = re.compile(r"\b(saved?|stored?|writes?|written|output|cache|export)\b", re.IGNORECASE)
JSON_OR_FILE_HELP = re.compile(r"\bjson\b", re.IGNORECASE)
REPO_HELP = re.compile(r"hugging ?face|\brepo(sitory)?\b|\bhub\b|model (weights|checkpoint)|pretrained", re.IGNORECASE)

# Corrections to the rules, each with its reason. Checked by tests/test_flag_policy.py.
EXPLICIT: dict[str, str] = {
    # Set by the project for every job (core/training/config.py OWNED_FLAGS puts them in the job's folder).
    "output_dir": OWNED, "data_backend_config": OWNED, "webhook_config": OWNED,
    "logging_dir": OWNED, "cache_dir_text": OWNED, "cache_dir_vae": OWNED,
    "cache_dir": OWNED,  # left unset, models load from HF_HOME, the cache the base-model stage fills
    "base_model": OWNED,  # not a flag of 4.10.1; kept for symmetry with the shorthand
    "pretrained_model_name_or_path": BASE_MODEL, "pretrained_vae_model_name_or_path": BASE_MODEL,
    # Code or a launcher the job would control.
    "accelerate_extra_args": PROGRAM, "accelerate_config": PROGRAM, "custom_tracker": PROGRAM,
    "crepa_encoder": PROGRAM,  # a torch hub entry: hubconf.py from GitHub runs
    "deepspeed_config": REFUSED, "fsdp_transformer_layer_cls_to_wrap": TEXT,
    # Outputs leave only through the job's hub/storage fields, with the project's checks.
    "publishing_config": REFUSED, "push_to_hub": REFUSED, "push_checkpoints_to_hub": REFUSED,
    "hub_model_id": REFUSED, "dynamo_hub_repo_id": REFUSED, "dynamo_cache_export": REFUSED,
    "offload_param_path": REFUSED, "resume_from_checkpoint": REFUSED,  # resume_from is the job's field for it
    "main_process_ip": REFUSED,  # multi-machine training reaches other hosts
    "validation_input": REFUSED,  # image paths
    "init_lora": REFUSED, "init_lora_ema": REFUSED, "minimax_music_lm_adapter": REFUSED,  # local files
    "user_prompt_library": FILE_CONTENT, "lycoris_config": FILE_CONTENT,
    "distillation_config": FILE_CONTENT,
    # Not paths although their names or help say so.
    "pretrained_transformer_subfolder": TEXT, "pretrained_unet_subfolder": TEXT,
    "minimax_music_rvq_encoder_subfolder": TEXT, "ltx2_validation_spatial_upsampler_filename": TEXT,
    "parquet_caption_column": TEXT, "parquet_filename_column": TEXT,
    "validation_prompt_library": TEXT, "skip_file_discovery": TEXT,
    "ramtorch_disable_sync_hooks": TYPED,  # CUDA synchronisation hooks inside torch, not a program
    "nsfw_check_backend_types": TEXT, "nsfw_check_sample_types": TEXT,
    "nsfw_check_models": MODEL,
}
# Free text reviewed for jobs: prompts, names and comma lists that never name a file, program or host.
REVIEWED_TEXT = frozenset({
    "model_flavour", "revision", "variant", "sdnq_weights_dtype", "ramtorch_target_modules",
    "musubi_block_swap_device", "instance_prompt", "validation_prompt", "validation_negative_prompt",
    "eval_dataset_id", "validation_resolution", "validation_adapter_name", "flow_custom_timesteps",
    "flow_cubic_schedule_weights", "validation_guidance_skip_layers", "optimizer_config", "model_card_note",
    "modelspec_comment", "report_to", "tracker_run_name", "tracker_project_name", "framerate", "validation_lyrics",
    "lyrics_embedder_optimizer", "custom_text_encoder_intermediary_layers", "minimax_h3_sparse_block_shape",
    "minimax_music_rvq_encoder_revision", "moss_image_uncond_skip_layers", "sana_complex_human_instruction",
    "disk_low_threshold", "ltx2_intrinsic_conditioning", "validation_ltx2_video_conditioning",
})
# Flags whose help says "JSON or a file": only the inline JSON form is taken.
INLINE_JSON_FLAGS = frozenset({
    "quantization_config", "sdnq_modules_to_not_convert", "sdnq_modules_to_not_use_matmul",
    "sdnq_modules_dtype_dict", "sdnq_modules_quant_config", "peft_lora_target_modules",
    "validation_adapter_config", "controlnet_custom_config", "tread_config", "diffusion_blocks_config",
    "sla_config",
})
# Text flags SimpleTuner (or accelerate's trackers) joins onto a folder: a repo's subfolder, a tracker's project and
# run names (tensorboard writes logging_dir/<project>). One plain name: no separator, no '..', no absolute path.
ONE_NAME = re.compile(r"(_subfolder|_project_name|_run_name)$")
SINGLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._+-]{0,127}$")
# Inline JSON whose entries SimpleTuner loads as adapters: a local path there would load any file on the machine
# (validation_adapters._build_adapter_spec takes any path that exists), so each entry must be a Hub repo id.
ADAPTER_LISTS = frozenset({"validation_adapter_config"})
# A value of a choice flag that runs something is refused even though the flag is fine.
PROGRAM_CHOICES = {"report_to": {"custom-tracker"}}
# A value SimpleTuner 4.10.1 takes but fails on, and why: refused before any GPU minute is spent.
BROKEN_CHOICES = {"report_to": {
    "tensorboard": "SimpleTuner 4.10.1 stops at start with it (TensorBoard refuses the list values of its config); "
                   "every run writes TensorBoard files anyway, in runs/ of its outputs"}}

HUB_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def classify(name: str, flag: dict[str, Any]) -> str:
    """The kind of one SimpleTuner flag (see the module docstring)."""
    if name in EXPLICIT:
        return EXPLICIT[name]
    help_text = str(flag.get("help") or "")
    free_text = flag.get("type") == "str" and not flag.get("choices")
    if name in INLINE_JSON_FLAGS:
        return INLINE_JSON
    if flag.get("choices") or flag.get("type") in ("int", "float"):
        return TYPED  # a number or a fixed choice; a choice that runs something is refused by value
    if PROGRAM_WORDS.search(name) or PROGRAM_WORDS.search(help_text):
        return PROGRAM
    if not free_text:
        return TYPED
    if name in REVIEWED_TEXT:
        return TEXT
    named_path = PATH_NAME.search(name) is not None
    if name.endswith(("_name_or_path", "_model", "_model_id")) or (REPO_HELP.search(help_text) and not named_path):
        return MODEL
    if named_path and name.endswith(("_dir", "_dirs")) and WRITE_HELP.search(help_text):
        return OWNED
    if named_path or PATH_HELP.search(help_text):
        return REFUSED
    return UNREVIEWED


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in {"", "0", "false", "no", "none", "null"}
    return bool(value)


def _inline_json(value: Any) -> Any:
    """The JSON object or list a value holds, or ValueError (a path or other text)."""
    if isinstance(value, (dict, list)):
        return value
    if isinstance(value, str) and value.strip()[:1] in ("{", "["):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"is not valid JSON ({exc.msg})") from None
    raise ValueError("takes inline JSON (an object or a list) here; a file path is not accepted")


def check_flag(name: str, value: Any, flag: dict[str, Any]) -> Any:
    """Apply the policy to one job value (already type-checked); return the value to use or raise ValueError."""
    kind = classify(name, flag)
    if value is None:
        return None
    if kind == PROGRAM:
        if flag.get("type") == "bool" and not _truthy(value):
            return value
        raise ValueError(f"'{name}' runs a program or loads code; a job may not set it")
    if kind == REFUSED:
        if flag.get("type") == "bool" and not _truthy(value):
            return value
        raise ValueError(f"'{name}' names a file, folder or destination outside the job; a job may not set it "
                         "(publish with the job's hub or storage field; give data as the job's dataset)")
    if kind == UNREVIEWED:
        raise ValueError(f"'{name}' takes free text that this project has not reviewed for jobs; it is refused")
    if kind == MODEL:
        return _hub_models(name, value)
    if kind in (INLINE_JSON, FILE_CONTENT):
        content = _inline_json(value)
        if name in ADAPTER_LISTS:
            _hub_adapters(content)
        return content
    if kind == TEXT:
        return _text(name, value, flag)
    return _choice(name, value, flag)


def _text(name: str, value: Any, flag: dict[str, Any]) -> Any:
    """A reviewed text flag's value: one plain name, plain names, or free text; a program's choice refused."""
    if ONE_NAME.search(name):
        return _one_name(value)
    if _names_something(name, flag):
        return _plain_names(value)
    return _choice(name, value, flag)


def _choice(name: str, value: Any, flag: dict[str, Any]) -> Any:
    """A value is refused when it chooses something that runs a program."""
    # SimpleTuner reads report_to as a comma list, each name stripped and lower-cased (reporting.report_to_tokens).
    chosen = {token.strip().lower() for item in (value if isinstance(value, list) else [value])
              for token in str(item).split(",")}
    if chosen & PROGRAM_CHOICES.get(name, set()):
        raise ValueError(f"{value!r} runs a program or loads code; a job may not choose it")
    for broken, why in BROKEN_CHOICES.get(name, {}).items():
        if broken in chosen:
            raise ValueError(f"{broken!r}: {why}")
    if flag.get("choices") and PROGRAM_WORDS.search(str(value)):
        raise ValueError(f"{value!r} runs a program; a job may not choose it")
    return value


def _hub_models(name: str, value: Any) -> Any:
    """A model flag's value: Hub repo ids only (nsfw_check_models entries may add ':label')."""
    for item in value if isinstance(value, list) else [value]:
        repo = str(item).split(":", 1)[0].strip() if name == "nsfw_check_models" else str(item).strip()
        if not HUB_REPO.match(repo) or ".." in repo:
            raise ValueError(f"must be a Hub repo id 'owner/name', got {str(item)!r} (local paths and URLs are "
                             "not accepted here)")
    return value


def _one_name(value: Any) -> Any:
    """A name SimpleTuner joins onto a folder: one plain name."""
    text = str(value).strip()
    if not SINGLE_NAME.match(text) or text in (".", ".."):
        raise ValueError(f"must be one plain name (letters, digits, ' ._+-'; no '/', '..' or absolute path), "
                         f"got {text!r}")
    return value


def _hub_adapters(config: Any) -> None:
    """Every adapter an adapter list names (SimpleTuner's shapes: a list, or {"runs": [...]}; an entry is a string, or
    an object with "path", or with "paths"/"adapters" of strings or objects with "path") is a Hub repo id, with an
    optional ':weight file name'."""
    runs = config.get("runs", [config]) if isinstance(config, dict) else config
    for run in runs if isinstance(runs, list) else [runs]:
        entries = [run] if isinstance(run, str) else []
        if isinstance(run, dict):
            entries = [run["path"]] if "path" in run else list(run.get("adapters") or run.get("paths") or [])
        for entry in entries:
            location = entry.get("path") if isinstance(entry, dict) else entry
            repo, _, weight = str(location).strip().partition(":")
            if not HUB_REPO.match(repo) or ".." in repo or ".." in weight.split("/") or weight.startswith("/"):
                raise ValueError(f"adapters load from the Hub here: each path must be a Hub repo id 'owner/name' "
                                 f"(optionally ':weight file'), got {str(location)!r} (local paths are not accepted)")


def _plain_names(value: Any) -> Any:
    """A text flag that names something: plain names only, never a path out of the job or a URL."""
    for item in value if isinstance(value, list) else [value]:
        text = str(item).strip()
        if text.startswith(("/", "~", "\\")) or ".." in re.split(r"[/\\]", text) or "://" in text:
            raise ValueError(f"must be a plain name (no absolute path, '..', '~' or URL), got {text!r}")
    return value


def _names_something(name: str, flag: dict[str, Any]) -> bool:
    """A text flag that names a sub-folder, a file in a repo, a column or a config key: a plain name only."""
    return bool(PATH_NAME.search(name) or name.endswith("_config") or PATH_HELP.search(str(flag.get("help") or "")))


def owned_flags(flags: dict[str, dict[str, Any]]) -> list[str]:
    """The flags whose folder is always the job's own (a job's value is ignored, with a warning)."""
    return sorted(name for name, flag in flags.items() if classify(name, flag) == OWNED)
