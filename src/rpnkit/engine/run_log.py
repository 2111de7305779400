"""The training log of a run: ``train_log.csv`` and TensorBoard events, written by rank 0.

The CSV's columns are the step, the learning rate, the total loss, every loss term the model
returned (its own names, sorted), the gradient norm before clipping and the throughput; the
header is written with the first row, so that the columns follow the model, not a guess.
"""

from __future__ import annotations

import csv
from pathlib import Path


class RunLog:
    def __init__(self, out_dir: Path, *, append: bool) -> None:
        self.path = out_dir / "train_log.csv"
        self.append = append and self.path.exists()
        self._file = None
        self._writer = None
        self.tensorboard = _tensorboard(out_dir)

    def write(self, row: dict[str, float | str]) -> None:
        if self._writer is None:
            self._file = self.path.open("a" if self.append else "w", newline="")
            fields = ["step", "lr", "loss", *sorted(k for k in row if k.startswith("loss_"))]
            fields += ["grad_norm", "images_per_s"]
            self._writer = csv.DictWriter(self._file, fieldnames=fields, extrasaction="ignore")
            if not self.append:
                self._writer.writeheader()
        self._writer.writerow(row)
        self._file.flush()
        if self.tensorboard is not None:
            for key, value in row.items():
                if key != "step" and value != "":
                    self.tensorboard.add_scalar(f"train/{key}", value, row["step"])

    def write_evaluation(self, metrics: dict, step: int) -> None:
        if self.tensorboard is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)):  # not the per-class tables
                    self.tensorboard.add_scalar(f"eval/{key}", value, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _tensorboard(out_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: the CSV log remains
        return None
    return SummaryWriter(str(out_dir / "tensorboard"))
