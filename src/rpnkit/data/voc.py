"""The Pascal VOC XML reader, ``read_voc``: a folder of XML files in any layout, and where its
images are found (what every reader shares: ``records``).

VOC's 1-based inclusive pixel indices -> ``(xmin - 1, ymin - 1, xmax, ymax)`` (as
detectron2); ``difficult`` objects become ignore regions. Without ``class_names`` the classes
are the sorted names seen in the XML files read (so they depend on the split: give
``class_names`` for anything but training).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from .records import (
    IMAGE_SUFFIXES,
    DataError,
    DatasetIndex,
    ImageNotFound,
    OtherClass,
    _class_list,
    _Collector,
    _fit_box,
    _make_record,
    _split_selection,
    image_size,
    looked_in,
)


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
        names = [f.name for f in xml_files]
        wanted = _split_selection(Path(split_file), names, annotation_dir, out)
        xml_files = [f for i, f in enumerate(xml_files) if i in wanted]
    out.hold_until_found(looked_in(finder.folders, image_dir is not None))  # if none is found
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
        out.skip_image(xml_file, err)
        return None
    out.found()
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
            path = self.folders[0] / file_name
            raise ImageNotFound(f"{path}: image file not found ({also})", path)
        raise ImageNotFound(f"{stem}: image file not found (no <filename>; {also})", stem)


def voc_xml_files(folder: Path) -> list[Path]:
    """The VOC XML files of a folder (``.xml`` in any case), sorted; none for a file."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".xml" and p.is_file())
