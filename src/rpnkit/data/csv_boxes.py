"""Boxes in CSV files: what a CSV holds and its rows parsed, for ``csv_dataset.read_csv``.

Two layouts, told apart by the first row:

- with a header naming the columns, ``image_path,xmin,ymin,xmax,ymax,label`` (in any order;
  other columns are ignored; the names in ``HEADER_NAMES`` are accepted, so raccoon's
  ``filename,width,height,class,xmin,ymin,xmax,ymax`` is read too);
- keras-retinanet's header-less ``path,x1,y1,x2,y2,class_name``, where a row whose five box and
  class fields are empty (``img.jpg,,,,,``) marks an image without objects (also accepted in
  the header form).

Boxes are xyxy in pixels, as written (no ``+1``). A class map, keras-retinanet's
``class_name,id`` rows (a header is allowed), fixes the class names and their order: labels
1..K follow the ids. This module only parses: a row that cannot be a box (a wrong field count,
an empty path, a missing or non-numeric value, no class name) is kept as a problem with its line
number; ``csv_dataset.read_csv`` reads the images, checks each box against its image and reports.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# header names accepted for each column (lower case, spaces as underscores)
HEADER_NAMES = {
    "image_path": ("image_path", "image", "path", "filename", "file_name", "file", "image_file"),
    "xmin": ("xmin", "x1", "x_min", "left"),
    "ymin": ("ymin", "y1", "y_min", "top"),
    "xmax": ("xmax", "x2", "x_max", "right"),
    "ymax": ("ymax", "y2", "y_max", "bottom"),
    "label": ("label", "class", "class_name", "category", "category_name"),
}
KERAS_FORM = "path,x1,y1,x2,y2,class_name"
HEADER_FORM = "image_path,xmin,ymin,xmax,ymax,label"
BOXES, CLASS_MAP = "boxes", "class-map"


class CsvError(ValueError):
    """A CSV that cannot be read at all (``csv_dataset`` turns it into a ``DataError``)."""


@dataclass(frozen=True)
class CsvLayout:
    """Where the six values of a row are: ``columns`` are the positions of the image path,
    x1, y1, x2, y2 and the class; ``width`` the field count of every row; ``header`` the
    header's column names (empty without one)."""

    columns: tuple[int, int, int, int, int, int]
    width: int
    header: tuple[str, ...] = ()

    @property
    def form(self) -> str:
        """The expected row, for messages: the header, or keras-retinanet's form."""
        return ",".join(self.header) if self.header else KERAS_FORM


KERAS = CsvLayout((0, 1, 2, 3, 4, 5), 6)


@dataclass(frozen=True)
class CsvRow:
    """One usable row: ``image`` the path as written, ``box`` (x1, y1, x2, y2) and ``label`` the
    class name, both None for an image without objects; ``line`` its line number (1-based)."""

    line: int
    image: str
    box: tuple[float, float, float, float] | None
    label: str | None


@dataclass(frozen=True)
class CsvProblem:
    """A row that cannot be a box: its line, why, and its image when the row has the right
    field count and a path (the image is kept, as an image whose bad annotation is left out
    in the other formats)."""

    line: int
    why: str
    image: str | None = None


@dataclass
class BoxesTable:
    """A boxes CSV parsed: its layout, its usable rows and its problem rows."""

    path: Path
    layout: CsvLayout
    rows: list[CsvRow]
    problems: list[CsvProblem]

    def by_image(self) -> dict[Path, tuple[int, list[CsvRow]]]:
        """Each image's first line and usable rows (the same path however it is written:
        ``./a.jpg`` is ``a.jpg``), in the order the images first appear; an image named only
        by problem rows has none."""
        grouped: dict[Path, tuple[int, list[CsvRow]]] = {}
        named = [(r.line, r.image, r) for r in self.rows]
        named += [(p.line, p.image, None) for p in self.problems if p.image is not None]
        for line, image, row in sorted(named, key=lambda t: t[0]):
            _, rows = grouped.setdefault(Path(image), (line, []))
            if row is not None:
                rows.append(row)
        return grouped

    def class_names(self) -> list[str]:
        """The classes the rows name, sorted (numerically when every name is a number)."""
        seen = {row.label for row in self.rows if row.label is not None}
        if all(re.fullmatch(r"-?\d+", name) for name in seen):
            return sorted(seen, key=int)
        return sorted(seen)


def _rows(path: Path):
    """``(first line, fields)`` of each non-blank row; raises CsvError for an unreadable file
    and for a field running over a line's end (a quote left open would take every later row
    into it). Bytes that are not UTF-8 are kept as surrogates (``undecodable``): only their
    rows are lost, each named by its line."""
    try:
        with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
            reader = csv.reader(f)
            last = 0
            for fields in reader:
                start, last = last + 1, reader.line_num
                if last > start and any("\n" in v or "\r" in v for v in fields):
                    raise CsvError(
                        f"{path} line {start}: a quoted field runs on to line {last} (a quote "
                        "left open?)"
                    )
                if any(v.strip() for v in fields):
                    yield start, fields
    except OSError as err:
        raise CsvError(f"{path}: cannot read ({err})") from err
    except UnicodeDecodeError as err:
        raise CsvError(f"{path}: not a text file ({err})") from err
    except csv.Error as err:
        raise CsvError(f"{path}: malformed CSV ({err})") from err


def _first_row(path: Path) -> list[str] | None:
    for _, fields in _rows(path):
        return fields
    return None


