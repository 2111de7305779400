"""A deterministic train/validation split of a dataset that has none.

Each image's file name is hashed with the seed, ``sha256(f"{seed}:{file_name}")`` (UTF-8,
hex digest), and the images are ranked by that hash (ties, which do not happen in practice,
by name): the first ``round(fraction * N)`` distinct file names (at least 1, and at most
N - 1 so that something is left to train on) are the validation images. The split depends on
the seed and the names only: it is the same on every run and every machine, whatever order
the files are listed in, and an image keeps its side when the seed is kept. Images that share
a file name (in different folders) fall on the same side.

``rpnkit train --val-fraction F`` writes the split to the run folder as ``split.json`` (the
validation file names, the seed, the fraction); ``rpnkit eval --split-from RUN_DIR`` reads it
back to evaluate exactly the held-out images.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from .records import DatasetIndex

SPLIT_FILE = "split.json"
HASH_RULE = 'sha256(f"{seed}:{file_name}"), lowest first'


def split_key(file_name: str, seed: int) -> str:
    """The hash that ranks an image: sha256 of ``"<seed>:<file name>"``, hex."""
    return hashlib.sha256(f"{seed}:{file_name}".encode()).hexdigest()


def validation_count(total: int, fraction: float) -> int:
    """How many of ``total`` distinct names go to validation: ``fraction * total`` rounded
    half up, at least 1 and at most ``total - 1`` (none for a fraction of 0 or one image)."""
    if fraction <= 0 or total < 2:
        return 0
    return min(total - 1, max(1, math.floor(fraction * total + 0.5)))


def validation_names(file_names: Iterable[str], fraction: float, seed: int) -> list[str]:
    """The validation file names among ``file_names`` (sorted): the lowest ``fraction`` by
    ``split_key``."""
    names = sorted(set(file_names))
    ranked = sorted(names, key=lambda n: (split_key(n, seed), n))
    return sorted(ranked[: validation_count(len(names), fraction)])


def _check_fraction(fraction) -> float:
    ok = isinstance(fraction, int | float) and not isinstance(fraction, bool)
    if not (ok and math.isfinite(fraction) and 0 <= fraction < 1):
        raise ValueError(f"val_fraction must be a number in [0, 1), got {fraction!r}")
    return float(fraction)


@dataclass(frozen=True)
class Split:
    """The validation images of a split (file names, sorted), how they were chosen (``seed``,
    ``fraction``) and of what (``source``, the dataset, with its ``total`` images)."""

    validation: tuple[str, ...]
    seed: int
    fraction: float
    total: int
    source: str = ""

    def to_dict(self) -> dict:
        return {
            "rule": HASH_RULE,
            "seed": self.seed,
            "fraction": self.fraction,
            "source": self.source,
            "total_images": self.total,
            "validation_images": len(self.validation),
            "validation": list(self.validation),
        }

    def save(self, run_dir: str | Path) -> Path:
        """Write ``split.json`` in ``run_dir`` (atomically)."""
        path = Path(run_dir) / SPLIT_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        tmp.replace(path)
        return path

    def describe(self) -> str:
        return (
            f"{len(self.validation)} of {self.total} images held out for validation "
            f"(fraction {self.fraction:g}, seed {self.seed})"
        )


def make_split(index: DatasetIndex, fraction: float, seed: int) -> Split:
    """The split of ``index``'s images (see the module)."""
    fraction = _check_fraction(fraction)
    names = [r.file_name for r in index.records]
    chosen = validation_names(names, fraction, seed)
    if fraction > 0 and not chosen:
        raise ValueError(
            f"{index.source}: cannot hold out a validation fraction of {fraction:g} from "
            f"{len(index.records)} image(s); give --val-data"
        )
    return Split(tuple(chosen), int(seed), fraction, len(index.records), index.source)


def _part(index: DatasetIndex, records: list, what: str) -> DatasetIndex:
    """Part of an index: its records, classes and source (named), no issues of its own (the
    whole index reported them)."""
    return replace(
        index,
        records=records,
        source=f"{index.source} [{what}]",
        issues=[],
        skipped_images=0,
        skipped_annotations=0,
        clipped=[],
    )


def apply_split(index: DatasetIndex, split: Split) -> tuple[DatasetIndex, DatasetIndex]:
    """(training part, validation part) of ``index``; both keep its class names."""
    held = set(split.validation)
    train = [r for r in index.records if r.file_name not in held]
    val = [r for r in index.records if r.file_name in held]
    return _part(index, train, "training part"), _part(index, val, "held out")


def read_split(path: str | Path) -> Split:
    """A split written by ``rpnkit train --val-fraction``: a run folder or its split.json."""
    path = Path(path)
    if path.is_dir():
        path = path / SPLIT_FILE
    if not path.is_file():
        raise ValueError(f"{path}: no split file (written by rpnkit train --val-fraction)")
    try:
        data = json.loads(path.read_text())
        names = data["validation"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise TypeError("'validation' must be a list of file names")
        return Split(
            tuple(names),
            int(data["seed"]),
            float(data["fraction"]),
            int(data.get("total_images", 0)),
            str(data.get("source", "")),
        )
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: not a readable split file ({err})") from err


def held_out(index: DatasetIndex, split: Split, where: str = "the split") -> DatasetIndex:
    """The images of ``index`` that ``split`` held out for validation; an error when there
    are none, and a note in ``issues`` for held-out names the index lacks."""
    _, val = apply_split(index, split)
    if not val.records:
        raise ValueError(
            f"{index.source}: none of the {len(split.validation)} images held out by {where} "
            f"is in this dataset (first: {split.validation[0] if split.validation else None!r})"
        )
    present = {r.file_name for r in val.records}
    missing = [n for n in split.validation if n not in present]
    if missing:
        val.issues.append(
            f"{where}: {len(missing)} held-out image(s) are not in {index.source} (or could "
            f"not be read; first: {missing[0]!r})"
        )
    return val
