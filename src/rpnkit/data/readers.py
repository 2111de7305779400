"""Dataset format detection (``detect_format``) and ``read_dataset``, which reads any supported
dataset by path with its format's reader: ``coco`` (COCO JSON), ``voc`` (Pascal VOC XML),
``yolo`` (YOLO txt) or ``csv_dataset`` (CSV boxes). What the readers return, and the policy
they share (class names, skipped samples, clipped boxes), is in ``records``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .coco import read_coco
from .csv_boxes import BOXES, CLASS_MAP, HEADER_FORM, KERAS_FORM, csv_kind, why_not_boxes
from .csv_dataset import csv_in_folder, folder_csvs, read_csv
from .records import IMAGE_SUFFIXES, DataError, DatasetIndex, listed, unread_picture
from .voc import read_voc, voc_xml_files
from .yolo import read_data_yaml, read_yolo

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
        parts.append(f"{len(folders)} folder(s) ({listed(folders)})")
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


# COCO's other annotation files, beside instances_<split>.json in a download's annotations/:
# no boxes (captions, keypoints of people only, stuff segments, panoptic segments)
NOT_INSTANCES = ("captions_", "person_keypoints_", "stuff_", "panoptic_")


def split_jsons(candidates: Sequence[Path], split: str) -> list[Path]:
    """The COCO JSONs among ``candidates`` that name ``split``, best first:
    ``instances_<split>.json`` alone, else a JSON named ``<split>.json`` alone, else every one
    whose name contains the split, COCO's captions, keypoints, stuff and panoptic files aside
    (``NOT_INSTANCES``); several mean the split is ambiguous."""
    for exact in (f"instances_{split}", split):
        found = [c for c in candidates if c.stem == exact]
        if found:
            return found[:1]
    return [c for c in candidates if split in c.stem and not c.name.startswith(NOT_INSTANCES)]


def coco_json_for_split(folder: Path, split: str) -> Path:
    """The COCO JSON of a dataset folder for ``split`` (``split_jsons``); raises DataError
    naming the JSONs found when none names the split, or when several do."""
    candidates = coco_jsons(folder)
    matching = split_jsons(candidates, split)
    if len(matching) == 1:
        return matching[0]
    if matching:
        names = ", ".join(c.name for c in matching)
        raise DataError(
            f"{folder}: {len(matching)} COCO JSON files name the split {split!r} ({names}) and "
            f"none is instances_{split}.json: give the JSON file itself"
        )
    others = [c.name for c in candidates if split in c.stem]  # captions and the like
    aside = f" ({', '.join(others)}: no boxes, not read)" if others else ""
    raise DataError(
        f"{folder}: no COCO JSON for split {split!r} among {[c.name for c in candidates]}{aside}"
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
    boxes, _ = folder_csvs(path)
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
    split: str | None = None,
    format: str | None = None,
    split_file: str | Path | None = None,
    class_names: Sequence[str] | None = None,
    strict: bool = False,
    images: str | Path | None = None,
    class_map: str | Path | None = None,
    default_split: str = "train",
) -> DatasetIndex:
    """Any supported dataset by path. ``split`` names COCO's JSON in a folder
    (``coco_json_for_split``: ``instances_<split>.json``, else ``<split>.json``, else the one
    instances JSON whose name contains it: ``train`` finds ``instances_train2017.json``),
    YOLO's data.yaml key and VOC's ``ImageSets/Main/<split>.txt``; a CSV has no named
    splits and refuses one. None (not asked): COCO and YOLO read ``default_split`` (the
    purpose's: ``train`` to train, ``val`` to evaluate), VOC and CSV are read whole.
    ``split_file`` selects images of any format (a text file of image ids: the files'
    stems or, for COCO, the JSON's integer ids; or a CSV with a ``filename`` column:
    ``records``).
    ``class_names`` (the training set's, for a validation set or a checkpoint's data) fixes
    the labels by name; see the module.
    ``images``: the image folder of a COCO, VOC or CSV dataset, when it is not the usual
    one; ``class_map``: a CSV dataset's ``class_name,id`` file."""
    path = Path(path)
    fmt = _resolve_format(path, format, split or default_split)
    if images is not None and fmt == "yolo":
        raise DataError(f"{path}: --images does not apply to YOLO (data.yaml names the images)")
    if class_map is not None and fmt != "csv":
        raise DataError(f"{path}: --class-map applies to CSV datasets only, not {fmt}")
    if fmt == "voc" and split is not None:
        split_file = _voc_split_file(path, split, split_file)
    elif fmt == "csv" and split is not None:
        raise DataError(_no_named_split(path, split))
    split = split or default_split
    if fmt == "coco":
        if path.is_dir():
            path = coco_json_for_split(path, split)
        return read_coco(
            path, images, split_file=split_file, class_names=class_names, strict=strict
        )
    if fmt == "yolo":
        yaml_path = path / "data.yaml" if path.is_dir() else path
        return read_yolo(
            yaml_path, split, split_file=split_file, class_names=class_names, strict=strict
        )
    if fmt == "voc":
        ann = _voc_annotation_dir(path, format)
        return read_voc(ann, images, split_file=split_file, class_names=class_names, strict=strict)
    if fmt == "csv":
        if path.is_dir():
            path, class_map = csv_in_folder(path, class_map)
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


def _voc_split_file(path: Path, split: str, split_file) -> Path:
    """The file selecting a VOC dataset's ``split``: ``ImageSets/Main/<split>.txt`` in its
    folder or the folder above (VOCdevkit's layout). A DataError when there is none, or when
    ``split_file`` selects the images too."""
    folder = path if path.is_dir() else path.parent
    found = [
        where / "ImageSets" / "Main" / f"{split}.txt"
        for where in (folder, folder.parent)
        if (where / "ImageSets" / "Main" / f"{split}.txt").is_file()
    ]
    if not found:
        raise DataError(
            f"{path}: --split {split!r} (split=): a VOC dataset's split is its "
            f"ImageSets/Main/{split}.txt, and there is none in {folder} or {folder.parent}: "
            "select its images with --split-file (split_file=), or leave --split out to read "
            "it whole"
        )
    if split_file is not None:
        raise DataError(
            f"{path}: --split {split!r} (split=, {found[0]}) and --split-file {split_file} "
            "(split_file=) both select the images: give one"
        )
    return found[0]


def _no_named_split(path: Path, split: str) -> str:
    """The line refusing a ``split`` asked of a CSV dataset, which has no named splits (read
    whole, it would pass for the split)."""
    return (
        f"{path}: --split {split!r} (split=) names a COCO JSON, a YOLO data.yaml key or a VOC "
        "ImageSets/Main file; a CSV dataset has no named splits: select its images with "
        "--split-file (split_file=), give the split's own CSV, or leave --split out to read "
        "it whole"
    )


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
        has_json = bool(split_jsons(sorted(path.glob("annotations/*.json")), split))
        if split not in meta and has_json:
            fmt = "coco"
    return fmt
