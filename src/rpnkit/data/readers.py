"""Readers for COCO JSON, Pascal VOC XML, YOLO txt and CSV datasets.

Each reader returns a ``DatasetIndex``: one ``Record`` per usable image (boxes converted to
xyxy pixels here, never later), the class names, and one line per sample that was left out,
naming the file (with the entry index, object index or line number) and the problem, each
also warned as a ``SkippedSample``. ``strict=True`` raises ``DataError`` at the first problem
instead.

Conventions: COCO ``[x, y, w, h]`` -> ``(x, y, x + w, y + h)``; VOC's 1-based inclusive pixel
indices -> ``(xmin - 1, ymin - 1, xmax, ymax)`` (as detectron2); YOLO's normalised
``cx cy w h`` -> pixels with the image size; CSV boxes are xyxy pixels as written (parsed
in ``csv_boxes``). ``iscrowd`` (COCO: 0 or 1, anything else is a malformed annotation) and
``difficult`` (VOC) become ignore regions.

Class ids: labels are 1..K. Without ``class_names`` they follow the dataset's own order: COCO
the JSON's categories sorted by id, YOLO the ``names`` of data.yaml, VOC the sorted names seen
in the XML files read (so they depend on the split: give ``class_names`` for anything but
training), CSV its class map's ids, or the sorted names seen. With ``class_names`` (the
training set's names, as a checkpoint stores them) every object is labelled BY NAME with its
position in that list, whatever the split holds; an object of a class not in the list is
left out, and all such objects are reported in one line (``OtherClass``: a count per class
and the first object's own line; with ``strict``, the first is an error).

Policy, the same for the four formats: a bad image (missing, unreadable, too large, a
malformed XML or label file, a malformed COCO image entry) is skipped; a bad annotation (a
COCO annotation, a VOC object, a YOLO line, a CSV row: malformed, of an unknown class, with a NaN,
infinite, empty or inverted box, or a box wholly outside its image) is skipped alone and the
image keeps its other boxes (an image may end with none: counted in ``DatasetIndex.bare`` and
the summary). A box that overshoots its image by
at most ``BORDER_TOLERANCE`` pixels is clipped silently; one that overshoots further but
overlaps the image is clipped and counted in ``DatasetIndex.clipped``. COCO annotations that
refer to no image of the JSON are counted in one line; images that share an id while naming
different files are skipped, and the annotations of that id counted in one line (they cannot
be attributed). Ids of a split file that name no image are skipped in one line. Malformed
COCO categories (or two of one name) are an error (the class ids depend on them), as is a
JSON that is not COCO instances JSON, and a dataset or split file that lists nothing.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import re
import sys
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, UnidentifiedImageError

from ..config import yaml_problem
from .csv_boxes import (
    BOXES,
    CLASS_MAP,
    HEADER_FORM,
    KERAS_FORM,
    CsvError,
    csv_kind,
    parse_boxes_csv,
    read_class_map,
    why_not_boxes,
)

# the pictures rpnkit reads, in folders and named by annotations alike: JPEG (.mpo: a camera's
# multi-picture JPEG), PNG, BMP, TIFF, WebP, GIF, JPEG 2000 (satellite images) and Netpbm;
# a GIF or MPO is read as its first frame. Pillow knows more (icons, Photoshop, PDF): those
# are refused by name (``unread_picture``).
IMAGE_SUFFIXES = (
    *(".jpg", ".jpeg", ".jpe", ".jfif", ".mpo", ".png", ".bmp", ".tif", ".tiff", ".webp"),
    *(".gif", ".jp2", ".j2k", ".pbm", ".pgm", ".ppm", ".pnm"),
)
# a box may overshoot its image by this many pixels (rounding in annotation tools) and is
# clipped silently; further out it is clipped and counted, and wholly outside it is skipped
BORDER_TOLERANCE = 1.0


class DataError(ValueError):
    """A problem with the dataset, naming the file."""


class SkippedSample(UserWarning):
    """The warning for a sample (image, annotation, label line) left out of a dataset: one
    line, ``skipped <file>: <problem>``."""


class DataNote(UserWarning):
    """A remark on a dataset that leaves nothing out (sizes in the annotations that disagree
    with the files', an image listed twice, a YOLO split without label files): one line,
    naming the file."""


@dataclass
class Record:
    """One image: ``boxes`` (N, 4) float32 xyxy pixels, ``labels`` (N,) int64 in 1..K,
    ``ignore`` (N,) bool (crowd / difficult), ``areas`` (N,) float32 (COCO's mask areas when
    known, else box areas)."""

    path: Path
    image_id: int | str
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    ignore: np.ndarray
    areas: np.ndarray

    @property
    def file_name(self) -> str:
        return self.path.name


@dataclass
class DatasetIndex:
    """``issues``: one line per skip (an image, an annotation, or a count of COCO annotations
    of unknown images); ``skipped_images`` and ``skipped_annotations`` count them (None: every
    issue is an image); ``clipped``: one line per box clipped to its image;
    ``categories`` (COCO only): the JSON's (category id, name) pairs in id order, what
    detections of its images are written with (labels are 1..K whatever the ids)."""

    records: list[Record]
    class_names: list[str]
    issues: list[str] = field(default_factory=list)
    source: str = ""
    skipped_images: int | None = None
    skipped_annotations: int = 0
    clipped: list[str] = field(default_factory=list)
    categories: list[tuple[int | str, str]] | None = None
    bare: int = 0  # images whose every box was skipped: kept, as images of background
    image_issues: list[str] = field(default_factory=list)  # the lines of the images skipped

    def summary(self) -> str:
        """One line: ``<source>: N images, K classes, 2 image(s) and 5 annotation(s) skipped,
        3 box(es) clipped`` (the last parts only when there are any)."""
        kept, classes = len(self.records), len(self.class_names)
        text = f"{self.source}: {kept} image{'s' * (kept != 1)}, {classes} "
        text += "class" if classes == 1 else "classes"
        images = len(self.issues) if self.skipped_images is None else self.skipped_images
        skipped = [f"{images} image(s)"] if images else []
        if self.skipped_annotations:
            skipped.append(f"{self.skipped_annotations} annotation(s)")
        if skipped:
            text += ", " + " and ".join(skipped) + " skipped"
        if self.bare:
            text += f" ({self.bare} image(s) left without a box, kept as background)"
        if self.clipped:
            text += f", {len(self.clipped)} box(es) clipped"
        return text


class _Collector:
    """Skips a sample with a ``SkippedSample`` warning, or raises with ``strict``; counts the
    skipped images and annotations and the clipped boxes."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.issues: list[str] = []
        self.images = 0
        self.image_issues: list[str] = []
        self.annotations = 0
        self.clipped: list[str] = []
        self.bare = 0  # images whose every box was skipped
        self.others: dict[str, int] = {}  # objects of each class not among the given names
        self.first_other = ""  # the first of them, as its own line would have said
        self.resized: list[str] = []  # images whose annotations give another size than the file

    def skip(self, where: str | Path, problem: str, count: int = 1) -> None:
        """``count`` images left out, in one line."""
        self._report(f"{where}: {problem}")
        self.images += count
        self.image_issues.append(f"{where}: {problem}")

    def skip_annotation(self, where: str | Path, problem: str, count: int = 1) -> None:
        """``count`` annotations (boxes, objects, label lines) left out, in one line; objects
        of a dataset's class that is not among the given names (``OtherClass``) are counted
        by class, for one line in all (``index``), unless ``strict``."""
        self.annotations += count
        if isinstance(problem, OtherClass) and not self.strict:
            self.first_other = self.first_other or f"{where}: {problem}"
            self.others[problem.name] = self.others.get(problem.name, 0) + count
            return
        self._report(f"{where}: {problem}")

    def image_done(self, skipped_before: int, boxes: int) -> None:
        """An image read with ``boxes`` kept: counted as bare if it had some and every one was
        skipped (``skipped_before``: ``annotations`` when its objects began)."""
        if boxes == 0 and self.annotations > skipped_before:
            self.count_bare()

    def count_bare(self) -> None:
        """One more image whose every box was skipped (a CSV's, from its events)."""
        self.bare += 1

    def clip(self, where: str | Path, note: str) -> None:
        self.clipped.append(f"{where}: {note}")

    def size_differs(self, path: Path, declared: tuple[int, int], actual: tuple[int, int]):
        """An image whose annotations give it another (width, height) than its file has."""
        if declared != actual:
            self.resized.append(
                f"{path.name}: {declared[0]}x{declared[1]}, file {actual[0]}x{actual[1]}"
            )

    def _report(self, line: str) -> None:
        if self.strict:
            raise DataError(line)
        warnings.warn(f"skipped {line}", SkippedSample, stacklevel=_caller_level())
        self.issues.append(line)

    def index(self, records: list[Record], names: list[str], source: str) -> DatasetIndex:
        if self.others:
            self._report(_others_line(source, self.others, len(names), self.first_other))
        if self.resized:  # boxes drawn on a resized copy would be misplaced: say so, once
            warnings.warn(
                f"{source}: {len(self.resized)} image(s) of another size in the annotations "
                f"than in the file (first: {self.resized[0]}); the boxes are read as the "
                "file's pixels",
                DataNote,
                stacklevel=_caller_level(),
            )
        records = _merged(records, source)
        _note_repeated_boxes(records, names, source)
        return DatasetIndex(
            records,
            names,
            self.issues,
            source,
            self.images,
            self.annotations,
            self.clipped,
            bare=self.bare,
            image_issues=self.image_issues,
        )


def _note_repeated_boxes(records: list[Record], names: list[str], source: str) -> None:
    """One ``DataNote`` for boxes that repeat another of their image exactly (class and
    corners: an annotation tool's double click, a CSV row pasted twice). They are kept, as
    given, in every format: each counts as an object in training and evaluation."""
    repeats, first = 0, None
    for r in records:
        rows = np.column_stack([r.boxes, r.labels, r.ignore])  # a crowd region apart
        unique, index = np.unique(rows, axis=0, return_index=True)
        if len(unique) < len(rows):
            repeats += len(rows) - len(unique)
            if first is None:
                j = np.setdiff1d(np.arange(len(rows)), index)[0]
                box = ", ".join(f"{v:g}" for v in r.boxes[j])
                first = f"{r.path.name}: {names[r.labels[j] - 1]!r} at ({box})"
    if repeats:
        warnings.warn(
            f"{source}: {repeats} box(es) repeat another box of their image exactly (first: "
            f"{first}); kept: each counts as an object in training and evaluation",
            DataNote,
            stacklevel=_caller_level(),
        )


def _merged(records: list[Record], source: str) -> list[Record]:
    """``records`` with those of one image file listed more than once (two COCO image entries,
    two VOC XML files naming it) made one, under the first listing's id, with the boxes of
    every listing (a box listed again with its class, once), in the order the images first
    appear; said once (``DataNote``). Apart, each listing would teach the other's objects as
    background."""
    by_path: dict[str, Record] = {}
    repeats = []
    for record in records:
        key = os.path.normpath(record.path)
        first = by_path.setdefault(key, record)
        if first is not record:
            repeats.append(f"{record.path.name} as {first.image_id!r} and {record.image_id!r}")
            by_path[key] = _joined(first, record)
    if repeats:
        warnings.warn(
            f"{source}: {len(repeats)} listing(s) of an image listed before (first: "
            f"{repeats[0]}): each image is read once, under its first id, with the boxes of "
            "every listing",
            DataNote,
            stacklevel=_caller_level(),
        )
    return list(by_path.values())


def _joined(first: Record, other: Record) -> Record:
    """``first`` with ``other``'s boxes that it lacks (the same box and class: once)."""
    have = {(tuple(b), int(c)) for b, c in zip(first.boxes.tolist(), first.labels.tolist())}
    new = [
        i
        for i, (b, c) in enumerate(zip(other.boxes.tolist(), other.labels.tolist()))
        if (tuple(b), int(c)) not in have
    ]
    fields = ("boxes", "labels", "ignore", "areas")
    return dataclasses.replace(
        first, **{f: np.concatenate([getattr(first, f), getattr(other, f)[new]]) for f in fields}
    )


class OtherClass(str):
    """The problem of an object of a class that the dataset has but the given class names
    lack (e.g. a checkpoint's): the usual line, and the class ``name``, to count it by."""

    name: str

    def __new__(cls, name: str, known: Sequence[str], detail: str = "") -> OtherClass:
        text = super().__new__(cls, f"unknown class {name!r} ({detail}known: {_known(known)})")
        text.name = name
        return text


def _others_line(source: str, others: dict[str, int], given: int, first: str) -> str:
    """One line for the objects of every class not among the ``given`` names: the count of
    each class (the first five) and the ``first`` object's own line."""
    counts = ", ".join(f"{name!r} {count}" for name, count in list(others.items())[:5])
    counts += f", ... ({len(others)} classes)" if len(others) > 5 else ""
    total = sum(others.values())
    return (
        f"{source}: {total} object(s) of classes not among the {given} given, left out "
        f"({counts}); the first: {first}"
    )


def _caller_level() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside this module, the
    code that called the reader."""
    frame, level = sys._getframe(1), 1  # level 1: the frame that calls warnings.warn
    ours = (__file__, contextlib.__file__)  # and the context managers' frames
    while frame is not None and frame.f_code.co_filename in ours:
        frame, level = frame.f_back, level + 1
    return level


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, after EXIF rotation; raises DataError."""
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    if (problem := unread_picture(path)) is not None:
        raise DataError(problem)
    try:
        with named_pillow_warnings(path), Image.open(path) as img:
            width, height = img.size
            orientation = exif_orientation(img, path)
    except Image.DecompressionBombError as err:
        raise too_large_image_error(path, err) from err
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"{path}: unreadable image ({err})") from err
    if width <= 0 or height <= 0:
        raise DataError(f"{path}: zero-size image ({width}x{height})")
    # orientations 5-8 rotate by 90 degrees: the decoded image is height x width
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def unread_picture(path: Path) -> str | None:
    """The line for a picture of a kind Pillow knows but rpnkit does not read (not among
    ``IMAGE_SUFFIXES``: an icon, a JPEG 2000, a Photoshop file), whether found in a folder or
    named by an annotation; None for any other file, for the decoder to judge."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES or suffix not in Image.registered_extensions():
        return None
    return (
        f"{path}: a {path.suffix} image, which rpnkit does not read "
        f"({', '.join(IMAGE_SUFFIXES)}); convert it, e.g. to PNG"
    )


def exif_orientation(img: Image.Image, path: Path) -> int:
    """The EXIF orientation (1-8) that Pillow's ``exif_transpose`` would apply to the opened
    ``img`` of ``path``. Pillow decodes a whole PNG to look for it (its EXIF may follow the
    pixels): a PNG whose chunks hold no EXIF or XMP at all is upright without that."""
    if img.format == "PNG" and not _png_holds_metadata(path):
        return 1
    return img.getexif().get(0x0112, 1)


@contextlib.contextmanager
def named_pillow_warnings(path: Path, *, named: bool = True):
    """Pillow's warnings about a file (corrupt EXIF data or a tag past the file's end, as a
    JPEG is opened; a possible decompression bomb), which name no file, passed on as one
    ``DataNote``
    naming ``path``; or dropped (``named=False``: the decoders, whose files the dataset's index
    named when it read their sizes). Catching swaps the process's warning state meanwhile: a
    warning another thread raises then is passed on as it was raised."""
    caught = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        pillow = [w for w in caught if Path(w.filename).parent.name == "PIL"]
        for w in caught:
            if w not in pillow:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
        if pillow and named:
            problems = "; ".join(dict.fromkeys(str(w.message).strip() for w in pillow))
            note = DataNote(f"{path}: Pillow: {problems}")
            warnings.warn(note, stacklevel=_caller_level())


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_TEXT = (b"tEXt", b"zTXt", b"iTXt")
_PNG_ORIENTING_KEYS = (b"exif", b"Raw profile type exif", b"XML:com.adobe.xmp")  # as Pillow


def _png_holds_metadata(path: Path) -> bool:
    """Whether a PNG file has an ``eXIf`` chunk or a text chunk that Pillow reads EXIF or XMP
    from, by the chunks' headers and keywords alone (the pixels are skipped); True where the
    file is not a whole PNG, for Pillow to judge."""
    with open(path, "rb") as f:
        if f.read(8) != _PNG_SIGNATURE:
            return True
        while len(header := f.read(8)) == 8:
            length, kind = int.from_bytes(header[:4], "big"), header[4:]
            if kind == b"IEND":
                return False
            if kind == b"eXIf":
                return True
            rest = length + 4  # the chunk's data and its CRC
            if kind in _PNG_TEXT:
                keyword = f.read(min(length, 80))  # a keyword is 1-79 bytes, then a zero
                if keyword.split(b"\0", 1)[0] in _PNG_ORIENTING_KEYS:
                    return True
                rest -= len(keyword)
            f.seek(rest, 1)
    return True


def too_large_image_error(path: Path, err: Exception) -> DataError:
    """The DataError for Pillow's ``Image.DecompressionBombError``: the file, its size and how
    to allow such images."""
    # Pillow: "Image size (N pixels) exceeds limit of M pixels, could be decompression bomb ..."
    found = re.findall(r"\d+", str(err))
    size = f"{int(found[0]):,} pixels" if found else "too many pixels"
    limit = f" of {int(found[1]):,} pixels" if len(found) > 1 else ""
    return DataError(
        f"{path}: image of {size} is over Pillow's limit{limit} (a guard against decompression "
        "bombs); to read such images, set rpnkit.data.images.allow_large_images(None), or "
        "--max-image-pixels 0 on the command line"
    )


def _fit_box(
    box: tuple[float, float, float, float], width: int, height: int
) -> tuple[tuple[float, float, float, float] | None, str | None]:
    """An xyxy box as used in a ``width`` x ``height`` image, and a note: ``(box, None)`` when it
    lies in the image up to ``BORDER_TOLERANCE`` (``_make_record`` clips the overshoot);
    ``(clipped box, what was done)`` when it overshoots further but overlaps the image;
    ``(None, why)`` when it is unusable (NaN or infinite, empty or inverted, wholly outside)."""
    shown = tuple(round(v, 2) for v in box)
    if not all(math.isfinite(v) for v in box):
        return None, f"box {shown} has a NaN or infinite coordinate"
    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        return None, f"box {shown} is empty or inverted"
    if x1 >= width or y1 >= height or x2 <= 0 or y2 <= 0:
        return None, f"box {shown} is out of bounds of the {width}x{height} image (wholly outside)"
    t = BORDER_TOLERANCE
    if x1 < -t or y1 < -t or x2 > width + t or y2 > height + t:
        inside = (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))
        clipped = tuple(round(v, 2) for v in inside)
        return inside, f"box {shown} overshoots the {width}x{height} image; clipped to {clipped}"
    return box, None


def _class_list(class_names: Sequence[str] | None) -> list[str] | None:
    """The given class names, checked: a non-empty sequence of distinct non-empty strings."""
    if class_names is None:
        return None
    if isinstance(class_names, str):
        raise DataError(f"class_names: expected a list of names, got the string {class_names!r}")
    names = list(class_names)
    if not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise DataError(f"class_names: expected a non-empty list of non-empty names, got {names}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(f"class_names: names given more than once: {repeated}")
    return names


def _known(names: Sequence[str]) -> str:
    """The class names for a message, the first 10 of a long list."""
    shown = ", ".join(repr(n) for n in names[:10])
    return shown + (f", ... ({len(names)} in all)" if len(names) > 10 else "")


def _make_record(
    path: Path, image_id, width: int, height: int, boxes, labels, ignore, areas=None
) -> Record:
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    b[:, 0::2] = b[:, 0::2].clip(0, width)  # within the tolerance: clip
    b[:, 1::2] = b[:, 1::2].clip(0, height)
    box_areas = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return Record(
        path=path,
        image_id=image_id,
        width=width,
        height=height,
        boxes=b,
        labels=np.asarray(labels, dtype=np.int64),
        ignore=np.asarray(ignore, dtype=bool),
        areas=np.asarray(areas, dtype=np.float32) if areas is not None else box_areas,
    )


# ---------------------------------------------------------------- COCO JSON


def _is_id(value) -> bool:
    """A COCO id: an integer or a string."""
    return isinstance(value, int | str) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_text(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class _CocoClasses:
    names: list[str]  # the index's class names
    name_of: dict  # category id -> its name
    label_of: dict  # category id -> label in 1..K; categories not among class_names are absent


def read_coco(
    json_path: str | Path,
    image_dir: str | Path | None = None,
    *,
    class_names: Sequence[str] | None = None,
    strict: bool = False,
) -> DatasetIndex:
    """A COCO ``instances_*.json``. ``image_dir`` defaults to ``images/<split>`` or ``<split>``
    beside the ``annotations`` folder, for ``annotations/instances_<split>.json``. Classes: the
    categories sorted by id, or ``class_names`` (matched by category name)."""
    json_path = Path(json_path)
    data = _load_coco_json(json_path)
    if not data["images"]:
        raise DataError(f"{json_path}: lists no images ('images' is empty)")
    classes = _coco_classes(json_path, data["categories"], _class_list(class_names))
    image_dir = Path(image_dir) if image_dir is not None else _coco_image_dir(json_path)
    out = _Collector(strict)
    images, shared = _coco_images(json_path, data["images"], out)
    anns_of = _coco_annotations_by_image(json_path, data["annotations"], images, shared, out)
    records = []
    for image_id, entry in images.items():
        if entry is None:  # a malformed entry, already reported
            continue
        path = image_dir / entry["file_name"]
        try:
            width, height = image_size(path)  # trust the file: annotation sizes are sometimes off
        except DataError as err:
            out.skip(path, str(err).removeprefix(f"{path}: "))
            continue
        out.size_differs(path, (entry["width"], entry["height"]), (width, height))
        boxes, labels, ignore, areas, before = [], [], [], [], out.annotations
        for i, ann in anns_of.get(image_id, []):
            where = f"{json_path}: annotations[{i}]"
            where += f" (id {ann['id']}, image {path.name})" if "id" in ann else f" ({path.name})"
            found, note = _coco_annotation(ann, classes, width, height)
            if found is None:
                out.skip_annotation(where, note)
                continue
            if note is not None:
                out.clip(where, note)
            boxes.append(found[0])
            labels.append(found[1])
            ignore.append(found[2])
            areas.append(found[3])
        out.image_done(before, len(boxes))
        records.append(_make_record(path, image_id, width, height, boxes, labels, ignore, areas))
    index = out.index(records, classes.names, str(json_path))
    index.categories = [(c, classes.name_of[c]) for c in _in_id_order(classes.name_of)]
    return index


def _load_coco_json(json_path: Path) -> dict:
    try:
        data = json.loads(json_path.read_text(encoding="utf-8-sig"))
    except OSError as err:
        raise DataError(f"{json_path}: cannot read ({err})") from err
    except json.JSONDecodeError as err:
        raise DataError(f"{json_path}: malformed JSON at line {err.lineno}: {err.msg}") from err
    except UnicodeDecodeError as err:
        raise DataError(f"{json_path}: not a text file ({err})") from err
    if not isinstance(data, dict):
        raise DataError(
            f"{json_path}: not COCO instances JSON (a {type(data).__name__}, no object)"
        )
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DataError(f"{json_path}: not COCO instances JSON (no '{key}' list)")
        if not isinstance(data[key], list):
            raise DataError(
                f"{json_path}: '{key}' must be a list, got {_json_text(data[key])} "
                f"(a {type(data[key]).__name__})"
            )
    return data


def _coco_classes(json_path: Path, categories: list, given: list[str] | None) -> _CocoClasses:
    """The categories checked (each an object with an integer or string ``id``, unique, and a
    non-empty ``name``), sorted by id; raises DataError naming ``categories[i]``."""
    name_of = {}
    for i, cat in enumerate(categories):
        where = f"{json_path}: categories[{i}]"
        if not isinstance(cat, dict):
            raise DataError(f"{where}: expected an object, got {_json_text(cat)}")
        if not _is_id(cat.get("id")):
            got = f"'id' {_json_text(cat['id'])}" if "id" in cat else "no 'id'"
            raise DataError(f"{where}: {got} (an integer is needed)")
        name = cat.get("name")
        if not isinstance(name, str) or not name.strip():
            got = f"'name' {_json_text(name)}" if "name" in cat else "no 'name'"
            raise DataError(f"{where} (id {cat['id']}): {got} (a non-empty string is needed)")
        if cat["id"] in name_of:
            raise DataError(f"{where}: category id {cat['id']!r} appears twice")
        if name in name_of.values():  # two classes of one name cannot be told apart by name
            first = list(name_of.values()).index(name)
            raise DataError(
                f"{where} (id {cat['id']!r}): the name {name!r} is also categories[{first}]'s "
                "(class names must differ)"
            )
        name_of[cat["id"]] = name
    ordered = _in_id_order(name_of)
    if given is None:
        names = [name_of[c] for c in ordered]
        return _CocoClasses(names, name_of, {c: i + 1 for i, c in enumerate(ordered)})
    position = {n: i + 1 for i, n in enumerate(given)}
    label_of = {c: position[n] for c, n in name_of.items() if n in position}
    return _CocoClasses(given, name_of, label_of)


def _in_id_order(category_ids) -> list:
    """Category ids sorted: the integers, then any strings."""
    return sorted(category_ids, key=lambda c: (isinstance(c, str), c))


def _coco_images(json_path: Path, entries: list, out: _Collector) -> tuple[dict, dict]:
    """``(images, shared)``: image id -> its entry, or None for an entry with an id but
    malformed otherwise (entries without a usable id are left out); and each id that entries
    naming different files share -> their indices. Each malformed entry is reported as
    ``images[i]``; so is each entry of a shared id, whose annotations cannot be told apart:
    none of them is read (an entry repeated with its file name is read once)."""
    files_of: dict = {}  # id -> {index: file name}
    for i, entry in enumerate(entries):
        if isinstance(entry, dict) and _is_id(entry.get("id")):
            files_of.setdefault(entry["id"], {})[i] = _json_text(entry.get("file_name"))
    shared = {k: list(v) for k, v in files_of.items() if len(set(v.values())) > 1}
    images: dict = {}
    for i, entry in enumerate(entries):
        if isinstance(entry, dict) and _is_id(entry.get("id")) and entry["id"] in shared:
            image_id, indices = entry["id"], shared[entry["id"]]
            others = ", ".join(f"images[{j}] {files_of[image_id][j]}" for j in indices if j != i)
            out.skip(
                f"{json_path}: images[{i}] {files_of[image_id][i]}",
                f"image id {image_id!r} is also {others}: neither image is read, nor the "
                "annotations of that id",
            )
            images[image_id] = None
            continue
        problem = _coco_image_problem(entry, images)
        if problem is not None:
            out.skip(f"{json_path}: images[{i}]", problem)
            if isinstance(entry, dict) and _is_id(entry.get("id")):
                images.setdefault(entry["id"], None)
            continue
        images[entry["id"]] = entry
    return images, shared


def _coco_image_problem(entry, images: dict) -> str | None:
    if not isinstance(entry, dict):
        return f"expected an object, got {_json_text(entry)}"
    if not _is_id(entry.get("id")):
        return f"'id' {_json_text(entry['id'])} is not an integer" if "id" in entry else "no 'id'"
    if entry["id"] in images:
        return f"image id {entry['id']!r} appears twice"
    name = entry.get("file_name")
    if not isinstance(name, str) or not name.strip():
        return f"'file_name' {_json_text(name)} is not a file name" if name else "no 'file_name'"
    for key in ("width", "height"):
        if not _is_number(entry.get(key)):
            got = f"'{key}' {_json_text(entry[key])} is not a number" if key in entry else None
            return f"{got or f'no {key!r}'} ({name})"
    return None


def _coco_annotations_by_image(
    json_path: Path, annotations: list, images: dict, shared: dict, out: _Collector
) -> dict:
    """Image id -> [(index in ``annotations``, annotation)]. Annotations that are not objects
    or lack an ``image_id`` are reported one by one; those of image ids that the JSON does not
    hold are counted in one line, and those of each id that several images share (``shared``,
    id -> the images' indices) in one line per id."""
    anns_of: dict = {}
    unknown = []
    for i, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            out.skip_annotation(
                f"{json_path}: annotations[{i}]", f"expected an object, got {_json_text(ann)}"
            )
        elif not _is_id(ann.get("image_id")):
            got = ann.get("image_id")
            problem = f"'image_id' {_json_text(got)} is not an id" if got is not None else ""
            out.skip_annotation(f"{json_path}: annotations[{i}]", problem or "no 'image_id'")
        elif ann["image_id"] in images:
            anns_of.setdefault(ann["image_id"], []).append((i, ann))
        else:
            unknown.append(ann["image_id"])
    if unknown:
        out.skip_annotation(
            json_path,
            f"{len(unknown)} annotation(s) refer to unknown image ids (first: {unknown[0]!r})",
            count=len(unknown),
        )
    for image_id, indices in shared.items():
        of_id = anns_of.pop(image_id, [])
        if of_id:
            entries = " and ".join(f"images[{j}]" for j in indices)
            out.skip_annotation(
                json_path,
                f"{len(of_id)} annotation(s) of image id {image_id!r} (first: "
                f"annotations[{of_id[0][0]}]) left out: {entries} share that id",
                count=len(of_id),
            )
    return anns_of


def _coco_annotation(ann: dict, classes: _CocoClasses, width: int, height: int):
    """``((box, label, crowd, area), clip note or None)`` for a usable annotation, else
    ``(None, why)``."""
    bbox = ann.get("bbox")
    if "bbox" not in ann or bbox is None:
        return None, "no 'bbox'" if "bbox" not in ann else "bbox is null"
    if not isinstance(bbox, list):
        return None, f"bbox {_json_text(bbox)} is not a list [x, y, w, h]"
    if len(bbox) != 4:
        return None, f"bbox {_json_text(bbox)} has {len(bbox)} values, not 4 [x, y, w, h]"
    if not all(_is_number(v) for v in bbox):
        return None, f"bbox {_json_text(bbox)} has a non-numeric value"
    category = ann.get("category_id")
    if not _is_id(category) or category not in classes.name_of:
        return None, f"unknown category {_json_text(category)}{_id_type_clash(category, classes)}"
    if category not in classes.label_of:
        name = classes.name_of[category]
        return None, OtherClass(name, classes.names, f"category {category}; ")
    area, crowd = ann.get("area"), ann.get("iscrowd", 0)
    if area is not None and not _is_number(area):
        return None, f"'area' {_json_text(area)} is not a number"
    if area is not None and not (math.isfinite(area) and area >= 0):
        return None, f"'area' {_json_text(area)} is not a finite number >= 0"
    # bool("0") is True: a flag read loosely would make every box an ignore region
    if not (isinstance(crowd, int | float) and crowd in (0, 1)):  # 0.0, 1.0, True too
        return None, f"'iscrowd' {_json_text(crowd)} is not 0 or 1"
    x, y, w, h = (float(v) for v in bbox)
    box, note = _fit_box((x, y, x + w, y + h), width, height)
    if box is None:
        return None, note
    if area is None:
        area = w * h if note is None else (box[2] - box[0]) * (box[3] - box[1])
    return (box, classes.label_of[category], bool(crowd), float(area)), note


def _id_type_clash(category, classes: _CocoClasses) -> str:
    """Why a category id that matches none may be meant as one: ``"1"`` written for ``1``."""
    for known in classes.name_of:
        if _is_id(category) and type(known) is not type(category) and str(known) == str(category):
            what = {int: "an integer", str: "a string"}
            return (
                f" (a string vs integer mismatch: {what[type(category)]} here, but "
                f"{what[type(known)]} {known!r} in categories, {classes.name_of[known]!r})"
            )
    return ""


def _coco_image_dir(json_path: Path) -> Path:
    split = json_path.stem.removeprefix("instances_")
    root = json_path.parent.parent if json_path.parent.name == "annotations" else json_path.parent
    for candidate in (root / "images" / split, root / split, root / "images"):
        if candidate.is_dir():
            return candidate
    raise DataError(f"{json_path}: cannot find its images (tried images/{split} and {split})")


# ---------------------------------------------------------------- Pascal VOC XML


def read_voc(
    annotation_dir: str | Path,
    image_dir: str | Path | None = None,
    *,
    split_file: str | Path | None = None,
    class_names: Sequence[str] | None = None,
    strict: bool = False,
) -> DatasetIndex:
    """A folder of VOC XML files, whatever its name. ``image_dir``: where the images are;
    by default the XML folder itself when it holds images (XML files beside their images),
    then ``images/`` or ``JPEGImages/`` in it or beside it. Each image is found from
    ``<filename>``, else as the XML file's stem with any image suffix. ``split_file``: a text
    file of image ids (VOC's ``ImageSets/Main/*.txt``) or a CSV with a ``filename`` column
    (e.g. raccoon's ``train_labels.csv``) selecting the images. Classes: ``class_names`` or
    every name seen, sorted."""
    annotation_dir = Path(annotation_dir)
    given = _class_list(class_names)
    xml_files = voc_xml_files(annotation_dir)
    if not xml_files:
        raise DataError(f"{annotation_dir}: holds no VOC XML (.xml) file")
    finder = _ImageFinder(_voc_image_dirs(annotation_dir, image_dir))
    out = _Collector(strict)
    if split_file is not None:
        wanted = _split_selection(
            Path(split_file), [f.stem for f in xml_files], annotation_dir, out
        )
        xml_files = [f for f in xml_files if f.stem in wanted]
    parsed, seen = [], set()
    for xml_file in xml_files:
        found = _voc_file(xml_file, finder, given, out)
        if found is not None:
            parsed.append(found)
            seen.update(found[-1])
    names = given or sorted(seen)
    label_of = {n: i + 1 for i, n in enumerate(names)}
    records = []
    for xml_file, path, width, height, objects, _ in parsed:
        boxes = [box for _, box, _ in objects]
        labels = [label_of[name] for name, _, _ in objects]
        ignore = [difficult for _, _, difficult in objects]
        records.append(_make_record(path, xml_file.stem, width, height, boxes, labels, ignore))
    return out.index(records, names, str(annotation_dir))


def _voc_file(xml_file: Path, finder: _ImageFinder, given: list[str] | None, out: _Collector):
    """``(xml_file, image path, width, height, [(name, box, difficult)], names seen)`` for a
    usable XML file, its bad objects reported and left out; None for a skipped file."""
    try:
        root = ET.parse(xml_file).getroot()
    except (ET.ParseError, OSError) as err:
        out.skip(xml_file, f"malformed XML ({err})")
        return None
    if root.tag != "annotation":  # any other XML would pass as an image without objects
        out.skip(xml_file, f"not a VOC annotation (the root is <{root.tag}>, not <annotation>)")
        return None
    try:
        path = finder.find((root.findtext("filename") or "").strip(), xml_file.stem)
        width, height = image_size(path)
    except DataError as err:
        out.skip(xml_file, str(err))
        return None
    declared = [(root.findtext(f"size/{side}") or "").strip() for side in ("width", "height")]
    if all(v.isdigit() and int(v) > 0 for v in declared):  # some tools write 0 or nothing
        out.size_differs(path, (int(declared[0]), int(declared[1])), (width, height))
    objects, seen, before = [], set(), out.annotations
    for i, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        if not name:
            out.skip_annotation(xml_file, f"object {i}: no <name> (or an empty one)")
            continue
        seen.add(name)
        coords, problem = _voc_bndbox(obj)
        if problem is None and given is not None and name not in given:
            problem = OtherClass(name, given)
        if problem is None:
            xmin, ymin, xmax, ymax = coords
            box, note = _fit_box((xmin - 1, ymin - 1, xmax, ymax), width, height)
            problem = note if box is None else None
        if problem is not None:
            other = isinstance(problem, OtherClass)  # counted by class, or one line each
            where = f"{xml_file} object {i}" if other else xml_file
            out.skip_annotation(where, problem if other else f"object {i} ({name}): {problem}")
            continue
        if note is not None:
            out.clip(xml_file, f"object {i} ({name}): {note}")
        difficult = (obj.findtext("difficult") or "0").strip().lower() in ("1", "true")
        objects.append((name, box, difficult))
    out.image_done(before, len(objects))
    return xml_file, path, width, height, objects, seen


def _voc_bndbox(obj: ET.Element) -> tuple[list[float] | None, str | None]:
    """The four numbers of an object's ``<bndbox>``, or why there are none."""
    bnd = obj.find("bndbox")
    if bnd is None:
        return None, "missing or non-numeric bndbox (no <bndbox>)"
    coords = []
    for key in ("xmin", "ymin", "xmax", "ymax"):
        text = bnd.findtext(key)
        if text is None or not text.strip():
            return None, f"missing or non-numeric bndbox (no <{key}>)"
        try:
            coords.append(float(text))
        except ValueError:
            return None, f"missing or non-numeric bndbox (<{key}> {text.strip()!r})"
    return coords, None


def _holds_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir() if p.is_file())


