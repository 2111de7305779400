"""A torch Dataset over a DatasetIndex: loads images, applies transforms, yields items."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .device_images import JpegHeader, read_jpeg
from .images import load_rgb
from .records import DataError, DatasetIndex, Record, SkippedSample, caller_of_package
from .tiling import TileConfig, crop_extra, crop_record, random_window
from .transforms import Compose


@dataclass(frozen=True)
class Unreadable:
    """In place of an item whose image could not be read: ``collate`` leaves it out and lists
    it in the batch's ``skipped``, which the process that collects the batches reports
    (``report_skipped``), once, where the caller can catch it."""

    message: str

    def __str__(self) -> str:
        return self.message


def skip(message: str, strict: bool) -> Unreadable:
    """Raise with ``strict``; otherwise the marker, not warned here: an item may be made in a
    DataLoader worker, whose warnings the caller's ``warnings`` filters never see."""
    if strict:
        raise DataError(message)
    return Unreadable(message)


def report_skipped(messages: Iterable[str]) -> None:
    """One ``SkippedSample`` warning, ``skipped <message>``, per message, attributed to the
    code that called rpnkit (the caller of the outermost rpnkit frame on the stack): not to
    torch's DataLoader or tqdm, which rpnkit's generators run through."""
    messages = list(messages)
    level = caller_of_package() if messages else 1
    for message in messages:
        warnings.warn(f"skipped {message}", SkippedSample, stacklevel=level)


class DetectionDataset(Dataset):
    """Items: dict with ``image`` (3, H, W) uint8 RGB, ``boxes`` (N, 4) xyxy in the
    transformed image, ``labels``, ``ignore``, ``areas`` (in original pixels), ``image_id``,
    ``file_name``, ``scale`` (resize factor), ``orig_size`` (h, w) and ``source`` (the file).

    An image that cannot be decoded gives an ``Unreadable`` marker (``collate`` leaves it out
    and lists it, and the batches' collector warns: ``report_skipped``), or raises with
    ``strict``. Randomness (flips, scales) comes from ``seed``, the item index and the epoch
    set by ``set_epoch``, so runs are reproducible whatever the worker count.

    ``proposals`` (image path -> (K, 4) xyxy boxes in original pixels, best first), when given,
    are carried through the same transforms as the boxes and returned as ``proposals``: the
    precomputed RPN proposals that the 4-step alternating training feeds the detector.

    ``tiling``, when given, cuts an image larger than its tile to a random tile at native
    resolution (``data.tiling``: boxes clipped, remnants dropped), transformed by
    ``tile_transforms`` (flips: no resize) instead of ``transforms``.

    ``decode_on_device``: JPEG files are not decoded here; their items carry the file's bytes
    and the transforms' pixel steps instead of ``image`` (``jpeg``, ``size``), and the batch
    is decoded and transformed on the model's device (``data.device_images``). Images the
    device cannot decode (other formats, progressive or CMYK JPEGs) are decoded here and,
    unless their steps shrink them, handed over as decoded with the steps (``native``,
    ``size``); tiles, custom transforms and shrinking images are transformed here as usual.
    """

    def __init__(
        self,
        index: DatasetIndex,
        transforms: Compose | None = None,
        *,
        strict: bool = False,
        seed: int = 0,
        proposals: dict[str, np.ndarray] | None = None,
        tiling: TileConfig | None = None,
        tile_transforms: Compose | None = None,
        decode_on_device: bool = False,
    ) -> None:
        self.decode_on_device = decode_on_device
        self.index = index
        self.tiling = tiling
        self.tile_transforms = tile_transforms or Compose()
        self.proposals = proposals
        self.transforms = transforms or Compose()
        self.strict = strict
        self.seed = seed
        self.epoch = 0

    @property
    def class_names(self) -> list[str]:
        return self.index.class_names

    def aspect_groups(self) -> list[int] | None:
        """Per item, 1 for an image taller than wide, else 0 (its size as read, after EXIF
        rotation): training batches drawn within one group pad less (``StepBatchSampler``).
        None with tiling, whose items are tiles of one size."""
        if self.tiling is not None:
            return None
        return [int(r.height > r.width) for r in self.index.records]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.index.records)

    def __getitem__(self, i: int) -> dict | Unreadable:
        record = self.index.records[i]
        if self._device_decodes(record):
            header = read_jpeg(record.path)
            if header is not None and header.size == (record.height, record.width):
                return self._planned_item(i, record, header)
        try:
            image = load_rgb(record.path)
        except DataError as err:
            return skip(str(err), self.strict)
        if image.shape[:2] != (record.height, record.width):
            return skip(
                f"{record.path}: image is {image.shape[1]}x{image.shape[0]} but its annotation "
                f"says {record.width}x{record.height}",
                self.strict,
            )
        if self._device_decodes(record):  # resized and flipped on the device, if enlarged
            item = self._planned_item(i, record, image)
            if item is not None:
                return item
        rng = np.random.default_rng([self.seed, self.epoch, i])
        extra = self._proposals_of(record)
        transforms = self.transforms
        if self.tiling is not None and self.tiling.applies(record.height, record.width):
            window = random_window(record.height, record.width, self.tiling.size, rng)
            image, record = crop_record(image, record, window, self.tiling.min_visible)
            extra = None if extra is None else crop_extra(extra, window)
            transforms = self.tile_transforms
        boxes = record.boxes
        if extra is not None:  # carried through the same transforms as the boxes
            boxes = np.concatenate([boxes, extra])
        item = make_item(image, boxes, record, transforms, rng, source=record.path)
        if self.proposals is not None:  # split the proposals off the GT again
            n = len(record.boxes)
            item["proposals"], item["boxes"] = item["boxes"][n:], item["boxes"][:n]
        return item

    def _proposals_of(self, record: Record) -> np.ndarray | None:
        """(K, 4) precomputed proposals of the record's image (none stored: K = 0), or None
        when the dataset carries none."""
        if self.proposals is None:
            return None
        found = self.proposals.get(str(record.path), np.zeros((0, 4), np.float32))
        return np.asarray(found, np.float32).reshape(-1, 4)

    @property
    def leaves_pixels_to_device(self) -> bool:
        """Whether some items may leave their resize and flip to the device (JPEGs left
        encoded, other images as decoded): items without a ready ``image``. Known only per
        item (an image the plan shrinks is resized by the worker), so true wherever the
        device decodes (``decode_on_device``) and the transforms plan."""
        return any(self._device_decodes(r) for r in self.index.records)

    def _device_decodes(self, record: Record) -> bool:
        tiled = self.tiling is not None and self.tiling.applies(record.height, record.width)
        return self.decode_on_device and not tiled and self.transforms.plannable

    def _planned_item(
        self, i: int, record: Record, pending: JpegHeader | np.ndarray
    ) -> dict | None:
        """The item of an image whose pixel steps the device applies (a JPEG left encoded, or
        an image decoded here; None if they would shrink it): its boxes (and proposals)
        planned as usual."""
        rng = np.random.default_rng([self.seed, self.epoch, i])
        boxes, n = record.boxes, len(record.boxes)
        if self.proposals is not None:
            boxes = np.concatenate([boxes, self._proposals_of(record)])
        item = planned_item(pending, boxes, record, self.transforms, rng)
        if item is not None and self.proposals is not None:
            item["proposals"], item["boxes"] = item["boxes"][n:], item["boxes"][:n]
        return item


