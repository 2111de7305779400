"""A deterministic train/validation split of a dataset that has none.

Each image is named by its file name, or, where other images of the dataset share that file
name (``a/img.jpg``, ``b/img.jpg``), by the shortest trailing part of its path that no other
image has (``image_names``). Each name is hashed with the seed, ``sha256(f"{seed}:{name}")``
(UTF-8, hex digest), and the images are ranked by that hash (ties, which do not happen in
practice, by name): the first ``round(fraction * N)`` of the N images (at least 1, and at
most N - 1 so that something is left to train on) are the validation images. The split
depends on the seed and the names only: it is the same on every run and every machine,
whatever order the files are listed in, and an image keeps its side when the seed is kept.

``rpnkit train --val-fraction F`` writes the split to the run folder as ``split.json`` (the
validation images' names, the seed, the fraction); ``rpnkit eval --split-from RUN_DIR`` reads
it back to evaluate exactly the held-out images. A split.json of rpnkit before these names
holds file names only: one that several images share means all of them (what that version
held out), said in one line.
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from .records import DatasetIndex, Record

SPLIT_FILE = "split.json"
HASH_RULE = (
    'sha256(f"{seed}:{name}"), lowest first; name: the file name, or the shortest trailing '
    "part of the path that no other image has"
)


def _path_parts(path: str | Path) -> tuple[str, ...]:
    """The parts of a path as written in any file (``\\`` read as ``/``; ``.`` dropped), on
    every system alike (``posixpath``: Windows' ``normpath`` would put the ``\\`` back)."""
    return PurePosixPath(posixpath.normpath(str(path).replace("\\", "/"))).parts


class ImageNames:
    """The images of a dataset (its ``records``) by name: each one's name unique in the
    dataset (``names``, see ``image_names``), and which images a name given elsewhere means
    (``find``: a file name, a path relative to some folder, a whole path)."""

    def __init__(self, records: Sequence[Record]) -> None:
        self._parts = [_path_parts(record.path) for record in records]
        self._by_ending: dict[int, dict[tuple[str, ...], list[int]]] = {}
        self._found: dict[str, list[int]] = {}
        self.names = [self._unique_name(parts) for parts in self._parts]

    def _ending(self, depth: int) -> dict[tuple[str, ...], list[int]]:
        """The images by the last ``depth`` parts of their paths (built when first asked)."""
        if depth not in self._by_ending:
            table: dict[tuple[str, ...], list[int]] = {}
            for i, parts in enumerate(self._parts):
                if len(parts) >= depth:
                    table.setdefault(parts[-depth:], []).append(i)
            self._by_ending[depth] = table
        return self._by_ending[depth]

    def _unique_name(self, parts: tuple[str, ...]) -> str:
        depth = 1
        while depth < len(parts) and len(self._ending(depth)[parts[-depth:]]) > 1:
            depth += 1
        return str(PurePosixPath(*parts[-depth:]))

    def find(self, name: str) -> list[int]:
        """The positions of the images ``name`` means: those whose path ends with the longest
        trailing part of ``name`` that any image's path ends with (``a/img.jpg`` by its path,
        ``img.jpg`` by its file name); several when that part is shared, none when no image
        has even the file name."""
        if name not in self._found:
            parts, found = _path_parts(name), []
            for depth in range(len(parts), 0, -1):
                found = self._ending(depth).get(parts[-depth:], [])
                if found:
                    break
            self._found[name] = found
        return self._found[name]


def image_names(records: Sequence[Record]) -> list[str]:
    """Each record's name unique among ``records``: its file name when no other image has
    it, else the shortest trailing part of its path that only it has (``a/img.jpg`` and
    ``b/img.jpg``), its parts joined by ``/``."""
    return ImageNames(records).names


def split_key(name: str, seed: int) -> str:
    """The hash that ranks an image: sha256 of ``"<seed>:<name>"``, hex."""
    return hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()


def validation_count(total: int, fraction: float) -> int:
    """How many of ``total`` images go to validation: ``fraction * total`` rounded half up,
    at least 1 and at most ``total - 1`` (none for a fraction of 0 or one image)."""
    if fraction <= 0 or total < 2:
        return 0
    return min(total - 1, max(1, math.floor(fraction * total + 0.5)))


def validation_names(names: Iterable[str], fraction: float, seed: int) -> list[str]:
    """The validation names among ``names`` (the images' unique names, ``image_names``;
    sorted): the lowest ``fraction`` by ``split_key``."""
    names = sorted(set(names))
    ranked = sorted(names, key=lambda n: (split_key(n, seed), n))
    return sorted(ranked[: validation_count(len(names), fraction)])


def _check_fraction(fraction) -> float:
    ok = isinstance(fraction, int | float) and not isinstance(fraction, bool)
    if not (ok and math.isfinite(fraction) and 0 <= fraction < 1):
        raise ValueError(f"val_fraction must be a number in [0, 1), got {fraction!r}")
    return float(fraction)


@dataclass(frozen=True)
class Split:
    """The validation images of a split (their names unique in the dataset, ``image_names``,
    sorted), how they were chosen (``seed``, ``fraction``) and of what (``source``, the
    dataset, with its ``total`` images)."""

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
    chosen = validation_names(image_names(index.records), fraction, seed)
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


@dataclass
class _HeldOut:
    """The positions of the images a split's names mean in an index; its names no image has
    (``missing``), and those that several images share (``shared``: name -> their names)."""

    positions: set[int]
    missing: list[str]
    shared: dict[str, list[str]]


def _held_positions(index: DatasetIndex, split: Split) -> _HeldOut:
    names = ImageNames(index.records)
    held = _HeldOut(set(), [], {})
    for name in split.validation:
        found = names.find(name)
        held.positions.update(found)
        if not found:
            held.missing.append(name)
        elif len(found) > 1:  # a file name of an earlier split.json: all of them, as it held
            held.shared[name] = [names.names[i] for i in found]
    return held


def apply_split(index: DatasetIndex, split: Split) -> tuple[DatasetIndex, DatasetIndex]:
    """(training part, validation part) of ``index``; both keep its class names."""
    return _apply(index, _held_positions(index, split))


def _apply(index: DatasetIndex, held: _HeldOut) -> tuple[DatasetIndex, DatasetIndex]:
    train = [r for i, r in enumerate(index.records) if i not in held.positions]
    val = [r for i, r in enumerate(index.records) if i in held.positions]
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
            raise TypeError("'validation' must be a list of image names")
        return Split(
            tuple(names),
            int(data["seed"]),
            float(data["fraction"]),
            int(data.get("total_images", 0)),
            str(data.get("source", "")),
        )
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: not a readable split file ({err})") from err


def _shared_line(where: str, source: str, shared: dict[str, list[str]]) -> str:
    """One line for the names of a split that several images share."""
    (name, found), more = next(iter(shared.items())), len(shared) - 1
    line = f"{where}: file name {name!r} names {len(found)} images of {source} "
    line += f"({', '.join(found)})" + (f", and {more} more such file name(s)" if more else "")
    return line + (
        ": all of them evaluated (an earlier rpnkit wrote this split.json, and held out every "
        "image of a shared file name)"
    )


def held_out(index: DatasetIndex, split: Split, where: str = "the split") -> DatasetIndex:
    """The images of ``index`` that ``split`` held out for validation; an error when there
    are none, and a note in ``issues`` for held-out names the index lacks, and one for names
    that several of its images share (an earlier split.json's file names: all of them)."""
    held = _held_positions(index, split)
    _, val = _apply(index, held)
    if not val.records:
        raise ValueError(
            f"{index.source}: none of the {len(split.validation)} images held out by {where} "
            f"is in this dataset (first: {split.validation[0] if split.validation else None!r})"
        )
    if held.shared:
        val.issues.append(_shared_line(where, index.source, held.shared))
    if held.missing:
        val.issues.append(
            f"{where}: {len(held.missing)} held-out image(s) are not in {index.source} (or "
            f"could not be read; first: {held.missing[0]!r})"
        )
    return val