def _voc_image_dirs(annotation_dir: Path, image_dir: str | Path | None) -> list[Path]:
    """Where the images of a VOC folder may be: ``image_dir`` alone when given; else the XML
    folder itself if it holds images, then ``images/`` and ``JPEGImages/`` in it and beside
    it (the first that exist)."""
    if image_dir is not None:
        image_dir = Path(image_dir)
        if not image_dir.is_dir():
            raise DataError(f"{image_dir}: the image folder does not exist")
        return [image_dir]
    found = [annotation_dir] if annotation_dir.is_dir() and _holds_images(annotation_dir) else []
    for parent in (annotation_dir, annotation_dir.parent):
        found += [parent / sub for sub in ("images", "JPEGImages") if (parent / sub).is_dir()]
    if not found:
        raise DataError(
            f"{annotation_dir}: cannot find its images (tried images/ and JPEGImages/ in it and "
            "beside it, and images beside the XML files); give --images DIR"
        )
    return found


class _ImageFinder:
    """Finds an annotation's image in a few folders: by its file name, else by a stem with any
    image suffix (``IMAGE_SUFFIXES``, in any case). Each folder is listed once, when needed."""

    def __init__(self, folders: list[Path]) -> None:
        self.folders = folders
        self._stems: dict[Path, dict[str, Path]] = {}

    def _by_stem(self, folder: Path) -> dict[str, Path]:
        if folder not in self._stems:
            images = sorted(
                p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            )
            self._stems[folder] = {}
            for p in images:
                self._stems[folder].setdefault(p.stem, p)
        return self._stems[folder]

    def find(self, file_name: str, stem: str) -> Path:
        """The image named ``file_name`` (may be empty), else one whose stem is that name's or
        ``stem``; raises DataError naming what was looked for."""
        for folder in self.folders:
            for name in (file_name, Path(file_name).name) if file_name else ():
                if (folder / name).is_file():
                    return folder / name
        stems = dict.fromkeys([Path(file_name).stem, stem] if file_name else [stem])
        for folder in self.folders:
            for s in stems:
                found = self._by_stem(folder).get(s)
                if found is not None:
                    return found
        where = ", ".join(str(f) for f in self.folders)
        also = f"no {stem}.<image suffix> either in {where}"
        if file_name:
            raise DataError(f"{self.folders[0] / file_name}: image file not found ({also})")
        raise DataError(f"{stem}: image file not found (no <filename>; {also})")


