"""Readers for COCO JSON, Pascal VOC XML and YOLO txt datasets.

Each reader returns a ``DatasetIndex``: one ``Record`` per usable image (boxes converted to
xyxy pixels here, never later), the class names, and one line per sample that was left out,
naming the file and the problem. ``strict=True`` raises ``DataError`` at the first problem
instead.

Conventions: COCO ``[x, y, w, h]`` -> ``(x, y, x + w, y + h)``; VOC's 1-based inclusive pixel
indices -> ``(xmin - 1, ymin - 1, xmax, ymax)`` (as detectron2); YOLO's normalised
``cx cy w h`` -> pixels with the image size. ``iscrowd`` (COCO) and ``difficult`` (VOC) become
ignore regions. Class ids are remapped to 1..K in the dataset's own order.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# a box may overshoot its image by this many pixels (rounding in annotation tools) and is
# clipped; further out it is an error
BORDER_TOLERANCE = 1.0


class DataError(ValueError):
    """A problem with the dataset, naming the file."""


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
    records: list[Record]
    class_names: list[str]
    issues: list[str] = field(default_factory=list)
    source: str = ""

    def summary(self) -> str:
        text = f"{self.source}: {len(self.records)} images, {len(self.class_names)} classes"
        if self.issues:
            text += f", {len(self.issues)} sample(s) skipped"
        return text


class _Collector:
    """Skips a sample with a warning, or raises with ``strict``."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.issues: list[str] = []

    def skip(self, where: str | Path, problem: str) -> None:
        line = f"{where}: {problem}"
        if self.strict:
            raise DataError(line)
        warnings.warn(f"skipped {line}", stacklevel=3)
        self.issues.append(line)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, after EXIF rotation; raises DataError."""
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = img.getexif().get(0x0112, 1)
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(f"{path}: unreadable image ({err})") from err
    if width <= 0 or height <= 0:
        raise DataError(f"{path}: zero-size image ({width}x{height})")
    # orientations 5-8 rotate by 90 degrees: the decoded image is height x width
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _check_box(box: tuple[float, float, float, float], width: int, height: int) -> str | None:
    """Why an xyxy box is unusable, or None."""
    if not all(math.isfinite(v) for v in box):
        return f"box {tuple(round(v, 2) for v in box)} has a NaN or infinite coordinate"
    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        return f"box {tuple(round(v, 2) for v in box)} is empty or inverted"
    t = BORDER_TOLERANCE
    if x1 < -t or y1 < -t or x2 > width + t or y2 > height + t:
        return (
            f"box {tuple(round(v, 2) for v in box)} is out of bounds of the {width}x{height} image"
        )
    return None


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


def read_coco(
    json_path: str | Path, image_dir: str | Path | None = None, *, strict: bool = False
) -> DatasetIndex:
    """A COCO ``instances_*.json``. ``image_dir`` defaults to ``images/<split>`` or ``<split>``
    beside the ``annotations`` folder, for ``annotations/instances_<split>.json``."""
    json_path = Path(json_path)
    try:
        data = json.loads(json_path.read_text())
    except OSError as err:
        raise DataError(f"{json_path}: cannot read ({err})") from err
    except json.JSONDecodeError as err:
        raise DataError(f"{json_path}: malformed JSON at line {err.lineno}: {err.msg}") from err
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{json_path}: not COCO instances JSON (no '{key}' list)")
    image_dir = Path(image_dir) if image_dir is not None else _coco_image_dir(json_path)
    categories = sorted(data["categories"], key=lambda c: c["id"])
    label_of = {c["id"]: i + 1 for i, c in enumerate(categories)}
    anns_of: dict = {}
    for ann in data["annotations"]:
        anns_of.setdefault(ann.get("image_id"), []).append(ann)

    out = _Collector(strict)
    records = []
    for img in data["images"]:
        path = image_dir / img.get("file_name", "")
        problem = None
        boxes, labels, ignore, areas = [], [], [], []
        width, height = int(img.get("width", 0)), int(img.get("height", 0))
        try:
            real_w, real_h = image_size(path)
        except DataError as err:
            out.skip(path, str(err).split(": ", 1)[1])
            continue
        if (width, height) != (real_w, real_h):
            width, height = real_w, real_h  # trust the file: annotation sizes are sometimes off
        for ann in anns_of.get(img.get("id"), []):
            bbox = ann.get("bbox")
            if not isinstance(bbox, list) or len(bbox) != 4:
                problem = f"annotation {ann.get('id')}: malformed bbox {bbox!r}"
                break
            if ann.get("category_id") not in label_of:
                problem = f"annotation {ann.get('id')}: unknown category {ann.get('category_id')}"
                break
            x, y, w, h = (float(v) for v in bbox)
            box = (x, y, x + w, y + h)
            why = _check_box(box, width, height)
            if why is not None:
                problem = f"annotation {ann.get('id')}: {why}"
                break
            boxes.append(box)
            labels.append(label_of[ann["category_id"]])
            ignore.append(bool(ann.get("iscrowd", 0)))
            areas.append(float(ann.get("area", w * h)))
        if problem is not None:
            out.skip(path, problem)
            continue
        records.append(_make_record(path, img["id"], width, height, boxes, labels, ignore, areas))
    names = [c["name"] for c in categories]
    return DatasetIndex(records, names, out.issues, source=str(json_path))


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
    class_names: list[str] | None = None,
    strict: bool = False,
) -> DatasetIndex:
    """A folder of VOC XML files. ``split_file``: a text file of image ids (VOC's
    ``ImageSets/Main/*.txt``) or a CSV with a ``filename`` column (e.g. raccoon's
    ``train_labels.csv``) selecting the images. Classes: ``class_names`` or every name seen,
    sorted."""
    annotation_dir = Path(annotation_dir)
    image_dir = Path(image_dir) if image_dir is not None else _voc_image_dir(annotation_dir)
    xml_files = sorted(annotation_dir.glob("*.xml"))
    if split_file is not None:
        wanted = _read_split(Path(split_file))
        xml_files = [f for f in xml_files if f.stem in wanted]
    out = _Collector(strict)
    parsed = []
    for xml_file in xml_files:
        try:
            root = ET.parse(xml_file).getroot()
        except ET.ParseError as err:
            out.skip(xml_file, f"malformed XML ({err})")
            continue
        objects = []
        problem = None
        for i, obj in enumerate(root.iter("object")):
            name = (obj.findtext("name") or "").strip()
            bnd = obj.find("bndbox")
            try:
                coords = [float(bnd.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
            except (AttributeError, TypeError, ValueError):
                problem = f"object {i} ({name or 'no name'}): missing or non-numeric bndbox"
                break
            difficult = (obj.findtext("difficult") or "0").strip() == "1"
            objects.append((name, coords, difficult))
        if problem is not None:
            out.skip(xml_file, problem)
            continue
        parsed.append((xml_file, root, objects))
    names = class_names or sorted({name for _, _, objs in parsed for name, _, _ in objs})
    label_of = {n: i + 1 for i, n in enumerate(names)}

    records = []
    for xml_file, root, objects in parsed:
        filename = root.findtext("filename") or f"{xml_file.stem}.jpg"
        path = image_dir / filename
        try:
            width, height = image_size(path)
        except DataError as err:
            out.skip(xml_file, str(err))
            continue
        boxes, labels, ignore, problem = [], [], [], None
        for i, (name, (xmin, ymin, xmax, ymax), difficult) in enumerate(objects):
            if name not in label_of:
                problem = f"object {i}: unknown class {name!r} (known: {names})"
                break
            box = (xmin - 1, ymin - 1, xmax, ymax)
            why = _check_box(box, width, height)
            if why is not None:
                problem = f"object {i} ({name}): {why}"
                break
            boxes.append(box)
            labels.append(label_of[name])
            ignore.append(difficult)
        if problem is not None:
            out.skip(xml_file, problem)
            continue
        records.append(_make_record(path, xml_file.stem, width, height, boxes, labels, ignore))
    return DatasetIndex(records, names, out.issues, source=str(annotation_dir))


def _voc_image_dir(annotation_dir: Path) -> Path:
    for candidate in (annotation_dir.parent / "images", annotation_dir.parent / "JPEGImages"):
        if candidate.is_dir():
            return candidate
    raise DataError(f"{annotation_dir}: cannot find its images (tried images/ and JPEGImages/)")


def _read_split(path: Path) -> set[str]:
    """Image ids (file stems) listed in a text file or in a CSV's ``filename`` column."""
    if not path.is_file():
        raise DataError(f"{path}: split file not found")
    if path.suffix == ".csv":
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            if "filename" not in (reader.fieldnames or []):
                raise DataError(f"{path}: a split CSV needs a 'filename' column")
            return {Path(row["filename"]).stem for row in reader}
    return {line.split()[0] for line in path.read_text().splitlines() if line.strip()}


# ---------------------------------------------------------------- YOLO txt


def read_yolo(data_yaml: str | Path, split: str = "train", *, strict: bool = False) -> DatasetIndex:
    """A YOLO dataset described by ``data.yaml`` (``path``, ``train``/``val``, ``names``).
    Labels sit beside the images with ``images`` replaced by ``labels`` and a ``.txt`` suffix;
    a missing or empty label file means an image without objects."""
    data_yaml = Path(data_yaml)
    try:
        meta = yaml.safe_load(data_yaml.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise DataError(f"{data_yaml}: cannot read ({err})") from err
    if not isinstance(meta, dict) or split not in meta or "names" not in meta:
        raise DataError(f"{data_yaml}: needs '{split}' and 'names' entries")
    names = meta["names"]
    names = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)
    root = (data_yaml.parent / str(meta.get("path", "."))).resolve()
    image_dir = root / str(meta[split])
    if not image_dir.is_dir():
        raise DataError(f"{data_yaml}: the '{split}' image folder {image_dir} does not exist")
    out = _Collector(strict)
    records = []
    for path in sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        label_path = Path(str(path.parent).replace("/images", "/labels", 1)) / f"{path.stem}.txt"
        try:
            width, height = image_size(path)
        except DataError as err:
            out.skip(path, str(err).split(": ", 1)[1])
            continue
        boxes, labels, problem = [], [], None
        lines = label_path.read_text().splitlines() if label_path.is_file() else []
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            parts = line.split()
            try:
                cls, cx, cy, w, h = int(parts[0]), *(float(v) for v in parts[1:5])
                if len(parts) != 5:
                    raise ValueError
            except (ValueError, IndexError):
                problem = f"{label_path.name} line {n}: expected 'class cx cy w h', got {line!r}"
                break
            if not 0 <= cls < len(names):
                problem = f"{label_path.name} line {n}: unknown class {cls} ({len(names)} known)"
                break
            box = (
                (cx - w / 2) * width,
                (cy - h / 2) * height,
                (cx + w / 2) * width,
                (cy + h / 2) * height,
            )
            why = _check_box(box, width, height)
            if why is not None:
                problem = f"{label_path.name} line {n}: {why}"
                break
            boxes.append(box)
            labels.append(cls + 1)
        if problem is not None:
            out.skip(path, problem)
            continue
        records.append(
            _make_record(path, path.stem, width, height, boxes, labels, [False] * len(boxes))
        )
    return DatasetIndex(records, names, out.issues, source=f"{data_yaml} [{split}]")


# ---------------------------------------------------------------- detection of the format


def detect_format(path: str | Path) -> str:
    """'coco', 'voc' or 'yolo' from what the path holds."""
    path = Path(path)
    if path.is_file():
        if path.suffix == ".json":
            return "coco"
        if path.suffix in (".yaml", ".yml"):
            return "yolo"
    elif path.is_dir():
        if (path / "data.yaml").is_file():
            return "yolo"
        if list(path.glob("annotations/*.json")) or list(path.glob("*.json")):
            return "coco"
        if list(path.glob("annotations/*.xml")) or list(path.glob("Annotations/*.xml")):
            return "voc"
        if list(path.glob("*.xml")):
            return "voc"
    else:
        raise DataError(f"{path}: no such file or folder")
    raise DataError(
        f"{path}: cannot tell the dataset format (COCO JSON, VOC XML folder or YOLO data.yaml); "
        "give --format"
    )


def read_dataset(
    path: str | Path,
    *,
    split: str = "train",
    fmt: str | None = None,
    split_file: str | Path | None = None,
    strict: bool = False,
) -> DatasetIndex:
    """Any supported dataset by path. ``split`` names COCO's ``instances_<split>.json`` (a
    name containing the split is enough: ``train`` finds ``instances_train2017.json``) and
    YOLO's data.yaml key; VOC takes ``split_file``."""
    path = Path(path)
    if fmt is None:
        fmt = detect_format(path)
        # a folder with both YOLO labels and COCO JSON (COCO128): YOLO unless its data.yaml
        # lacks the split and a COCO JSON names it
        if fmt == "yolo" and path.is_dir():
            meta = yaml.safe_load((path / "data.yaml").read_text()) or {}
            has_json = any(split in c.stem for c in path.glob("annotations/*.json"))
            if split not in meta and has_json:
                fmt = "coco"
    if fmt == "coco":
        if path.is_dir():
            candidates = sorted(path.glob("annotations/*.json")) or sorted(path.glob("*.json"))
            matching = [c for c in candidates if split in c.stem]
            if not matching:
                raise DataError(
                    f"{path}: no COCO JSON for split {split!r} among {[c.name for c in candidates]}"
                )
            path = matching[0]
        return read_coco(path, strict=strict)
    if fmt == "yolo":
        yaml_path = path / "data.yaml" if path.is_dir() else path
        return read_yolo(yaml_path, split, strict=strict)
    if fmt == "voc":
        ann = path
        for sub in ("annotations", "Annotations"):
            if (path / sub).is_dir():
                ann = path / sub
        return read_voc(ann, split_file=split_file, strict=strict)
    raise DataError(f"unknown dataset format {fmt!r}: use coco, voc or yolo")
