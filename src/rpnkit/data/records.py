"""What every dataset reader shares: the ``Record`` and ``DatasetIndex`` they return, how they
report what they leave out (``_Collector``: ``SkippedSample``, ``DataNote``, ``DataError``),
the image files' sizes from their headers (EXIF, Pillow's warnings, unread kinds), and the
checks of boxes, class names and split files.

Each reader (``coco``, ``voc``, ``yolo``, ``csv_dataset``; ``readers.read_dataset`` picks one)
returns a ``DatasetIndex``: one ``Record`` per usable image (boxes converted to xyxy pixels by
the reader, never later), the class names, and one line per sample that was left out, naming
the file (with the entry index, object index or line number) and the problem, each also
warned as a ``SkippedSample``. ``strict=True`` raises ``DataError`` at the first problem
instead. Crowd (COCO) and difficult (VOC) objects become ignore regions.

Class ids: labels are 1..K. Without ``class_names`` they follow the dataset's own order (each
reader's module says which). With ``class_names`` (the training set's names, as a checkpoint
stores them) every object is labelled BY NAME with its position in that list, whatever the
split holds; an object of a class not in the list is left out, and all such objects are
reported in one line (``OtherClass``: a count per class and the first object's own line; with
``strict``, the first is an error).

Policy, the same for the four formats: a bad image (missing, unreadable, too large, a
malformed XML or label file, a malformed COCO image entry) is skipped; a bad annotation (a
COCO annotation, a VOC object, a YOLO line, a CSV row: malformed, of an unknown class, with a NaN,
infinite, empty or inverted box, or a box wholly outside its image) is skipped alone and the
image keeps its other boxes (an image may end with none: counted in ``DatasetIndex.bare`` and
the summary). A box that overshoots its image by
at most ``BORDER_TOLERANCE`` pixels is clipped silently; one that overshoots further but
overlaps the image is clipped and counted in ``DatasetIndex.clipped``. Ids of a split file
(any format: image file stems) that name no image are skipped in one line, as are the label
lines of class ids that a YOLO data.yaml does not name (``_Collector.skip_annotation_later``)
and the images of a COCO, VOC or CSV dataset none of whose images is found, with where they
were looked for (``_Collector.hold_until_found``: a wrong image folder, not many missing
images). A dataset or split file that lists nothing is an error.
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
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

# the pictures rpnkit reads, in folders and named by annotations alike: JPEG (.mpo: a camera's
# multi-picture JPEG), PNG, BMP, TIFF, WebP, GIF, JPEG 2000 (satellite images) and Netpbm;
# a GIF or MPO is read as its first frame. Pillow knows more (icons, Photoshop, PDF): those
# are refused by name (``unread_picture``).
IMAGE_SUFFIXES = (
    *(".jpg", ".jpeg", ".jpe", ".jfif", ".mpo", ".png", ".bmp", ".tif", ".tiff", ".webp"),
    *(".gif", ".jp2", ".j2k", ".j2c", ".jpc", ".jpf", ".jpx", ".pbm", ".pgm", ".ppm", ".pnm"),
)
# a box may overshoot its image by this many pixels (rounding in annotation tools) and is
# clipped silently; further out it is clipped and counted, and wholly outside it is skipped
BORDER_TOLERANCE = 1.0


class DataError(ValueError):
    """A problem with the dataset, naming the file."""


class ImageNotFound(DataError):
    """An image file that is not where its annotation puts it; ``looked_for``: the path (or
    name) looked for, for the one line of a dataset none of whose images is found."""

    def __init__(self, message: str, looked_for: str | Path = "") -> None:
        super().__init__(message)
        self.looked_for = str(looked_for)


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
        self._held: list[str] | None = None  # the lines held until an image file is found
        self._not_found: list[tuple[int, str]] = []  # held: (position, path) of images not found
        self._how = ""  # where the images were looked for, and what to give

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

    def hold_until_found(self, how: str) -> None:
        """Hold the lines to say until an image file is found (``found``). When none is,
        ``index`` says the images not found in one line, with ``how`` (where they were looked
        for and what to give, ``looked_in``), rather than one line each: a wrong image folder,
        not many missing images. Nothing is held with ``strict``: the first problem stops."""
        if not self.strict:
            self._held, self._how = [], how

    def found(self) -> None:
        """An image file is found (read, or there but unreadable): the lines held are said, in
        order, and no more are held."""
        held, self._held = self._held, None
        for line in held or ():
            self._warn(line)

    def skip_image(self, where: str | Path, err: DataError) -> None:
        """An image left out for ``err`` (``image_size``'s, a finder's), in one line ``where:
        problem``: one not found (``ImageNotFound``) is held while no image file is found."""
        if not isinstance(err, ImageNotFound):
            self.found()
        elif self._held is not None:
            self._not_found.append((len(self._held), err.looked_for))
        self.skip(where, str(err).removeprefix(f"{where}: "))

    def skip_annotation_later(self) -> None:
        """One annotation left out, said later with others of its kind in one line
        (``report``): counted now, for ``image_done``."""
        self.annotations += 1

    def report(self, line: str) -> None:
        """The one line for annotations left out with ``skip_annotation_later``."""
        self._report(line)

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
        if self._held is not None:
            self._held.append(line)
        else:
            self._warn(line)

    def _warn(self, line: str) -> None:
        warnings.warn(f"skipped {line}", SkippedSample, stacklevel=_caller_level())
        self.issues.append(line)

    def _none_found(self, source: str) -> None:
        """The lines held when no image file was found (``hold_until_found``) said, those of
        the images not found as one, in the place of the first, when there are several."""
        if self._held is None:  # an image file was found, or nothing was held
            return
        held, missing, self._held = self._held, self._not_found, None
        if len(missing) > 1:
            first, gone = missing[0], {position for position, _ in missing}
            held[first[0]] = (
                f"{source}: none of the {len(missing)} images it names is found (first: "
                f"{first[1]}); {self._how}"
            )
            held = [line for i, line in enumerate(held) if i == first[0] or i not in gone]
        for line in held:
            self._warn(line)

    def index(self, records: list[Record], names: list[str], source: str) -> DatasetIndex:
        self._none_found(source)
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


def looked_in(folders: Sequence[Path], given: bool) -> str:
    """Where a dataset's images were looked for and what to give, for the one line of a
    dataset none of whose images is found (``_Collector.hold_until_found``); ``given``: the
    one folder is the caller's (``--images``)."""
    if given:
        return f"they were looked for in --images {folders[0]} (images=)"
    where = ", ".join(str(folder) for folder in folders)
    return f"they were looked for in {where}: give --images DIR (images=)"