def voc_xml_files(folder: Path) -> list[Path]:
    """The VOC XML files of a folder (``.xml`` in any case), sorted; none for a file."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".xml" and p.is_file())


def _read_split(path: Path) -> list[str]:
    """Image ids (file stems), in file order, once each, listed in a text file (the first word
    of each line: an id, or a file name with an image suffix) or in a CSV's ``filename``
    column."""
    if not path.is_file():
        raise DataError(f"{path}: split file not found")
    try:
        if path.suffix.lower() == ".csv":
            with path.open(newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                if "filename" not in (reader.fieldnames or []):
                    raise DataError(f"{path}: a split CSV needs a 'filename' column")
                ids = [Path(row["filename"] or "").stem for row in reader]
        else:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
            ids = [_split_id(line.split()[0]) for line in lines if line.strip()]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: cannot read the split file ({err})") from err
    return list(dict.fromkeys(i for i in ids if i))


def _split_id(word: str) -> str:
    """An id of a text split: ``raccoon-1`` as written, ``raccoon-1.jpg`` (or a path to it) as
    its stem; a suffix that is not an image's is part of the id (``2008_000001.v2``)."""
    name = Path(word)
    return name.stem if name.suffix.lower() in IMAGE_SUFFIXES else word


def _split_selection(path: Path, stems: list[str], dataset, out: _Collector) -> set[str]:
    """The ids of the split file ``path`` that name one of a dataset's images (by ``stems``);
    those naming none are skipped in one line (a count and the first few); a split file that
    names none of them is an error."""
    ids = _read_split(path)
    if not ids:
        raise DataError(f"{path}: lists no image ids")
    have = set(stems)
    unmatched = [i for i in ids if i not in have]
    first = ", ".join(repr(i) for i in unmatched[:3]) + (", ..." if len(unmatched) > 3 else "")
    if len(unmatched) == len(ids):
        like = f"; its images are named like {stems[0]!r}" if stems else ""
        raise DataError(
            f"{path}: none of its {len(ids)} ids names an image of {dataset} (first: {first}{like})"
        )
    if unmatched:
        out.skip(
            path,
            f"{len(unmatched)} of its {len(ids)} ids name no image of {dataset} (first: {first})",
            count=len(unmatched),
        )
    return set(ids) & have


