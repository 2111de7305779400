"""Where a run's images and boxes come from and how they are sized: one typed config for the
training set, the validation set and their shared resize and flip settings."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real

from ..config import plain_fields
from ..modeling.sizes import MIN_MAX_SIZE
from .class_subset import only_classes, seen_class_names
from .dataset import DetectionDataset
from .readers import read_dataset
from .records import DatasetIndex
from .tiling import MIN_TILE, TileConfig
from .transforms import Compose, HorizontalFlip, eval_transforms, train_transforms

FORMATS = (None, "coco", "voc", "yolo", "csv")


def _non_empty_text(value) -> bool:
    """A non-empty string or path (a dataset, a split name, a split file)."""
    return isinstance(value, (str, os.PathLike)) and bool(str(value))


def _require(config, name: str, rule: str, ok: bool) -> None:
    if not ok:
        raise ValueError(
            f"{type(config).__name__}.{name} must be {rule}, got {getattr(config, name)!r}"
        )


SETTINGS_VERSION = 2
"""The version of stored data settings (a run's record and its checkpoints): from 2 on a split
not asked is kept as None; before, as ``"train"`` and ``"val"``, which read a VOC or CSV
dataset whole as None now does (``stored_data_fields``)."""


def stored_data_fields(fields: dict, version) -> dict:
    """A ``DataConfig``'s stored ``fields`` as this version reads them: settings stored
    before ``SETTINGS_VERSION`` 2 get their default split names back as None (what they
    meant: ``train``/``val`` of a COCO or YOLO dataset, a VOC or CSV dataset whole)."""
    if not isinstance(fields, dict) or (isinstance(version, int) and version >= 2):
        return fields
    defaults = {"split": "train", "val_split": "val"}
    return {k: None if k in defaults and v == defaults[k] else v for k, v in fields.items()}


@dataclass(frozen=True)
class DataConfig:
    """``data`` and ``val_data`` are dataset paths (COCO JSON, VOC folder, YOLO data.yaml, CSV
    of boxes; format detected unless ``format`` is given); ``split`` and ``val_split`` name a
    COCO JSON, a YOLO key or a VOC ImageSets file (``readers.read_dataset``; None: COCO and
    YOLO read ``train`` and ``val``, VOC and CSV whole), ``split_file`` selects images of any
    format by file stem (COCO: or integer image id); ``images`` and ``val_images`` say
    where their images are when it is not the usual place, ``class_map`` is a CSV dataset's
    ``class_name,id`` file. Without ``val_data``, ``val_fraction`` holds out that fraction of
    ``data`` for validation (``data.splits``: by a hash of each image's name unique in the
    dataset with the training seed). Images are resized to shorter side ``short_side`` with
    the longer at most ``max_size``, and flipped with probability ``flip`` in training. Bad
    samples are skipped with a warning, or stop the run with ``strict``.

    ``tile_size``: training images larger than this on either side are cut to a random
    ``tile_size`` x ``tile_size`` tile at native resolution instead of being resized (large
    images with small objects; ``data.tiling``), keeping the boxes of which at least
    ``tile_min_visible`` of the area lies in the tile. Validation images are not tiled.

    ``classes``: train on the boxes of these classes only (names in the dataset's naming;
    ``"voc"``, or a comma-separated string, is expanded by ``seen_class_names``), every other
    object unlabelled, as OLN's novel-class protocol trains; the run's classes are then these,
    in this order, and the validation set keeps the same classes' boxes
    (``data.class_subset.only_classes``). None: every class."""

    data: str
    split: str | None = None
    split_file: str | None = None
    val_data: str | None = None
    val_split: str | None = None
    val_split_file: str | None = None
    format: str | None = None
    short_side: int = 800
    max_size: int = 1333
    flip: float = 0.5
    strict: bool = False
    images: str | None = None
    val_images: str | None = None
    class_map: str | None = None
    val_fraction: float | None = None
    tile_size: int | None = None
    tile_min_visible: float = 0.5
    classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        plain_fields(self)  # paths and numpy numbers given: strings and Python numbers
        self._check_classes()
        _require(self, "data", "a non-empty string", _non_empty_text(self.data))
        for name in (
            "split",
            "val_split",
            "split_file",
            "val_data",
            "val_split_file",
            "images",
            "val_images",
            "class_map",
        ):
            value = getattr(self, name)
            _require(
                self, name, "None or a non-empty string", value is None or _non_empty_text(value)
            )
        _require(self, "format", "None, 'coco', 'voc', 'yolo' or 'csv'", self.format in FORMATS)
        for name, least in (("short_side", 1), ("max_size", MIN_MAX_SIZE)):
            value = getattr(self, name)
            ok = isinstance(value, Integral) and not isinstance(value, bool) and value >= least
            _require(self, name, f"an integer >= {least}", ok)
        flip = self.flip
        ok = isinstance(flip, Real) and not isinstance(flip, bool) and math.isfinite(flip)
        _require(self, "flip", "a probability in [0, 1]", ok and 0 <= flip <= 1)
        _require(self, "strict", "True or False", isinstance(self.strict, bool))
        fraction = self.val_fraction
        ok = isinstance(fraction, Real) and not isinstance(fraction, bool)
        ok = fraction is None or (ok and math.isfinite(fraction) and 0 <= fraction < 1)
        _require(self, "val_fraction", "None or a fraction in [0, 1)", ok)
        if self.val_fraction and self.val_data is not None:
            raise ValueError(
                "DataConfig: val_fraction and val_data are mutually exclusive (hold out part "
                f"of the training data, or give a validation set), got val_fraction="
                f"{self.val_fraction!r} and val_data={self.val_data!r}"
            )
        size = self.tile_size
        ok = isinstance(size, Integral) and not isinstance(size, bool) and size >= MIN_TILE
        _require(self, "tile_size", f"None or an integer >= {MIN_TILE}", size is None or ok)
        visible = self.tile_min_visible
        ok = isinstance(visible, Real) and not isinstance(visible, bool)
        ok = ok and math.isfinite(visible) and 0 < visible <= 1
        _require(self, "tile_min_visible", "a fraction in (0, 1]", ok)

    def _check_classes(self) -> None:
        """``classes`` as a tuple of distinct names ("voc" and comma-separated text expanded)."""
        names = self.classes
        if names is None:
            return
        ok = isinstance(names, str) or (
            isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names)
        )
        ok = ok and any(n.strip() for n in (names.split(",") if isinstance(names, str) else names))
        _require(self, "classes", "None or class names (or 'voc')", ok)
        object.__setattr__(self, "classes", seen_class_names(names))  # frozen: normalised once

    def tiling(self) -> TileConfig | None:
        """The tiles of training images (``tile_size``, ``tile_min_visible``), or None."""
        if self.tile_size is None:
            return None
        return TileConfig(size=self.tile_size, min_visible=self.tile_min_visible)

    def read_train(self) -> DatasetIndex:
        """The training set; with ``classes``, their boxes only. No box at all (of those
        classes) is an error, as is a name the dataset lacks: a typo, or labels that were not
        found, would otherwise train on nothing."""
        index = read_dataset(
            self.data,
            split=self.split,
            format=self.format,
            split_file=self.split_file,
            strict=self.strict,
            images=self.images,
            class_map=self.class_map,
        )
        if self.classes is None:
            if not index.records:
                raise ValueError(none_readable(index, self.images))
            if not _trainable(index):  # e.g. labels not where looked
                raise ValueError(
                    f"{index.source}: no box in its {len(index.records)} image(s) (crowd "
                    "regions not counted): nothing to train on (the lines above say what was "
                    "skipped)"
                )
            return index
        unknown = [n for n in self.classes if n not in set(index.class_names)]
        if unknown:
            raise ValueError(
                f"classes {unknown} are not among {index.source}'s {len(index.class_names)} "
                f"classes ({', '.join(index.class_names[:12])}"
                f"{', ...' if len(index.class_names) > 12 else ''})"
            )
        index = only_classes(index, self.classes)
        if not _trainable(index):
            raise ValueError(f"{index.source} has no box of the classes {list(self.classes)}")
        return index

    def read_val(
        self, class_names: Sequence[str] | None = None, *, default_split: str = "val"
    ) -> DatasetIndex | None:
        """The validation set, its classes mapped by name to ``class_names`` (the training
        set's): a split that lacks a class keeps the other classes' ids. With ``classes``,
        their boxes only, labelled as in training (the set is read in its own naming, so the
        other classes' objects are dropped, not reported as unknown). ``default_split``: the
        COCO or YOLO split read when ``val_split`` is None (``train`` for images held out of
        a training split)."""
        if self.val_data is None:
            return None
        index = read_dataset(
            self.val_data,
            split=self.val_split,
            format=self.format,
            split_file=self.val_split_file,
            strict=self.strict,
            class_names=class_names if self.classes is None else None,
            images=self.val_images,
            default_split=default_split,
        )
        return index if self.classes is None else only_classes(index, self.classes)

    def train_dataset(self, index: DatasetIndex, *, seed: int, proposals=None) -> DetectionDataset:
        """``index``'s images for training: resized to ``short_side`` / ``max_size`` (or cut
        into tiles: ``tile_size``), flipped with probability ``flip`` (seeded by ``seed``);
        ``proposals``: precomputed ones for each image (the alternating schedule's)."""
        transforms = train_transforms(self.short_side, self.max_size, self.flip)
        return DetectionDataset(
            index,
            transforms,
            strict=self.strict,
            seed=seed,
            proposals=proposals,
            tiling=self.tiling(),
            tile_transforms=Compose((HorizontalFlip(self.flip),)),
        )

    def eval_dataset(self, index: DatasetIndex) -> DetectionDataset:
        """``index``'s images for validation: resized as in training, never flipped."""
        return DetectionDataset(index, eval_transforms(self.short_side, self.max_size))


def _trainable(index: DatasetIndex) -> bool:
    """Whether some image has a box to learn from: crowd and difficult boxes are ignore
    regions, neither positive nor negative."""
    return any(not r.ignore.all() for r in index.records if len(r.labels))


def none_readable(index: DatasetIndex, images: str | None) -> str:
    """Why a dataset has no image: the first skip, and what to give when none was found
    (``images``: the folder given, if any); one that lists no image says so."""
    issues = index.image_issues
    if not issues:
        return f"{index.source}: lists no images"
    text = f"{index.source}: no image could be read ({len(issues)} skipped; first: {issues[0]})"
    missing = all("image file not found" in line for line in issues)
    if missing and images is None and index.source.endswith(".csv"):
        text += "; a CSV's images are looked for beside it: give --images DIR (images=)"
    elif missing and images is None:
        text += "; none was found: give --images DIR (images=), the folder that holds them"
    elif missing:
        text += f"; none was found in --images {images}"
    return text
