"""What inference runs over: an image file, a folder of images, a dataset, or a list of images
(files, PIL images, numpy arrays, tensors), each turned into dataset items as the network sees
them (``DetectionDataset``'s items, without boxes for plain images)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .csv_boxes import BOXES, csv_kind
from .dataset import Unreadable, make_item, planned_item, report_skipped, skip
from .device_images import read_jpeg
from .images import load_rgb, to_rgb
from .readers import coco_jsons, read_dataset
from .records import (
    IMAGE_SUFFIXES,
    DataError,
    DataNote,
    DatasetIndex,
    Record,
    caller_of_package,
    image_size,
    listed,
)
from .transforms import Compose
from .voc import voc_xml_files

ImageLike = Image.Image | np.ndarray | torch.Tensor


def looks_like_dataset(path: Path) -> bool:
    """A folder that holds annotations (COCO, VOC, YOLO or a CSV of boxes), not only images:
    whatever ``readers.detect_format`` tells a format by (a COCO JSON at the top too)."""
    return (
        (path / "data.yaml").is_file()
        or any(path.glob("annotations/*"))
        or any(path.glob("Annotations/*"))
        or bool(coco_jsons(path))
        or bool(voc_xml_files(path))
        or any(csv_kind(p) == BOXES for p in path.glob("*.csv"))
    )


def index_for_input(
    path: str | Path,
    *,
    split: str | None = None,
    format: str | None = None,
    split_file: str | Path | None = None,
    strict: bool = False,
    class_names: Sequence[str] | None = None,
    images: str | Path | None = None,
    class_map: str | Path | None = None,
) -> DatasetIndex:
    """An image, a folder of images, or a dataset (COCO, VOC, YOLO, CSV) as a DatasetIndex; plain
    images get no boxes and integer ids in name order. A dataset is read as ``read_dataset``
    reads it, its ``split`` by default ``val`` (COCO, YOLO) or the whole set (VOC, CSV);
    ``class_names`` maps its classes by name (a checkpoint's), and ``images`` and
    ``class_map`` say where its images and a CSV's class map are."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        check_no_dataset_options(f"{path}: an image", split, split_file, class_map)
        return _image_index([path], [], path, strict)
    if path.is_dir() and format is None and images is None and not looks_like_dataset(path):
        what = f"{path}: a folder of images without annotations"
        check_no_dataset_options(what, split, split_file, class_map)
        # hidden files (.DS_Store, an output being written: .proposals.json.*.tmp) are no one's
        entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
        files = [p for p in entries if p.is_file()]
        pictures = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        others = [
            f"{p}: not an image ({', '.join(IMAGE_SUFFIXES)})"
            for p in files
            if p.suffix.lower() not in IMAGE_SUFFIXES
        ]  # one pass each: a folder of 10^5 photographs must not compare them pairwise
        others += [  # named as images, but none: a folder, a link to nothing
            f"{p}: {'a folder' if p.is_dir() else 'a link to nothing'}, not an image file"
            for p in entries
            if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_file()
        ]
        folders = [p for p in entries if p.is_dir() and p.suffix.lower() not in IMAGE_SUFFIXES]
        _note_sub_folders(path, folders, pictures)
        return _image_index(pictures, others, path, strict)
    return read_dataset(
        path,
        split=split,
        format=format,
        split_file=split_file,
        strict=strict,
        class_names=class_names,
        images=images,
        class_map=class_map,
        default_split="val",
    )


def _note_sub_folders(path: Path, folders: list[Path], pictures: list[Path]) -> None:
    """A folder's images are its own files: its sub-folders are not read. Said in one line
    (a ``DataNote``), and as the error when the folder has no image of its own."""
    if not folders:
        return
    what = f"{len(folders)} sub-folder(s) ({listed(f'{p.name}/' for p in folders)})"
    if not pictures:
        raise DataError(
            f"{path}: no image file at its top level, and its {what} are not read: give one "
            "of them, or a dataset"
        )
    warnings.warn(
        f"{path}: its {what} are not read (a folder's own images are): give each apart",
        DataNote,
        stacklevel=caller_of_package(),
    )


def check_no_dataset_options(
    what: str, split=None, split_file=None, class_map=None, images=None, format=None
) -> None:
    """A dataset's options given with plain images (``what`` they are) would be ignored: say
    so instead."""
    options = {
        "--split (split=)": split,
        "--split-file (split_file=)": split_file,
        "--class-map (class_map=)": class_map,
        "--images (images=)": images,
        "--format (format=)": format,
    }
    given = [name for name, value in options.items() if value is not None]
    if given:
        raise DataError(f"{what}: {' and '.join(given)} apply to datasets only")


def _image_index(files: list[Path], issues: list[str], source: Path, strict: bool):
    """Plain images as records without boxes (sizes from the file headers); every file left
    out is warned once and listed in ``issues``; no readable image at all is an error, which
    lists the images left out in ``image_issues`` as the index would."""
    report_skipped(issues)
    records, unreadable = [], []
    for i, f in enumerate(files):
        try:
            width, height = image_size(f)
        except DataError as err:
            if strict:
                raise
            report_skipped([str(err)])
            unreadable.append(str(err))
            continue
        records.append(empty_record(f, i, width, height))
    issues = issues + unreadable
    if not records:
        why = f" ({len(issues)} file(s) skipped; first: {issues[0]})" if issues else ""
        error = DataError(f"{source}: no readable image{why}")
        error.image_issues = unreadable
        raise error
    return DatasetIndex(records, [], issues, source=str(source), image_issues=unreadable)


def empty_record(path: Path, image_id: int | str, width: int, height: int) -> Record:
    """A record without boxes."""
    empty = np.zeros((0,), np.float32)
    boxes = np.zeros((0, 4), np.float32)
    return Record(path, image_id, width, height, boxes, empty.astype(np.int64), empty > 0, empty)


class ImageList(Dataset):
    """Images given one by one, as files or in memory (see ``to_rgb``), as dataset items
    without boxes. ``names`` name the in-memory images in results as given, folders kept
    (default ``image-<i>``); files keep their own names. An unreadable file (or a folder: it
    is read whole on its own only) gives ``Unreadable``, warned of where the batches are
    collected (or raises with ``strict``), as in ``DetectionDataset``; ``decode_on_device``
    as there too."""

    def __init__(
        self,
        sources: Sequence[str | Path | ImageLike],
        transforms: Compose,
        *,
        names: Sequence[str] | None = None,
        strict: bool = False,
        decode_on_device: bool = False,
    ) -> None:
        self.decode_on_device = decode_on_device
        self.sources = list(sources)
        if names is not None and len(names) != len(self.sources):
            raise ValueError(f"{len(names)} names for {len(self.sources)} images")
        self.names = list(names) if names is not None else None
        self.transforms = transforms
        self.strict = strict

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def leaves_pixels_to_device(self) -> bool:
        """As ``DetectionDataset.leaves_pixels_to_device``: files only."""
        return any(self._device_decodes(s) for s in self.sources)

    def _device_decodes(self, source) -> bool:
        """Whether a source may stay encoded for the device: a file, with transforms that plan."""
        return (
            isinstance(source, (str, Path)) and self.decode_on_device and self.transforms.plannable
        )

    def name(self, i: int) -> str:
        source = self.sources[i]
        if isinstance(source, (str, Path)):
            return Path(source).name
        return self.names[i] if self.names is not None else f"image-{i}"

    def __getitem__(self, i: int) -> dict | Unreadable:
        source = self.sources[i]
        path = Path(source) if isinstance(source, (str, Path)) else None
        if path is not None and path.is_dir():
            return skip(f"{path}: a folder (give a folder on its own, not in a list)", self.strict)
        if self._device_decodes(source):
            header = read_jpeg(path)
            if header is not None:
                record = empty_record(path, i, header.size[1], header.size[0])
                return planned_item(header, record.boxes, record, self.transforms, None)
        if path is not None:
            try:
                image = load_rgb(path)
            except DataError as err:
                return skip(str(err), self.strict)
        else:
            image = to_rgb(source, where=f"image {i}")
        h, w = image.shape[:2]
        if self._device_decodes(source):  # resized on the device, if enlarged
            record = empty_record(path, i, w, h)
            item = planned_item(image, record.boxes, record, self.transforms, None)
            if item is not None:
                return item
        record = empty_record(Path(self.name(i)), i, w, h)
        item = make_item(image, record.boxes, record, self.transforms, None, source=path)
        item["file_name"] = self.name(i)  # a name given keeps its folders (cam1/a.jpg)
        return item