def _note_repeated_boxes(records: list[Record], names: list[str], source: str) -> None:
    """One ``DataNote`` for boxes that repeat another of their image exactly (class and
    corners: an annotation tool's double click, a CSV row pasted twice). They are kept, as
    given, in every format: each counts as an object in training and evaluation. One sort of
    every box of the dataset (COCO's 860,000 in about a second)."""
    counts = [len(r.boxes) for r in records]
    if sum(counts) < 2:
        return
    rows = np.column_stack([
        np.repeat(np.arange(len(records)), counts),  # the image
        np.concatenate([r.boxes for r in records]),
        np.concatenate([r.labels for r in records]),
        np.concatenate([r.ignore for r in records]),  # a crowd region apart
    ])  # fmt: skip
    _, first_of, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    repeats = np.flatnonzero(first_of[inverse.ravel()] != np.arange(len(rows)))
    if len(repeats) == 0:
        return
    image, box, label = int(rows[repeats[0], 0]), rows[repeats[0], 1:5], int(rows[repeats[0], 5])
    corners = ", ".join(f"{v:g}" for v in box)
    warnings.warn(
        f"{source}: {len(repeats)} box(es) repeat another box of their image exactly (first: "
        f"{records[image].path.name}: {names[label - 1]!r} at ({corners})); kept: each counts "
        "as an object in training and evaluation",
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


# the modules of the dataset readers, whose frames a warning skips to point at their caller:
# this one, the format readers and the dispatcher (named by file: this module imports none)
_READER_FILES = (
    __file__,
    *(
        os.path.join(os.path.dirname(__file__), f"{name}.py")
        for name in ("coco", "voc", "yolo", "csv_dataset", "readers")
    ),
)


def _caller_level() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside the reader modules
    (``_READER_FILES``), the code that called the reader."""
    frame, level = sys._getframe(1), 1  # level 1: the frame that calls warnings.warn
    ours = (*_READER_FILES, contextlib.__file__)  # and the context managers' frames
    while frame is not None and frame.f_code.co_filename in ours:
        frame, level = frame.f_back, level + 1
    return level


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, after EXIF rotation; raises DataError."""
    if not path.is_file():
        raise ImageNotFound(f"{path}: image file not found", path)
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
    ``IMAGE_SUFFIXES``: an icon, a Photoshop file, a PDF), whether found in a folder or
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


PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def listed(items, n: int = 5) -> str:
    """The first ``n`` of ``items`` (strings) for a message, ``, ...`` after them when there
    are more: ``a, b, c, ...``."""
    items = list(items)
    return ", ".join(items[:n]) + (", ..." if len(items) > n else "")


def caller_of_package() -> int:
    """The ``stacklevel`` (of a warning issued by this function's caller) of the frame that
    called the outermost rpnkit frame; that frame itself when nothing called it."""
    frame, level, outermost = sys._getframe(1), 1, 1  # level 1: the frame that warns
    while frame is not None:
        if frame.f_code.co_filename.startswith(PACKAGE_DIR):
            outermost = level
        frame, level = frame.f_back, level + 1
    return outermost + 1 if outermost + 1 < level else outermost


@contextlib.contextmanager
def named_pillow_warnings(path: Path):
    """Pillow's warnings about a file's metadata (corrupt EXIF data or a tag past the file's
    end, raised as a JPEG is opened: plain user warnings), which name no file, passed on
    as one ``DataNote`` naming ``path``, at the line that called rpnkit. Every other warning
    (Pillow's ``DecompressionBombWarning`` among them) is left to the filters as it was: an
    "error" still raises where it is raised, and one that would show is shown as raised.
    Catching swaps the process's warning state, which only the main thread may do (two threads
    catching at once leave it swapped): elsewhere (a prefetching thread) nothing is caught."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.filterwarnings("always", category=UserWarning, module=r"PIL(\.|$)")
            yield
    finally:
        metadata = [w for w in caught if w.category is UserWarning and _from_pillow(w)]
        for w in caught:
            if w not in metadata:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
        if metadata:
            problems = "; ".join(dict.fromkeys(str(w.message).strip() for w in metadata))
            note = DataNote(f"{path}: Pillow: {problems}")
            warnings.warn(note, stacklevel=caller_of_package())


def _from_pillow(w: warnings.WarningMessage) -> bool:
    return Path(w.filename).parent.name == "PIL"


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
    box: tuple[float, float, float, float], width: int, height: int, *, shown: str | None = None
) -> tuple[tuple[float, float, float, float] | None, str | None]:
    """An xyxy box as used in a ``width`` x ``height`` image, and a note: ``(box, None)`` when it
    lies in the image up to ``BORDER_TOLERANCE`` (``_make_record`` clips the overshoot);
    ``(clipped box, what was done)`` when it overshoots further but overlaps the image;
    ``(None, why)`` when it is unusable (NaN or infinite, empty or inverted, wholly outside).
    ``shown``: the box as the notes name it (default ``box (x1, y1, x2, y2)``): as the
    annotation gives it, when that is another form (COCO's ``bbox [x, y, w, h]``)."""
    shown = shown or f"box {tuple(round(v, 2) for v in box)}"
    if not all(math.isfinite(v) for v in box):
        return None, f"{shown} has a NaN or infinite coordinate"
    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        return None, f"{shown} is empty or inverted"
    if x1 >= width or y1 >= height or x2 <= 0 or y2 <= 0:
        return None, f"{shown} is out of bounds of the {width}x{height} image (wholly outside)"
    t = BORDER_TOLERANCE
    if x1 < -t or y1 < -t or x2 > width + t or y2 > height + t:
        inside = (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))
        clipped = tuple(round(v, 2) for v in inside)
        return inside, f"{shown} overshoots the {width}x{height} image; clipped to {clipped}"
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


