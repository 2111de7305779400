"""The rules of resuming a run (``fit(resume=...)``, ``rpnkit train --resume``).

A resumed run keeps its model, its data and training settings (which images, at what size,
the optimizer and its schedule, the seed: ``run_settings``, kept in its checkpoints) and its
time budget unless given another. It may change what ``FREE_ON_RESUME`` frees: how long and
how it runs, and what it is validated on. A checkpoint resumed in its folder goes on with that
folder's run only if the folder's checkpoint is of the same run (``check_own_run``); a
training set that changed since the checkpoint is said (``note_changed_data``), not refused.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from ..config import config_to_dict
from ..data import DataConfig, DataError, DatasetIndex, detect_format
from ..data.config import SETTINGS_VERSION
from ..data.records import DataNote, caller_of_package
from .checkpoint import ModelSpec, RunState, read_header, read_run_state, upgraded_settings
from .distributed import world_size
from .trainer import TrainConfig

FREE_ON_RESUME = {
    "train": {"steps", "num_workers", "log_every", "eval_every", "checkpoint_every", "compile",
              "channels_last", "decode_on_device"},
    "data": {"val_data", "val_split", "val_split_file", "val_images", "strict"},
}  # fmt: skip
"""What a resumed run may change: how long and how it runs, and what it is validated on; the
rest (which images, at what size, the optimizer and its schedule, the seed) is the run's."""


def run_settings(data: DataConfig, train: TrainConfig) -> dict:
    """A run's data and training settings as plain dicts, as its checkpoints keep them (the
    files it reads as absolute paths: the same files however they are named)."""
    data_settings = config_to_dict(data)
    for key in ("data", "split_file", "images", "class_map"):
        if data_settings[key] is not None:
            data_settings[key] = os.path.realpath(data_settings[key])
    return {"version": SETTINGS_VERSION, "data": data_settings, "train": config_to_dict(train)}


def _as_read(settings: dict) -> dict:
    """``settings`` with the training split that a COCO or YOLO dataset reads when none is
    named (``train``) written out, so that --split train and no --split are one setting for
    them (not for VOC and CSV, where no split is the whole set)."""
    data = settings.get("data")
    if not isinstance(data, dict) or data.get("split") is not None or not data.get("data"):
        return settings
    try:
        fmt = data.get("format") or detect_format(data["data"])
    except (DataError, OSError):
        return settings
    return {**settings, "data": {**data, "split": "train"}} if fmt in ("coco", "yolo") else settings


def data_counts(index: DatasetIndex) -> dict[str, int]:
    """The images and boxes a run trains on, as its checkpoints keep them (``"read"`` in
    its settings): a resumed run says when its data changed since."""
    return {"images": len(index.records), "boxes": sum(len(r.labels) for r in index.records)}


def note_changed_data(resume, index: DatasetIndex) -> None:
    """A DataNote when a resumed run's training data is not what its checkpoint was trained
    on (files added, removed or relabelled since; the run goes on with them as they are)."""
    saved = (saved_settings(resume) or {}).get("read") if resume is not None else None
    now = data_counts(index)
    if saved and saved != now:
        changed = "; ".join(f"{k} {saved.get(k)} -> {v}" for k, v in now.items())
        warnings.warn(
            f"{resume}: the training data changed since this checkpoint ({changed}): the run "
            "goes on with the data as it is now",
            DataNote,
            stacklevel=caller_of_package(),
        )


def saved_settings(checkpoint: str | Path) -> dict | None:
    """The data and training settings (``run_settings``) a checkpoint of ``fit`` keeps: a
    resumed run's own (None for a checkpoint that keeps none: older ones, ``Trainer`` alone)."""
    return upgraded_settings(read_run_state(checkpoint).settings) or None


def changed_settings(saved: dict, now: dict) -> list[tuple[str, object, object]]:
    """The settings a resumed run keeps (not in ``FREE_ON_RESUME``) that differ between a
    run's ``saved`` settings and those of ``now``, as (``part.key``, saved value, value now),
    in ``now``'s order. A part or setting only one of them records is not compared: a
    ``Trainer`` alone may keep some parts only, and another version other settings."""
    changed = []
    for part, values in now.items():
        if part not in FREE_ON_RESUME:  # "read": what the run read, not a setting
            continue
        before = saved.get(part) or {}
        changed += [
            (f"{part}.{key}", before[key], value)
            for key, value in (values or {}).items()
            if key not in FREE_ON_RESUME[part] and key in before and before[key] != value
        ]
    return changed


def check_resumed_settings(resume: str | Path, settings: dict) -> None:
    """A ValueError listing the settings a resumed run would change that ``FREE_ON_RESUME``
    does not free (resume continues a run exactly: a new learning rate or held-out split
    would not be applied, or would leak training images into validation). Checkpoints that
    keep no settings (older ones, ``Trainer`` alone) are not checked."""
    saved = saved_settings(resume)
    if saved is None:
        return
    pairs = changed_settings(_as_read(saved), _as_read(settings))
    changed = [f"{name} {old!r} -> {new!r}" for name, old, new in pairs]
    if changed:
        raise ValueError(
            f"{resume}: a resumed run keeps its own settings, and these differ: "
            f"{'; '.join(changed)} (give the run's, or start a new run to change them)"
        )


def check_own_run(resume, out: Path) -> None:
    """A checkpoint resumed in its folder goes on with that folder's run: refused when the
    folder's own ``checkpoint.safetensors`` is another run's (another model, or settings that
    a resumed run keeps), which going on there would overwrite. An unreadable one is no run
    to keep (resuming a copy is how it is recovered)."""
    own = out / "checkpoint.safetensors"
    if not own.is_file() or own.resolve() == Path(resume).resolve():
        return
    try:
        theirs = read_header(own)
    except ValueError:
        return
    if not _same_run(theirs, read_header(resume)):
        raise ValueError(
            f"{resume}: its folder holds another run ({own} has another model or settings), "
            "which going on there would overwrite: give --out (out=) a new folder for it"
        )


def _same_run(a: dict, b: dict) -> bool:
    """Whether two checkpoint headers are of one run: the same model (as specs, whatever
    version wrote them) and the same settings that a resumed run keeps (``changed_settings``:
    ``FREE_ON_RESUME`` left out; a setting only one of them records, from another version,
    not compared)."""
    specs = [ModelSpec.from_dict(h["config"]).to_dict() if h.get("config") else {} for h in (a, b)]
    if specs[0] != specs[1]:
        return False
    settings = [RunState.from_json(h.get("extra")).settings for h in (a, b)]
    return not changed_settings(*(_as_read(upgraded_settings(x) or {}) for x in settings))


def resumed_budget(resume, seconds: float | None) -> float | None:
    """The time budget of a run: the one given (0: none), else a resumed checkpoint's."""
    if seconds == 0:
        return None  # a resumed run's budget dropped
    if resume is None or seconds is not None:
        return seconds
    saved = read_run_state(resume).time_budget_s
    if saved is not None and world_size() > 1:
        raise ValueError(
            f"{resume}: its run has a time budget ({saved:g} s), which is for one process "
            "only: resume it without torchrun, or drop it with --time-budget 0 (time_budget_s=0)"
        )
    return saved
