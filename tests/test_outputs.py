"""core/outputs.py over a real output folder on disk: which checkpoints count as complete (resumable), which hold a
LoRA (publishable), the latest of each, the steps in names and in the training state, and the samples."""

from __future__ import annotations

import json
from pathlib import Path

from core.outputs import (
    FETCHED_MARKER,
    GUARD_FILE,
    LORA_FILE,
    SAMPLES_DIR,
    STATE_FILE,
    checkpoint_name,
    checkpoint_step,
    checkpoints,
    find_samples,
    latest_checkpoint,
    latest_checkpoint_prefix,
    lora_checkpoints,
    lora_file,
    sample_step,
    samples_by_step,
    samples_output,
    state_step,
    trained_checkpoints,
    validation_files,
)


def checkpoint(output: Path, step: int, *, lora: bool = True, state: bool = True, guard: bool = True) -> Path:
    """A checkpoint-N folder as SimpleTuner leaves it: its training state, the LoRA, then the completion guard (a
    save cut short leaves no guard)."""
    folder = output / checkpoint_name(step)
    folder.mkdir(parents=True)
    if lora:
        (folder / LORA_FILE).write_bytes(b"weights")
    if state:
        (folder / STATE_FILE).write_text(json.dumps({"global_step": step}))
    if state and guard:
        (folder / GUARD_FILE).write_text("")
    return folder


def a_run(tmp_path: Path) -> Path:
    """Steps 2 and 10 complete; 12 without its state yet (being written); 14 a state with no LoRA (a full
    fine-tune's kind); 3 complete but fetched to resume from; 16 cut mid-save (a killed trainer: state and LoRA,
    no guard); and names that are no checkpoint."""
    output = tmp_path / "output"
    checkpoint(output, 10)
    checkpoint(output, 2)
    checkpoint(output, 12, state=False)
    checkpoint(output, 14, lora=False)
    checkpoint(output, 16, guard=False)
    (checkpoint(output, 3) / FETCHED_MARKER).write_text("fetched")
    (output / "checkpoint-latest").mkdir()
    (output / "checkpoint-7.zip").write_bytes(b"an archive, not a folder")
    (output / LORA_FILE).write_bytes(b"final")
    return output


def steps(folders: list[Path]) -> list[int | None]:
    return [checkpoint_step(folder) for folder in folders]


def test_every_checkpoint_folder_by_step_and_the_two_narrower_meanings(tmp_path):
    output = a_run(tmp_path)
    assert steps(checkpoints(output)) == [2, 3, 10, 12, 14, 16]  # by number, not by name ("10" < "2")
    assert steps(checkpoints(output, complete=True)) == [2, 3, 10, 14]  # not 16: its save never finished
    assert steps(checkpoints(output, with_lora=True)) == [2, 3, 10, 12, 16]
    assert steps(checkpoints(output, complete=True, with_lora=True)) == [2, 3, 10]
    assert checkpoints(tmp_path / "no-output") == []


def test_the_latest_checkpoint_is_the_newest_complete_one_unless_asked_otherwise(tmp_path):
    output = a_run(tmp_path)
    assert latest_checkpoint(output) == output / "checkpoint-14"
    assert latest_checkpoint(output, complete=True, with_lora=True) == output / "checkpoint-10"
    assert latest_checkpoint(output, complete=False, with_lora=True) == output / "checkpoint-16"
    assert latest_checkpoint(output, complete=False) == output / "checkpoint-16"
    assert latest_checkpoint(tmp_path / "empty") is None


def test_trained_checkpoints_leave_out_the_one_fetched_to_resume_from(tmp_path):
    assert steps(trained_checkpoints(a_run(tmp_path))) == [2, 10, 14]


def test_the_pickers_list_holds_each_checkpoint_with_a_lora(tmp_path):
    output = a_run(tmp_path)
    assert lora_checkpoints(output) == [("checkpoint-2", 2), ("checkpoint-3", 3), ("checkpoint-10", 10),
                                        ("checkpoint-12", 12), ("checkpoint-16", 16)]
    assert lora_checkpoints(None) == []
    assert lora_file(output) == output / LORA_FILE and lora_file(output / "checkpoint-2").is_file()


def test_a_step_comes_from_a_checkpoint_name_or_path_only():
    assert checkpoint_step("checkpoint-40") == 40 and checkpoint_step(Path("/jobs/x/output/checkpoint-7")) == 7
    assert checkpoint_step("/jobs/x/output/checkpoint-7/") == 7
    for other in ("checkpoint-", "checkpoint-latest", "checkpoint-7.zip", "my-checkpoint-7", "output", ""):
        assert checkpoint_step(other) is None, other
    assert checkpoint_name(40) == "checkpoint-40" and checkpoint_step(checkpoint_name(40)) == 40


def test_the_state_file_says_the_step_a_fetched_folder_was_at(tmp_path):
    folder = checkpoint(tmp_path, 5)
    assert state_step(folder) == 5
    (folder / STATE_FILE).write_text(json.dumps({"global_step": True}))
    assert state_step(folder) is None
    (folder / STATE_FILE).write_text("{not json")
    assert state_step(folder) is None
    assert state_step(tmp_path / "nowhere") is None


def test_the_latest_checkpoint_of_a_remote_listing():
    listing = ["README.md", "checkpoints/checkpoint-4/pytorch_lora_weights.safetensors",
               "checkpoints/checkpoint-12/training_state.json", "checkpoints/checkpoint-9/optimizer.bin",
               "checkpoint-100.zip"]
    assert latest_checkpoint_prefix(listing) == "checkpoints/checkpoint-12"
    assert latest_checkpoint_prefix(["README.md", "checkpoint-100.zip"]) is None


def test_samples_with_their_prompts_by_step_and_the_other_validation_files(tmp_path):
    output = tmp_path / "output"
    folder = output / SAMPLES_DIR
    folder.mkdir(parents=True)
    for name in ("step_10_sample_1_0_64x64.png", "step_10_sample_0_0_64x64.png", "step_5_sample_0_0_64x64.png",
                 "step_5_sample_0_1_64x64.png",  # a second image of a prompt: not a sample cell
                 "step_5_sample_9_0_64x64.png",  # a prompt this job did not give
                 "step_5_unconditional_0_64x64.png", "step_5_wan_0_64x64.mp4", "notes.txt"):
        (folder / name).write_bytes(b"x")
    found = find_samples(output, {"sample_0": "a red circle", "sample_1": "a blue square"})
    assert [(s.step, s.index, s.prompt) for s in found] == [(5, 0, "a red circle"), (10, 0, "a red circle"),
                                                            (10, 1, "a blue square")]
    assert found[0].path == f"{SAMPLES_DIR}/step_5_sample_0_0_64x64.png"
    assert sorted(samples_by_step(found)) == [5, 10]
    shown = samples_output(found, urls={"samples/step-10/1.png": "https://example.test/1.png"})
    assert shown[1]["images"][1] == {"prompt": "a blue square", "file": f"{SAMPLES_DIR}/step_10_sample_1_0_64x64.png",
                                     "url": "https://example.test/1.png"}
    assert "url" not in shown[0]["images"][0]
    # Every image and video the validation wrote, whatever its prompt; not the text file.
    assert [p.name for p in validation_files(output)] == sorted(p.name for p in folder.iterdir()
                                                                if p.name != "notes.txt")
    assert sample_step("step_5_wan_0_64x64.mp4") == 5 and sample_step("notes.txt") is None
    assert find_samples(tmp_path / "no-output", {}) == [] and validation_files(tmp_path / "no-output") == []
