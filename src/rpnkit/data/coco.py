"""The COCO JSON reader, ``read_coco`` (what every reader shares: ``records``).

COCO ``[x, y, w, h]`` -> ``(x, y, x + w, y + h)``; ``iscrowd`` (0 or 1, anything else is a
malformed annotation) makes an ignore region. Without ``class_names`` the classes are the
JSON's categories sorted by id. Annotations that refer to no image of the JSON are counted in
one line; images that share an id while naming different files are skipped, and the
annotations of that id counted in one line (they cannot be attributed). Malformed categories
(or two of one name) are an error (the class ids depend on them), as is a JSON that is not
COCO instances JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .records import (
    DataError,
    DatasetIndex,
    OtherClass,
    _class_list,
    _Collector,
    _fit_box,
    _json_text,
    _make_record,
    _split_selection,
    image_size,
    looked_in,
)


def _is_id(value) -> bool:
    """A COCO id: an integer or a string."""
    return isinstance(value, int | str) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass
class _CocoClasses:
    names: list[str]  # the index's class names
    name_of: dict  # category id -> its name
    label_of: dict  # category id -> label in 1..K; categories not among class_names are absent


def read_coco(
    json_path: str | Path,
    image_dir: str | Path | None = None,
    *,
    split_file: str | Path | None = None,
    class_names: Sequence[str] | None = None,
    strict: bool = False,
) -> DatasetIndex:
    """A COCO ``instances_*.json``. ``image_dir`` defaults to ``images/<split>`` or ``<split>``
    beside the ``annotations`` folder, for ``annotations/instances_<split>.json``.
    ``split_file`` selects images by their file names' stems, as for VOC (``records``), or
    by their integer image ids (``139``, as written in the JSON).
    Classes: the categories sorted by id, or ``class_names`` (matched by category name)."""
    json_path = Path(json_path)
    data = _load_coco_json(json_path)
    if not data["images"]:
        raise DataError(f"{json_path}: lists no images ('images' is empty)")
    classes = _coco_classes(json_path, data["categories"], _class_list(class_names))
    given = image_dir is not None
    image_dir = Path(image_dir) if given else _coco_image_dir(json_path)
    out = _Collector(strict)
    images, shared = _coco_images(json_path, data["images"], out)
    anns_of = _coco_annotations_by_image(json_path, data["annotations"], images, shared, out)
    if split_file is not None:  # by file stem, or by the JSON's integer image id
        ids = [k for k, e in images.items() if e is not None]
        names = [images[k]["file_name"] for k in ids]
        wanted = _split_selection(Path(split_file), names, json_path, out, image_ids=ids)
        images = {ids[i]: images[ids[i]] for i in sorted(wanted)}
    out.hold_until_found(looked_in([image_dir], given))  # one line if none is found
    records = []
    for image_id, entry in images.items():
        if entry is None:  # a malformed entry, already reported
            continue
        path = image_dir / entry["file_name"]
        try:
            width, height = image_size(path)  # trust the file: annotation sizes are sometimes off
        except DataError as err:
            out.skip_image(path, err)
            continue
        out.found()
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
    box, note = _coco_box(bbox, width, height)
    if box is None:
        return None, note
    if area is None:
        area = (
            float(bbox[2]) * float(bbox[3])
            if note is None
            else (box[2] - box[0]) * (box[3] - box[1])
        )
    return (box, classes.label_of[category], bool(crowd), float(area)), note


def _coco_box(bbox: list, width: int, height: int):
    """``_fit_box`` of a COCO ``bbox`` ``[x, y, w, h]``, its problems told by the JSON's
    numbers (a box of zero or negative width or height by its side): what the file says."""
    x, y, w, h = (float(v) for v in bbox)
    shown = f"bbox {_json_text(bbox)} (x, y, w, h)"
    if all(math.isfinite(v) for v in (x, y, w, h)):
        sides = [(side, v) for side, v in (("width", w), ("height", h)) if v <= 0]
        if sides:
            why = " and ".join(f"{'zero' if v == 0 else 'negative'} {s}" for s, v in sides)
            return None, f"{shown} is empty or inverted: {why}"
    return _fit_box((x, y, x + w, y + h), width, height, shown=shown)


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
