"""The run's TensorBoard event files (core/training/tensorboard.py): the framing TensorBoard reads, checked against
the CRC-32C standard value and read back by TensorBoard itself (the trainer env's)."""

from __future__ import annotations

import json
import subprocess

import pytest

from core.events import TrainingProgress
from core.training.tensorboard import TensorBoardLog, crc32c

READ_SCALARS = """
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
log = EventAccumulator(sys.argv[1]); log.Reload()
print(json.dumps({tag: [(e.step, e.value) for e in log.Scalars(tag)] for tag in log.Tags()["scalars"]}))
"""


def test_crc32c_is_the_castagnoli_checksum():
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value of CRC-32C


@pytest.mark.trainer_env
def test_tensorboard_reads_each_steps_loss_and_learning_rate(tmp_path, settings):
    log = TensorBoardLog(tmp_path / "runs" / "my-lora", clock=lambda: 1_700_000_000.0)
    log.on_event(TrainingProgress(step=1, total_steps=3, loss=None))  # no loss yet: nothing written
    assert log.path is None
    for step, loss in ((1, 0.5), (2, 0.25), (3, 0.125)):
        log.on_event(TrainingProgress(step=step, total_steps=3, loss=loss, learning_rate=1e-4))
    assert log.path is not None and log.path.name.startswith("events.out.tfevents.1700000000.")
    read = subprocess.run([str(settings.trainer_python), "-P", "-c", READ_SCALARS, str(log.path.parent)],
                          capture_output=True, text=True, timeout=120, check=True)
    scalars = json.loads(read.stdout.strip().splitlines()[-1])
    assert scalars["train/loss"] == [[1, 0.5], [2, 0.25], [3, 0.125]]
    assert [step for step, _ in scalars["train/learning_rate"]] == [1, 2, 3]
    assert scalars["train/learning_rate"][0][1] == pytest.approx(1e-4)
