"""The training log of a run: ``train_log.csv`` and TensorBoard events, written by rank 0.

The CSV's columns are the step (steps done: the first is 1, as messages, checkpoints and
validations count them), the learning rate, the total loss, every loss term the model
returned (its own names, sorted), the gradient norm before clipping and the throughput; the
header is written with the first row, so that the columns follow the model, not a guess.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path


class RunLog:
    """``resume_at``: the steps done at the checkpoint a resumed run starts from; the log
    written before keeps its rows up to that step only (those after the checkpoint are logged
    again, once)."""

    def __init__(self, out_dir: Path, *, resume_at: int | None = None) -> None:
        self.path = out_dir / "train_log.csv"
        self.append = resume_at is not None and self.path.exists()
        if self.append:
            _truncate(self.path, resume_at)
        self._file = None
        self._writer = None
        # the validation of the checkpoint's own weights (kept in the events: not purged)
        self.kept = logged_validations(out_dir).get(resume_at, {}) if resume_at is not None else {}
        self.tensorboard = _tensorboard(out_dir, resume_at)

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


def logged_validations(out_dir: Path) -> dict[int, dict[str, float]]:
    """The ``eval/`` scalars of a run's TensorBoard events by step (``write_evaluation``:
    they are logged nowhere else); empty without events or without the tensorboard package."""
    events = Path(out_dir) / "tensorboard"
    if not events.is_dir():
        return {}
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:  # then the run wrote no events either
        return {}
    accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})  # 0: keep all
    quiet = logging.getLogger("tensorboard")  # a resumed run's purge is logged as a restart
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        accumulator.Reload()
    finally:
        quiet.setLevel(level)
    history: dict[int, dict[str, float]] = {}
    for tag in accumulator.Tags().get("scalars", []):
        if tag.startswith("eval/"):
            for event in accumulator.Scalars(tag):
                history.setdefault(event.step, {})[tag.removeprefix("eval/")] = event.value
    return history


def _tensorboard(out_dir: Path, resume_at: int | None):
    """The event writer; a resumed run purges the steps after ``resume_at`` (those written
    after the checkpoint it resumes), as the CSV log is cut: scalars are at steps done, so
    the validation at ``resume_at``, of the checkpoint's own weights, stays."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: the CSV log remains
        return None
    purge = None if resume_at is None else resume_at + 1
    return SummaryWriter(str(out_dir / "tensorboard"), purge_step=purge)


def _truncate(path: Path, last_step: int) -> None:
    """Keep the header and the rows of steps up to ``last_step``, rewritten atomically. A log
    of an earlier version, which numbered steps from 0 (a row of step 0 tells it), is
    renumbered as steps done first, so that no step is kept twice under two numbers."""
    with path.open(newline="") as f:
        header, *rows = list(csv.reader(f)) or [[]]
    rows = [r for r in rows if r and r[0].isdigit()]
    if any(r[0] == "0" for r in rows):
        rows = [[str(int(r[0]) + 1), *r[1:]] for r in rows]
    kept = [header] + [r for r in rows if int(r[0]) <= last_step]
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        csv.writer(f).writerows(kept)
    tmp.replace(path)