def planned_item(
    pending: JpegHeader | np.ndarray, boxes: np.ndarray, record: Record, transforms: Compose, rng
) -> dict | None:
    """A dataset item whose pixel steps are the device's: a JPEG still encoded (``jpeg``: its
    header and the transforms' pixel steps) or an (H, W, 3) uint8 image as decoded
    (``native``: (3, H, W) and the steps); ``size``: the image's size after them. Its boxes
    are planned as ``make_item`` moves them. ``transforms`` must be ``plannable``. None for
    an image as decoded that the steps shrink: it is fewer bytes to move resized (a 12 Mpx
    photograph is 36 MB whole, 2.6 MB at 800 px)."""
    steps, boxes, scale = transforms.plan(record.height, record.width, boxes.copy(), rng)
    size = (record.height, record.width)
    for step in steps:
        size = step.size(*size)
    if not isinstance(pending, JpegHeader) and size[0] * size[1] < record.height * record.width:
        return None
    item = item_fields(boxes, record, scale, record.path)
    if isinstance(pending, JpegHeader):
        item["jpeg"] = (pending, steps)
    else:
        item["native"] = (torch.from_numpy(np.asarray(pending)).permute(2, 0, 1), steps)
    item["size"] = size
    return item


def make_item(
    image: np.ndarray,
    boxes: np.ndarray,
    record: Record,
    transforms: Compose,
    rng,
    *,
    source: Path | None = None,
) -> dict:
    """A dataset item from an (H, W, 3) uint8 image and (N, 4) xyxy boxes in its pixels, with
    the labels, ignore flags and areas of ``record``; ``source`` is the image's file."""
    (image, boxes), scale = transforms(image, boxes.copy(), rng)
    item = item_fields(boxes, record, scale, source)
    item["image"] = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # uint8: 4x less to move
    return item


def item_fields(boxes: np.ndarray, record: Record, scale: float, source: Path | None) -> dict:
    """An item's fields but its image: transformed boxes and the record's annotations."""
    return {
        "boxes": torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32)),
        "labels": torch.from_numpy(record.labels),
        "ignore": torch.from_numpy(record.ignore),
        "areas": torch.from_numpy(record.areas),
        "image_id": record.image_id,
        "file_name": record.file_name,
        "scale": scale,
        "orig_size": (record.height, record.width),
        "source": source,
    }
