"""The YOLO txt reader, ``read_yolo``: data.yaml, its splits and the label files beside the
images (what every reader shares: ``records``).

YOLO's normalised ``cx cy w h`` -> xyxy pixels with the image size. Without ``class_names``
the classes are the ``names`` of data.yaml, in id order. Label lines of class ids that
``names`` lacks (a data.yaml with too few names) are skipped in one line for the split.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import yaml

from ..config import yaml_problem
from .records import (
    IMAGE_SUFFIXES,
    DataError,
    DataNote,
    DatasetIndex,
    OtherClass,
    _caller_level,
    _class_list,
    _Collector,
    _fit_box,
    _json_text,
    _make_record,
    _split_selection,
    image_size,
)


def read_yolo(
    data_yaml: str | Path,
    split: str = "train",
    *,
    split_file: str | Path | None = None,
    class_names: Sequence[str] | None = None,
    strict: bool = False,
) -> DatasetIndex:
    """A YOLO dataset described by ``data.yaml`` (``path``, ``train``/``val``, ``names``).
    A split is an image folder (read with its sub-folders, in sorted order), a text file
    listing image paths (relative to its folder, or absolute), or a list of either, as
    Ultralytics reads them. Labels sit beside the images with ``images`` replaced by
    ``labels`` and a ``.txt`` suffix; a missing or empty label file means an image without
    objects. Image ids are the file stems (paths, where stems repeat). ``split_file`` selects
    images of the split by stem, as for VOC (``records``). Classes: data.yaml's ``names``, or
    ``class_names`` (matched by name)."""
    data_yaml = Path(data_yaml)
    yaml_ids, image_paths, root = _yolo_meta(data_yaml, split)
    given = _class_list(class_names)
    names = given or list(yaml_ids.values())
    position = {n: i + 1 for i, n in enumerate(names)}
    out = _Collector(strict)
    records = []
    unnamed: list[tuple[Path, int, UnnamedClass]] = []  # label lines of a class id without name
    labelled = 0  # images with a label file
    ids = _yolo_image_ids(image_paths, root)  # of the whole split: a selection keeps them
    if split_file is not None:
        names = [p.name for p in image_paths]
        wanted = _split_selection(Path(split_file), names, f"{data_yaml} [{split}]", out)
        image_paths = [p for i, p in enumerate(image_paths) if i in wanted]
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
            if isinstance(note, UnnamedClass) and not strict:  # said once, below
                out.skip_annotation_later()
                unnamed.append((label_path, n, note))
                continue
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
    if len(unnamed) == 1:  # its own line
        out.report(f"{unnamed[0][0]} line {unnamed[0][1]}: {unnamed[0][2]}")
    elif unnamed:
        out.report(_unnamed_line(f"{data_yaml} [{split}]", unnamed, list(yaml_ids)))
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
        return None, UnnamedClass(cls, list(yaml_ids))
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


class UnnamedClass(str):
    """The problem of a label line whose class id data.yaml's ``names`` lack: its line (as
    ``strict`` raises it), and the ``class_id``, for the one line of them all."""

    class_id: int

    def __new__(cls, class_id: int, known: list[int]) -> UnnamedClass:
        known_text = f"{len(known)}: {_id_ranges(known)}"
        text = super().__new__(cls, f"unknown class {class_id} (data.yaml names {known_text})")
        text.class_id = class_id
        return text


def _unnamed_line(
    source: str, unnamed: list[tuple[Path, int, UnnamedClass]], known: list[int]
) -> str:
    """One line for the label lines of class ids that data.yaml does not name (its ``names``
    too short, most often): how many lines in how many files, the ids, the first."""
    ids = sorted({problem.class_id for _, _, problem in unnamed})
    shown = _id_ranges(ids)
    if shown.count(",") > 2:  # scattered: their span
        shown = f"{ids[0]}..{ids[-1]} ({len(ids)} distinct)"
    where = "beyond" if ids[0] > known[-1] else "not among"
    first_file, first_line, _ = unnamed[0]
    files = len({label_file for label_file, _, _ in unnamed})
    return (
        f"{source}: {len(unnamed)} label line(s) in {files} file(s) have class ids {shown} "
        f"{where} its {len(known)} names ({_id_ranges(known)}) (first: {first_file} line "
        f"{first_line}); those boxes are left out"
    )


def _id_ranges(ids: list[int]) -> str:
    """Sorted class ids as runs: ``0..79``, or ``0, 2..5`` where numbers are skipped."""
    runs: list[list[int]] = []
    for i in ids:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(f"{a}..{b}" if b > a else str(a) for a, b in runs)
