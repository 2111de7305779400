"""The folder a training run writes (``fit``): a new run never mixes with an earlier one's files.

A folder holds a run when it has a checkpoint, a training log, a run record or the first step
of the alternating schedule (``RUN_MARKERS``). A new run into such a folder (or a run resumed
into another folder than its checkpoint's) is refused unless ``overwrite``; before it starts
(its data read), the entries rpnkit writes in a run folder
(``RUN_ENTRIES``, nothing else) are removed, so that no split, metrics, TensorBoard events or
step of another run are left to be read as this one's. Without a folder named, a run goes to
``runs/train``, or the first of ``runs/train2``, ``runs/train3``... that holds no run (as
YOLO's tools number theirs); ``--resume`` continues in its checkpoint's folder.

The other files and folders that commands write (``output_file``, ``output_folder``) follow
one rule, checked before any work: a missing folder is made; a folder where a file is to be
written, or a file where a folder is, is a ``ValueError`` in one line naming both."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from ..data.splits import SPLIT_FILE
from .distributed import world_size
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


def file_in_the_way(folder: str | Path) -> Path | None:
    """The file that stands where ``folder``, or the nearest of its parents that exists, should
    be a folder; None when ``folder`` is one or can be made."""
    folder = Path(folder)
    for entry in (folder, *folder.parents):
        if entry.exists():
            return None if entry.is_dir() else entry
    return None


def check_folder(folder: str | Path, *, name: str | None = None, to: str = "to write in") -> Path:
    """``folder`` as a folder to write in (made now or later): a file in its place, or in the
    place of one of its parents, is a ValueError naming ``name`` (how the folder was given,
    e.g. ``--plots out``; default ``folder``) and that file; ``to``: what the folder is for."""
    folder = Path(folder)
    named = name if name is not None else folder
    blocking = file_in_the_way(folder)
    if blocking == folder:
        raise ValueError(f"{named}: is a file, not a folder {to}")
    if blocking is not None:
        raise ValueError(f"{named}: {blocking} is a file, not a folder")
    return folder


def output_folder(folder: str | Path, *, name: str | None = None, to: str = "to write in") -> Path:
    """``folder`` made (with its parents) before any work, for a command to write in; a file
    in the way (``check_folder``) or a folder that cannot be made is a one-line ValueError."""
    folder = check_folder(folder, name=name, to=to)
    _make(folder, name if name is not None else folder)
    return folder


def output_file(path: str | Path, *, what: str) -> Path:
    """``path`` ready for a ``what`` file (``JSON``, ``PNG``...) to be written there after the
    work: its missing folders made now; a folder at ``path``, or a file in the place of one of
    its folders, is a one-line ValueError, said before the work rather than after it."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a folder; give the {what} file to write")
    if (blocking := file_in_the_way(path.parent)) is not None:
        raise ValueError(f"{path}: {blocking} is a file, not a folder")
    _make(path.parent, path)
    return path


def _make(folder: Path, named) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # no permission, a read-only disk
        raise ValueError(f"{named}: cannot make the folder {folder} ({err.strerror})") from err


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