def _json_text(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


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


# ---------------------------------------------------------------- split files


def _read_split(path: Path) -> dict[str, bool]:
    """Image ids (file stems), in file order, once each, listed in a text file (the first word
    of each line: an id, or a file name with an image suffix) or in a CSV's ``filename``
    column; each with whether it was written bare, without a suffix (``139``, not
    ``139.jpg``), as a COCO image id may be (``_split_selection``)."""
    if not path.is_file():
        raise DataError(f"{path}: split file not found")
    try:
        if path.suffix.lower() == ".csv":
            with path.open(newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                if "filename" not in (reader.fieldnames or []):
                    raise DataError(f"{path}: a split CSV needs a 'filename' column")
                written = [(Path(row["filename"] or "").stem, row["filename"]) for row in reader]
        else:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
            words = [line.split()[0] for line in lines if line.strip()]
            written = [(_split_id(word), word) for word in words]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: cannot read the split file ({err})") from err
    ids: dict[str, bool] = {}
    for image_id, word in written:
        if image_id:
            ids[image_id] = ids.get(image_id, False) or image_id == word
    return ids


def _split_id(word: str) -> str:
    """An id of a text split: ``raccoon-1`` as written, ``raccoon-1.jpg`` (or a path to it) as
    its stem; a suffix that is not an image's is part of the id (``2008_000001.v2``)."""
    name = Path(word)
    return name.stem if name.suffix.lower() in IMAGE_SUFFIXES else word


def _split_selection(
    path: Path, names: Sequence[str], dataset, out: _Collector, image_ids: Sequence | None = None
) -> set[int]:
    """The positions (in ``names``, a dataset's image file names) of the images that the
    split file ``path`` names. An id names the images of its stem; with ``image_ids`` (a COCO
    JSON's, one per name), an id written bare as an integer (``139``) also names the image of
    that integer id, and one naming an image by stem and another by id is an error. Ids naming
    none are skipped in one line (a count and the first few); a split file naming none is an
    error."""
    ids = _read_split(path)
    if not ids:
        raise DataError(f"{path}: lists no image ids")
    chosen, unmatched = _split_matches(path, ids, names, dataset, image_ids or ())
    first = listed(map(repr, unmatched), 3)
    if len(unmatched) == len(ids):
        like = f"; its images are named like {Path(names[0]).stem!r}" if names else ""
        if image_ids and _is_integer_id(image_ids[0]):
            like += f" (image id {image_ids[0]})"
        raise DataError(
            f"{path}: none of its {len(ids)} ids names an image of {dataset} (first: {first}{like})"
        )
    if unmatched:
        out.skip(
            path,
            f"{len(unmatched)} of its {len(ids)} ids name no image of {dataset} (first: {first})",
            count=len(unmatched),
        )
    return chosen


def _split_matches(
    path: Path, ids: dict[str, bool], names: Sequence[str], dataset, image_ids: Sequence
) -> tuple[set[int], list[str]]:
    """The positions of the images that a split's ``ids`` (id -> written bare) name, by the
    stems of ``names`` or as integer ``image_ids`` (see ``_split_selection``), and the ids that
    name none; raises DataError for an id naming one image by stem and another by id."""
    by_stem: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        by_stem.setdefault(Path(name).stem, []).append(i)
    by_id = {image_id: i for i, image_id in enumerate(image_ids) if _is_integer_id(image_id)}
    chosen, unmatched = set(), []
    for image_id, bare in ids.items():
        by_name = by_stem.get(image_id, [])
        numbered = by_id.get(_written_integer(image_id)) if bare and by_id else None
        if numbered is not None and by_name and numbered not in by_name:
            raise DataError(
                f"{path}: {image_id!r} names two images of {dataset}: {names[by_name[0]]!r} by "
                f"its file name and {names[numbered]!r} by its image id; write the file name "
                "of the one meant, with its suffix"
            )
        found = set(by_name) | ({numbered} if numbered is not None else set())
        chosen |= found
        unmatched += [] if found else [image_id]
    return chosen, unmatched


def _is_integer_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _written_integer(text: str) -> int | None:
    """The integer that ``text`` is written as (``139``; not ``0139``, ``+139`` or ``1_39``)."""
    try:
        number = int(text)
    except ValueError:
        return None
    return number if str(number) == text else None
