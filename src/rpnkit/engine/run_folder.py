"""The folder a training run writes (``fit``): a new run never mixes with an earlier one's files.

A folder holds a run when it has a checkpoint, a training log, a run record or the first step
of the alternating schedule (``RUN_MARKERS``). A new run into such a folder (or a run resumed
into another folder than its checkpoint's) is refused unless ``overwrite``; before it starts
(its data read), the entries rpnkit writes in a run folder
(``RUN_ENTRIES``, nothing else) are removed, so that no split, metrics, TensorBoard events or
step of another run are left to be read as this one's. Without a folder named, a run goes to
``runs/train``, or the first of ``runs/train2``, ``runs/train3``... that holds no run (as
YOLO's tools number theirs); ``--resume`` continues in its checkpoint's folder.


The other files and folders that commands write follow ``paths``' rule."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from ..data.splits import SPLIT_FILE
from .distributed import world_size
from .paths import check_folder
from .run_record import RECORD_FILE

DEFAULT_RUNS = Path("runs") / "train"
RUN_MARKERS = ("checkpoint.safetensors", "train_log.csv", RECORD_FILE, "step1_rpn")
RUN_ENTRIES = (
    *RUN_MARKERS,
    "metrics.json",
    "best.safetensors",
    SPLIT_FILE,
    "tensorboard",
    "report.html",
    "step1_proposals.json",
    "step2_detector",
    "step3_rpn",
    "step3_proposals.json",
    "step4_detector",
)


def run_markers(folder: str | Path) -> list[str]:
    """The entries of ``folder`` that show it holds a run (none: it holds no run)."""
    return [name for name in RUN_MARKERS if (Path(folder) / name).exists()]


def run_folder(out: str | Path | None, resume: str | Path | None) -> Path:
    """Where a run writes: ``out``; else the resumed checkpoint's folder; else the first of
    ``runs/train``, ``runs/train2``... that holds no run (under torchrun, where the processes
    could choose apart, ``runs/train`` itself). A file in the way of ``out`` (``out`` itself,
    or one of its parents) is a ValueError, before any data is read."""
    if out is not None:
        return check_folder(out, to="to write the run in")
    if resume is not None:
        return Path(resume).parent
    if world_size() > 1:
        return DEFAULT_RUNS
    folder, k = DEFAULT_RUNS, 1
    while run_markers(folder):
        k += 1
        folder = DEFAULT_RUNS.with_name(f"{DEFAULT_RUNS.name}{k}")
    return folder


def clear_for_new_run(
    folder: Path, *, overwrite: bool, keep: Iterable[str | Path] = (), remove: bool = True
) -> None:
    """Refuse a new run into a ``folder`` that holds one (a ``ValueError`` saying what to do)
    unless ``overwrite``; then remove the entries rpnkit writes there, but for the files in
    ``keep`` (inputs the new run reads, e.g. an earlier run's step-1 proposals). ``remove``
    False only checks (the other processes under torchrun: rank 0 removes)."""
    found = run_markers(folder)
    if found and not overwrite:
        checkpoint = folder / "checkpoint.safetensors"
        resume = (
            f"continue it with --resume {checkpoint} (resume=), " if checkpoint.is_file() else ""
        )
        raise ValueError(
            f"{folder} holds a run already ({', '.join(found)}): {resume}write elsewhere with "
            "--out (out=), or replace it with --overwrite (overwrite=True)"
        )
    if not remove:
        return
    kept = {Path(path).resolve() for path in keep}
    for name in RUN_ENTRIES:
        entry = folder / name
        if entry.resolve() in kept or not (entry.exists() or entry.is_symlink()):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
