"""`--tensorboard`: each unit's per-epoch scalars (lr, train loss/accuracy, valid and test
metrics) for TensorBoard, in `<run>/tb/<unit>/` (e.g. `runs/X/tb/fold03-seed2/`).

An optional extra (`pip install 'swrr[tb]'`). The unit folders' log.csv/log.jsonl stay the record:
these event files only mirror them for people who already watch runs in TensorBoard. They are
written after each epoch's checkpoint, so a kill between the two can leave that one epoch out
of TensorBoard (never out of the CSV logs).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict

from swrr.train.config import TrainError


def require_tensorboard() -> None:
    """Raises TrainError with the install command when TensorBoard's writer cannot be imported."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise TrainError("--tensorboard needs the tensorboard package, which is not installed: "
                         "pip install 'swrr[tb]' (or pip install tensorboard)") from None


def scalar_tag(key: str) -> str:
    """A log.jsonl column as a TensorBoard tag: valid_ua -> valid/ua, train_loss -> train/loss, lr -> lr."""
    prefix, _, rest = key.partition("_")
    return f"{prefix}/{rest}" if rest and prefix in ("train", "valid", "test") else key


class EpochScalars:
    """Writes one epoch record of a unit (a row of its log.jsonl) per `add`, at step = epoch."""

    def __init__(self, folder: Path):
        """`folder`: the unit's TensorBoard folder (swrr_core/rundir.py: UnitFolder.tensorboard)."""
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder))

    def add(self, record: Dict[str, Any]) -> None:
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(scalar_tag(key), value, record["epoch"])
        self.writer.flush()  # an epoch is on disk when the next one starts

    def close(self) -> None:
        self.writer.close()