# ---------------------------------------------------------------- YOLO txt


def read_yolo(
    data_yaml: str | Path,
    split: str = "train",
    *,
    class_names: Sequence[str] | None = None,
    strict: bool = False,
) -> DatasetIndex:
    """A YOLO dataset described by ``data.yaml`` (``path``, ``train``/``val``, ``names``).
    A split is an image folder (read with its sub-folders, in sorted order), a text file
    listing image paths (relative to its folder, or absolute), or a list of either, as
    Ultralytics reads them. Labels sit beside the images with ``images`` replaced by
    ``labels`` and a ``.txt`` suffix; a missing or empty label file means an image without
    objects. Image ids are the file stems (paths, where stems repeat). Classes: data.yaml's
    ``names``, or ``class_names`` (matched by name)."""
    data_yaml = Path(data_yaml)
    yaml_ids, image_paths, root = _yolo_meta(data_yaml, split)
    given = _class_list(class_names)
    names = given or list(yaml_ids.values())
    position = {n: i + 1 for i, n in enumerate(names)}
    out = _Collector(strict)
    records = []
    labelled = 0  # images with a label file
    ids = _yolo_image_ids(image_paths, root)
    for path in image_paths:
        label_path = yolo_label_path(path)
        try:
            width, height = image_size(path)
            has_labels = label_path.is_file()
            lines = label_path.read_text(encoding="utf-8-sig").splitlines() if has_labels else []
            labelled += has_labels
        except DataError as err:
            out.skip(path, str(err).removeprefix(f"{path}: "))
            continue
        except (OSError, UnicodeDecodeError) as err:
            out.skip(label_path, f"unreadable label file ({err})")
            continue
        boxes, labels, before = [], [], out.annotations
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            found, note = _yolo_line(line, yaml_ids, position, width, height)
            if found is None:
                out.skip_annotation(f"{label_path} line {n}", note)
                continue
            if note is not None:
                out.clip(f"{label_path} line {n}", note)
            boxes.append(found[0])
            labels.append(found[1])
        out.image_done(before, len(boxes))
        records.append(
            _make_record(path, ids[path], width, height, boxes, labels, [False] * len(boxes))
        )
    if records and not labelled:
        warnings.warn(
            f"{data_yaml} [{split}]: no label file for any of its {len(records)} images (the "
            f"first looked for: {yolo_label_path(records[0].path)}): every image is background",
            DataNote,
            stacklevel=_caller_level(),
        )
    return out.index(records, names, f"{data_yaml} [{split}]")