def why_not_boxes(path: str | Path) -> str:
    """Why ``csv_kind`` found no boxes in a CSV, for a message: its first row as read."""
    try:
        fields = _first_row(Path(path))
    except CsvError as err:
        return str(err).removeprefix(f"{path}: ")
    if fields is None:
        return "it holds no row"
    return f"its first row is {_shown(fields)}, {len(fields)} field(s)"


def header_layout(fields: Sequence[str]) -> CsvLayout | None:
    """The layout a header row names, or None when the row is not such a header (each of the
    six columns named exactly once)."""
    names = [v.strip().lower().replace(" ", "_") for v in fields]
    columns = []
    for accepted in HEADER_NAMES.values():
        found = [i for i, n in enumerate(names) if n in accepted]
        if len(found) != 1:
            return None
        columns.append(found[0])
    return CsvLayout(tuple(columns), len(fields), tuple(v.strip() for v in fields))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def csv_kind(path: str | Path) -> str | None:
    """What a CSV file holds, from its first row: ``"boxes"`` (a header naming the six
    columns, or six fields whose four box values are numbers or all empty), ``"class-map"``
    (``name,id`` with an integer id, or a ``class_name,id`` header), or None."""
    try:
        fields = _first_row(Path(path))
    except CsvError:
        return None
    if fields is None:
        return None
    if header_layout(fields) is not None:
        return BOXES
    values = [v.strip() for v in fields]
    if len(values) == 6 and values[0]:
        box = values[1:5]
        if all(_is_number(v) for v in box) or not any(box):
            return BOXES
    is_map = re.fullmatch(r"-?\d+", values[1]) if len(values) == 2 else False
    if len(values) == 2 and values[0] and (is_map or [v.lower() for v in values] in _MAP_HEADERS):
        return CLASS_MAP
    return None


_MAP_HEADERS = (["class_name", "id"], ["class", "id"], ["name", "id"], ["label", "id"])


def parse_boxes_csv(path: str | Path) -> BoxesTable:
    """Every row of a boxes CSV, as usable rows and problems with their line numbers."""
    path = Path(path)
    rows, problems, layout = [], [], None
    for line, fields in _rows(path):
        if layout is None:
            layout = header_layout(fields)
            if layout is not None:
                continue  # the header
            layout = KERAS
        found = parse_row(fields, layout, line)
        if isinstance(found, CsvRow):
            rows.append(found)
        else:
            problems.append(found)
    if layout is None:
        raise CsvError(f"{path}: an empty CSV (expected {HEADER_FORM} or {KERAS_FORM} rows)")
    return BoxesTable(path, layout, rows, problems)


def _shown(fields: Sequence[str]) -> str:
    text = ",".join(fields)
    return repr(text if len(text) <= 80 else text[:77] + "...")


def parse_row(fields: Sequence[str], layout: CsvLayout, line: int) -> CsvRow | CsvProblem:
    """A row as a ``CsvRow``, or why it cannot be one."""
    byte = undecodable(fields)
    if byte is not None:
        return CsvProblem(line, f"not UTF-8 text (byte 0x{byte:02x}): save the file as UTF-8")
    if len(fields) != layout.width:
        why = f"expected {layout.width} fields ({layout.form}), got {len(fields)}"
        return CsvProblem(line, f"{why}: {_shown(fields)}")
    image, *coords, label = (fields[i].strip() for i in layout.columns)
    if not image:
        return CsvProblem(line, f"no image path: {_shown(fields)}")
    if not any(coords) and not label:
        return CsvRow(line, image, None, None)  # an image without objects
    why = None
    if not all(coords):
        why = "missing box value (x1, y1, x2, y2 all needed)"
    elif not all(_is_number(v) for v in coords):
        why = "non-numeric box value"
    elif not label:
        why = "no class name"
    if why is not None:
        return CsvProblem(line, f"{why}: {_shown(fields)}", image)
    return CsvRow(line, image, tuple(float(v) for v in coords), label)


def undecodable(fields: Sequence[str]) -> int | None:
    """The first byte of ``fields`` that was not UTF-8 (read as a surrogate, ``_rows``)."""
    for value in fields:
        for char in value:
            if 0xDC80 <= ord(char) <= 0xDCFF:
                return ord(char) - 0xDC00
    return None


def read_class_map(path: str | Path) -> list[str]:
    """The class names of a ``class_name,id`` CSV in the order of their ids; raises CsvError
    naming the line of a malformed row, a repeated name or a repeated id."""
    path = Path(path)
    if not path.is_file():
        raise CsvError(f"{path}: class map not found")
    ids: dict[int, str] = {}
    for n, (line, fields) in enumerate(_rows(path)):
        values = [v.strip() for v in fields]
        if (byte := undecodable(fields)) is not None:
            raise CsvError(f"{path} line {line}: not UTF-8 text (byte 0x{byte:02x})")
        if n == 0 and [v.lower() for v in values] in _MAP_HEADERS:
            continue
        if len(values) != 2 or not values[0] or not re.fullmatch(r"-?\d+", values[1]):
            raise CsvError(
                f"{path} line {line}: expected 'class_name,id' (an integer id), got "
                f"{_shown(fields)}"
            )
        name, id_ = values[0], int(values[1])
        if name in ids.values():
            raise CsvError(f"{path} line {line}: class {name!r} appears twice")
        if id_ in ids:
            raise CsvError(f"{path} line {line}: id {id_} appears twice ({ids[id_]!r}, {name!r})")
        ids[id_] = name
    if not ids:
        raise CsvError(f"{path}: an empty class map (expected 'class_name,id' rows)")
    return [ids[i] for i in sorted(ids)]
