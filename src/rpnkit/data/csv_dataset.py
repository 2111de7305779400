"""The CSV reader, ``read_csv``: a CSV of boxes (parsed by ``csv_boxes``) read with its
images, and the one boxes CSV of a folder (what every reader shares: ``records``).

CSV boxes are xyxy pixels as written. Without ``class_names`` the classes are the class map's,
in id order, else the sorted names seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .csv_boxes import BOXES, CLASS_MAP, CsvError, csv_kind, parse_boxes_csv, read_class_map
from .records import (
    DataError,
    DatasetIndex,
    OtherClass,
    _class_list,
    _Collector,
    _fit_box,
    _known,
    _make_record,
    _split_selection,
    image_size,
    looked_in,
)

# where the images of a CSV none of whose images is found were looked for, without --images
_FROM_ITS_FOLDER = (
    "a CSV's relative image paths are read from its folder: give --images DIR (images=)"
)


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
        wanted = _split_selection(Path(split_file), list(map(str, by_image)), csv_path, out)
    events = [(p.line, "annotation", p.why) for p in table.problems]
    out.hold_until_found(_FROM_ITS_FOLDER if image_dir is None else looked_in([root], True))
    records = []
    for i, (image, (line, rows)) in enumerate(by_image.items()):
        if wanted is None or i in wanted:
            record = _csv_record(root / image, str(image), (line, rows), names, events, class_names)
            records += [record] if record is not None else []
    if records:  # an image file found: no line held
        out.found()
    report = {"image": out.skip_image, "annotation": out.skip_annotation, "clip": out.clip}
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
    except DataError as err:  # said by _Collector.skip_image
        events.append((first, "image", err))
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


def folder_csvs(folder: Path) -> tuple[list[Path], list[Path]]:
    """The boxes CSVs and the class-map CSVs of a folder."""
    kinds = {p: csv_kind(p) for p in sorted(folder.glob("*.csv")) if p.is_file()}
    return [p for p, k in kinds.items() if k == BOXES], [
        p for p, k in kinds.items() if k == CLASS_MAP
    ]


def csv_in_folder(folder: Path, class_map) -> tuple[Path, Path | None]:
    """The one boxes CSV of a folder and its class map (``class_map``, else the folder's one
    class-map CSV, if any); raises DataError when there is no boxes CSV or several."""
    boxes, maps = folder_csvs(folder)
    if len(boxes) != 1:
        found = f"{len(boxes)} CSV files of boxes" + (
            f" ({', '.join(p.name for p in boxes)})" if boxes else ""
        )
        raise DataError(f"{folder}: holds {found}; give the CSV file itself")
    if class_map is None and len(maps) == 1:
        class_map = maps[0]
    return boxes[0], (Path(class_map) if class_map is not None else None)