def yolo_label_path(image: Path) -> Path:
    """Where YOLO keeps an image's labels: the last folder of its path named ``images``
    replaced by ``labels`` (as Ultralytics does), the suffix by ``.txt``; beside the image
    when no folder is named so."""
    parts = list(image.parent.parts)
    for i in reversed(range(len(parts))):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts) / f"{image.stem}.txt"


def read_data_yaml(data_yaml: Path):
    """A data.yaml's content; raises DataError in one line naming the file (and the line of a
    YAML error)."""
    try:
        return yaml.safe_load(data_yaml.read_text(encoding="utf-8-sig"))
    except OSError as err:
        raise DataError(f"{data_yaml}: cannot read ({err.strerror or err})") from err
    except UnicodeDecodeError as err:
        raise DataError(
            f"{data_yaml}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset "
            f"{err.start})"
        ) from err
    except yaml.YAMLError as err:
        raise DataError(f"{data_yaml}: {yaml_problem(err)}") from err


def _yolo_meta(data_yaml: Path, split: str) -> tuple[dict[int, str], list[Path], Path]:
    """data.yaml's classes (id -> name, ``_yolo_class_ids``), the image files of ``split``
    (sorted within each folder or list file) and the dataset's root folder; raises
    DataError."""
    meta = read_data_yaml(data_yaml)
    if not isinstance(meta, dict) or split not in meta or "names" not in meta:
        raise DataError(f"{data_yaml}: needs '{split}' and 'names' entries")
    ids = _yolo_class_ids(data_yaml, meta["names"])
    root = (data_yaml.parent / str(meta.get("path") or ".")).resolve()
    entries = meta[split] if isinstance(meta[split], list) else [meta[split]]
    if meta[split] is None or not entries:
        raise DataError(f"{data_yaml}: the '{split}' key is empty (give an image folder)")
    images = []
    for entry in entries:
        if not isinstance(entry, str) or not entry.strip():
            raise DataError(
                f"{data_yaml}: '{split}' gives {entry!r}, not an image folder or a list file"
            )
        images += _yolo_split_images(data_yaml, split, root / entry)
    if not images:
        raise DataError(f"{data_yaml}: the '{split}' images ({meta[split]}) hold no image")
    unique = list(dict.fromkeys(images))  # a list file may name an image twice
    if len(unique) < len(images):
        warnings.warn(
            f"{data_yaml} [{split}]: {len(images) - len(unique)} image(s) listed more than once: "
            "each read once",
            DataNote,
            stacklevel=_caller_level(),
        )
    return ids, unique, root


