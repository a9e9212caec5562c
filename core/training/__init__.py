"""The training stages: preflight, GPU fit, SimpleTuner's files from a job, the trainer subprocess, the deadline
stop, sample settings, and resume from a checkpoint.

What other packages and the faces may use is listed in __all__."""

from core.training.accelerate_config import world_size
from core.training.config import OWNED_FLAGS, RUNS_DIR, TrainerFiles, build_trainer_files, gpu_plan, resolved_defaults
from core.training.control import TrainingControl
from core.training.deadline import DeadlineStop, ends_partial
from core.training.goals import GOALS, GoalPlan, apply_goal, plan_goal
from core.training.gpu_fit import GpuPlan, gpu_report, plan_gpu
from core.training.local_checkpoint import copy_local_checkpoint, is_local
from core.training.preflight import preflight
from core.training.resume import AUTO, auto_sources, fetch_checkpoint, fetch_finished_lora, fetch_latest_checkpoint
from core.training.sample_image import SAMPLE_IMAGE_FILE, sample_input_image, sample_inputs
from core.training.sample_pairs import (
    EditSample,
    SampleDataset,
    SamplePair,
    choose_sample_pairs,
    edit_samples,
    with_pair_prompts,
    write_sample_dataset,
)
from core.training.samples import (
    DEFAULT_GUIDANCE,
    DEFAULT_STEPS,
    VIDEO_FRAMES,
    job_samples,
    published_view,
    render_working_gb,
    sample_labels,
    sample_prompts,
)
from core.training.trainer import TrainingOutcome, train

__all__ = [
    "AUTO",
    "DEFAULT_GUIDANCE",
    "DEFAULT_STEPS",
    "GOALS",
    "OWNED_FLAGS",
    "RUNS_DIR",
    "SAMPLE_IMAGE_FILE",
    "VIDEO_FRAMES",
    "DeadlineStop",
    "EditSample",
    "GoalPlan",
    "GpuPlan",
    "SampleDataset",
    "SamplePair",
    "TrainerFiles",
    "TrainingControl",
    "TrainingOutcome",
    "apply_goal",
    "auto_sources",
    "build_trainer_files",
    "choose_sample_pairs",
    "copy_local_checkpoint",
    "edit_samples",
    "ends_partial",
    "fetch_checkpoint",
    "fetch_finished_lora",
    "fetch_latest_checkpoint",
    "gpu_plan",
    "gpu_report",
    "is_local",
    "job_samples",
    "plan_goal",
    "plan_gpu",
    "preflight",
    "published_view",
    "render_working_gb",
    "resolved_defaults",
    "sample_input_image",
    "sample_inputs",
    "sample_labels",
    "sample_prompts",
    "train",
    "with_pair_prompts",
    "world_size",
    "write_sample_dataset",
]