def _yolo_split_images(data_yaml: Path, split: str, where: Path) -> list[Path]:
    """The images of one entry of a YOLO split: a folder's, hidden ones aside, sorted, or the
    paths a ``.txt`` file lists (relative to its folder, or absolute), in its order."""
    if where.is_dir():
        return sorted(
            p
            for p in where.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(where).parts)
            and p.is_file()
        )
    if where.is_file() and where.suffix.lower() == ".txt":
        try:
            lines = where.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(f"{where}: cannot read the list of images ({err})") from err
        return [where.parent / line.strip() for line in lines if line.strip()]
    raise DataError(f"{data_yaml}: the '{split}' image folder {where} does not exist")


def _yolo_image_ids(paths: list[Path], root: Path) -> dict[Path, str]:
    """Each image's id: its stem, or its path from ``root`` where another image of the split
    has the same stem (``a/x.jpg`` and ``b/x.jpg``; ``x.jpg`` and ``x.png`` beside it, which
    also share one label file)."""
    stems: dict[str, int] = {}
    for path in paths:
        stems[path.stem] = stems.get(path.stem, 0) + 1
    return {p: p.stem if stems[p.stem] == 1 else Path(os.path.relpath(p, root)).as_posix()
            for p in paths}  # fmt: skip


def _yolo_class_ids(data_yaml: Path, names) -> dict[int, str]:
    """data.yaml's ``names`` as class id -> name, in id order: a list (ids 0..N-1) or a
    mapping whose keys are the ids (integers, or digit strings: ``'10'`` after ``'9'``); ids
    may skip numbers; a name given twice is a DataError."""
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not names:
        raise DataError(f"{data_yaml}: 'names' must be a list or a mapping of class names")
    ids: dict[int, str] = {}
    for key, name in names.items():
        text = str(key).strip()
        if isinstance(key, bool) or not (isinstance(key, int) or text.isdigit()) or int(text) < 0:
            raise DataError(f"{data_yaml}: 'names' keys must be class numbers, got {key!r}")
        if int(text) in ids:
            raise DataError(f"{data_yaml}: 'names' gives class {int(text)} twice")
        # YAML reads null, ~, yes, no, on, off as no text: "None" or "True" is no class name
        if not ((isinstance(name, str) and name.strip()) or type(name) is int):
            raise DataError(
                f"{data_yaml}: 'names'[{key!r}] is {_json_text(name)}, not a class name (quote "
                "a name that YAML reads otherwise: 'null', 'yes')"
            )
        ids[int(text)] = str(name)
    repeated = sorted({n for n in ids.values() if list(ids.values()).count(n) > 1})
    if repeated:
        raise DataError(f"{data_yaml}: 'names' names {repeated} more than once")
    return dict(sorted(ids.items()))


def _yolo_line(line: str, yaml_ids: dict[int, str], position: dict, width: int, height: int):
    """``((box, label), clip note or None)`` for a usable label line, else ``(None, why)``."""
    parts = line.split()
    if len(parts) != 5:
        return None, f"expected 'class cx cy w h', got {len(parts)} fields: {line.strip()!r}"
    try:
        cls = int(parts[0])
    except ValueError:
        return None, f"expected 'class cx cy w h', got the class {parts[0]!r}: {line.strip()!r}"
    try:
        cx, cy, w, h = (float(v) for v in parts[1:])
    except ValueError:
        return None, f"expected 'class cx cy w h', got a non-numeric value: {line.strip()!r}"
    if cls not in yaml_ids:
        known = f"{len(yaml_ids)}: {_id_ranges(list(yaml_ids))}"
        return None, f"unknown class {cls} (data.yaml names {known})"
    if yaml_ids[cls] not in position:
        return None, OtherClass(yaml_ids[cls], list(position), f"index {cls}; ")
    box = (
        (cx - w / 2) * width,
        (cy - h / 2) * height,
        (cx + w / 2) * width,
        (cy + h / 2) * height,
    )
    box, note = _fit_box(box, width, height)
    return (None, note) if box is None else ((box, position[yaml_ids[cls]]), note)


def _id_ranges(ids: list[int]) -> str:
    """Sorted class ids as runs: ``0..79``, or ``0, 2..5`` where numbers are skipped."""
    runs: list[list[int]] = []
    for i in ids:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(f"{a}..{b}" if b > a else str(a) for a, b in runs)


# ---------------------------------------------------------------- CSV boxes


def read_csv(
    csv_path: str | Path,
    image_dir: str | Path | None = None,
    *,
    class_map: str | Path | None = None,
    class_names: Sequence[str] | None = None,
    split_file: str | Path | None = None,
    strict: bool = False,
) -> DatasetIndex:
    """A CSV of boxes (see ``csv_boxes``): ``image_path,xmin,ymin,xmax,ymax,label`` with a
    header, or keras-retinanet's header-less ``path,x1,y1,x2,y2,class_name``. Image paths are
    relative to ``image_dir`` (default: the CSV's folder) or absolute. Classes:
    ``class_names`` (by name), else the ``class_map`` CSV's (``class_name,id``, in id order),
    else every name seen, sorted. Every problem names the CSV and the line; ``split_file``
    selects images by stem, as for VOC."""
    csv_path = Path(csv_path)
    try:
        table = parse_boxes_csv(csv_path)
        mapped = read_class_map(class_map) if class_map is not None else None
    except CsvError as err:
        raise DataError(str(err)) from err
    if not table.rows and not table.problems:
        raise DataError(f"{csv_path}: lists no images (a header and no row)")
    names = _class_list(class_names) or mapped or table.class_names()
    root = Path(image_dir) if image_dir is not None else csv_path.parent
    out = _Collector(strict)
    by_image = table.by_image()
    wanted = None
    if split_file is not None:
        stems = [(root / image).stem for image in by_image]
        wanted = _split_selection(Path(split_file), stems, csv_path, out)
    events = [(p.line, "annotation", p.why) for p in table.problems]
    records = []
    for image, (line, rows) in by_image.items():
        path = root / image
        if wanted is None or path.stem in wanted:
            record = _csv_record(path, str(image), (line, rows), names, events, class_names)
            records += [record] if record is not None else []
    report = {"image": out.skip, "annotation": out.skip_annotation, "clip": out.clip}
    report["bare"] = lambda where, text: out.count_bare()
    for line, kind, text in sorted(events, key=lambda e: e[0]):  # in file order
        report[kind](f"{csv_path} line {line}", text)
    return out.index(records, names, str(csv_path))


def _csv_record(path: Path, image_id: str, rows: tuple, names: list[str], events: list, given=None):
    """The record of one image of a CSV from its ``(first line, usable rows)``, or None when
    the image cannot be read; what is skipped or clipped is added to ``events`` as
    ``(line, kind, text)``. ``given``: ``names`` are the caller's class names."""
    first, rows = rows
    try:
        width, height = image_size(path)
    except DataError as err:
        events.append((first, "image", str(err)))
        return None
    position = {n: i + 1 for i, n in enumerate(names)}
    boxes, labels, skipped = [], [], len(events)
    for row in rows:
        if row.box is None:  # an image without objects
            continue
        if row.label not in position:  # not among the given names, or not in the class map
            problem = f"unknown class {row.label!r} (known: {_known(names)})"
            problem = OtherClass(row.label, names) if given else problem
            events.append((row.line, "annotation", problem))
            continue
        box, note = _fit_box(row.box, width, height)
        if note is not None:
            events.append((row.line, "annotation" if box is None else "clip", note))
        if box is not None:
            boxes.append(box)
            labels.append(position[row.label])
    if not boxes and any(kind == "annotation" for _, kind, _ in events[skipped:]):
        events.append((first, "bare", ""))  # every box of the image skipped
    return _make_record(path, image_id, width, height, boxes, labels, [False] * len(boxes))


def _folder_csvs(folder: Path) -> tuple[list[Path], list[Path]]:
    """The boxes CSVs and the class-map CSVs of a folder."""
    kinds = {p: csv_kind(p) for p in sorted(folder.glob("*.csv")) if p.is_file()}
    return [p for p, k in kinds.items() if k == BOXES], [
        p for p, k in kinds.items() if k == CLASS_MAP
    ]


def _csv_in_folder(folder: Path, class_map) -> tuple[Path, Path | None]:
    """The one boxes CSV of a folder and its class map (``class_map``, else the folder's one
    class-map CSV, if any); raises DataError when there is no boxes CSV or several."""
    boxes, maps = _folder_csvs(folder)
    if len(boxes) != 1:
        found = f"{len(boxes)} CSV files of boxes" + (
            f" ({', '.join(p.name for p in boxes)})" if boxes else ""
        )
        raise DataError(f"{folder}: holds {found}; give the CSV file itself")
    if class_map is None and len(maps) == 1:
        class_map = maps[0]
    return boxes[0], (Path(class_map) if class_map is not None else None)


# ---------------------------------------------------------------- detection of the format

LOOKED_FOR = (
    "data.yaml",
    "annotations/*.json",
    "*.json",
    "annotations/*.xml",
    "Annotations/*.xml",
    "*.xml",
    "*.csv",
)


def _folder_contents(folder: Path) -> str:
    """What a folder holds, for a message: ``12 .png, 1 .txt and 2 folders (images, labels)``."""
    counts: dict[str, int] = {}
    folders = []
    for p in sorted(folder.iterdir()):
        if p.is_dir():
            folders.append(p.name)
        else:
            suffix = p.suffix.lower() or "file(s) without a suffix"
            counts[suffix] = counts.get(suffix, 0) + 1
    parts = [f"{n} {s}" for s, n in sorted(counts.items(), key=lambda t: (-t[1], t[0]))]
    if folders:
        shown = ", ".join(folders[:5]) + (", ..." if len(folders) > 5 else "")
        parts.append(f"{len(folders)} folder(s) ({shown})")
    return ", ".join(parts) if parts else "nothing"


def _detect_file(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "coco"
    if suffix in (".yaml", ".yml"):
        return "yolo"
    if suffix == ".csv":
        kind = csv_kind(path)
        if kind == BOXES:
            return "csv"
        if kind == CLASS_MAP:
            raise DataError(
                f"{path}: a class map (class_name,id rows), not boxes: give the boxes CSV as "
                "the data and this file as --class-map"
            )
        raise DataError(
            f"{path}: not a CSV of boxes: {why_not_boxes(path)} (expected a header "
            f"{HEADER_FORM} or rows {KERAS_FORM})"
        )
    return None


def coco_jsons(folder: Path) -> list[Path]:
    """The COCO JSON files of a dataset folder, sorted: those in ``annotations/``, else those
    at the top that look like one (an object naming ``images`` or ``annotations`` early), not
    any JSON beside a folder of photos (a results list such as ``proposals.json``, a
    manifest)."""
    return sorted(folder.glob("annotations/*.json")) or sorted(
        p for p in folder.glob("*.json") if _looks_like_coco(p)
    )


def _looks_like_coco(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(1 << 20).decode("utf-8", errors="ignore").lstrip("\ufeff \t\r\n")
    except OSError:
        return False
    return head.startswith("{") and ('"images"' in head or '"annotations"' in head)


def _detect_folder(path: Path) -> str | None:
    if (path / "data.yaml").is_file():
        return "yolo"
    if coco_jsons(path):
        return "coco"
    if any(voc_xml_files(folder) for folder in (path / "annotations", path / "Annotations", path)):
        return "voc"
    boxes, _ = _folder_csvs(path)
    if len(boxes) > 1:
        names = ", ".join(p.name for p in boxes)
        raise DataError(f"{path}: holds {len(boxes)} CSV files of boxes ({names}); give one")
    return "csv" if boxes else None


def detect_format(path: str | Path) -> str:
    """'coco', 'voc', 'yolo' or 'csv' from what the path holds: a COCO JSON, a data.yaml or a
    CSV of boxes (by its first row) given as a file; a folder holding data.yaml, COCO JSON
    (in ``annotations/`` or at the top), VOC XML (in ``annotations/``, ``Annotations/`` or
    at the top, beside the images) or exactly one CSV of boxes."""
    path = Path(path)
    if path.is_file():
        found = _detect_file(path)
        if found is not None:
            return found
        if path.suffix.lower() in IMAGE_SUFFIXES:
            raise DataError(
                f"{path}: an image, not a dataset: this needs its boxes (a COCO .json, a VOC "
                "folder, a YOLO data.yaml or a .csv of boxes)"
            )
        if (problem := unread_picture(path)) is not None:
            raise DataError(problem)
        raise DataError(
            f"{path}: cannot tell the dataset format of a {path.suffix or 'suffix-less'} file "
            "(expected a COCO .json, a YOLO data.yaml or a .csv of boxes); give --format"
        )
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder")
    found = _detect_folder(path)
    if found is not None:
        return found
    others = [p for p in sorted(path.glob("*.csv")) if p.is_file()]  # none of boxes
    csv_note = (
        f"; {others[0].name} is not a CSV of boxes: {why_not_boxes(others[0])}" if others else ""
    )
    raise DataError(
        f"{path}: cannot tell the dataset format: looked for {', '.join(LOOKED_FOR)}; found "
        f"{_folder_contents(path)}{csv_note} (give the annotation file or folder itself, or "
        "--format)"
    )


def read_dataset(
    path: str | Path,
    *,
    split: str = "train",
    format: str | None = None,
    split_file: str | Path | None = None,
    class_names: Sequence[str] | None = None,
    strict: bool = False,
    images: str | Path | None = None,
    class_map: str | Path | None = None,
) -> DatasetIndex:
    """Any supported dataset by path. ``split`` names COCO's ``instances_<split>.json`` (a
    name containing the split is enough: ``train`` finds ``instances_train2017.json``) and
    YOLO's data.yaml key; VOC and CSV take ``split_file``. ``class_names`` (the training set's,
    for a validation set or a checkpoint's data) fixes the labels by name; see the module.
    ``images``: the image folder of a COCO, VOC or CSV dataset, when it is not the usual
    one; ``class_map``: a CSV dataset's ``class_name,id`` file."""
    path = Path(path)
    fmt = _resolve_format(path, format, split)
    if images is not None and fmt == "yolo":
        raise DataError(f"{path}: --images does not apply to YOLO (data.yaml names the images)")
    if class_map is not None and fmt != "csv":
        raise DataError(f"{path}: --class-map applies to CSV datasets only, not {fmt}")
    if fmt == "coco":
        if path.is_dir():
            candidates = coco_jsons(path)
            matching = [c for c in candidates if split in c.stem]
            if not matching:
                raise DataError(
                    f"{path}: no COCO JSON for split {split!r} among {[c.name for c in candidates]}"
                )
            path = matching[0]
        return read_coco(path, images, class_names=class_names, strict=strict)
    if fmt == "yolo":
        yaml_path = path / "data.yaml" if path.is_dir() else path
        return read_yolo(yaml_path, split, class_names=class_names, strict=strict)
    if fmt == "voc":
        ann = _voc_annotation_dir(path, format)
        return read_voc(ann, images, split_file=split_file, class_names=class_names, strict=strict)
    if fmt == "csv":
        if path.is_dir():
            path, class_map = _csv_in_folder(path, class_map)
        elif path.suffix.lower() != ".csv" and path.is_file() and csv_kind(path) != BOXES:
            # a JSON or XML read as CSV would warn of each of its lines
            raise DataError(f"--format csv: {path} is not a CSV of boxes ({why_not_boxes(path)})")
        return read_csv(
            path,
            images,
            class_map=class_map,
            class_names=class_names,
            split_file=split_file,
            strict=strict,
        )
    raise DataError(f"unknown dataset format {fmt!r}: use coco, voc, yolo or csv")


def _voc_annotation_dir(path: Path, given_fmt: str | None) -> Path:
    """The folder of a VOC dataset's XML files: ``annotations/`` or ``Annotations/`` in
    ``path``, else ``path``; raises DataError when it holds none (``--format voc`` given for
    a COCO JSON or a data.yaml: ``given_fmt``)."""
    ann = path
    for sub in ("annotations", "Annotations"):
        if (path / sub).is_dir():
            ann = path / sub
    if not voc_xml_files(ann):
        option = "--format voc: " if given_fmt is not None else ""
        if path.is_file():
            what = f"a {path.suffix or 'suffix-less'} file, not a folder"
        else:
            what = f"looked in {ann.name}/" if ann != path else "looked in the folder"
        raise DataError(f"{option}{path} holds no VOC XML (.xml) file ({what})")
    return ann


def _resolve_format(path: Path, fmt: str | None, split: str) -> str:
    """``fmt``, or the format detected; a folder with both YOLO labels and COCO JSON (COCO128)
    is YOLO unless its data.yaml lacks the split and a COCO JSON names it."""
    if fmt is not None:
        return fmt
    fmt = detect_format(path)
    if fmt == "yolo" and path.is_dir():
        meta = read_data_yaml(path / "data.yaml")
        meta = meta if isinstance(meta, dict) else {}
        has_json = any(split in c.stem for c in path.glob("annotations/*.json"))
        if split not in meta and has_json:
            fmt = "coco"
    return fmt
