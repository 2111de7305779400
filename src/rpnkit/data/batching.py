"""Collating dataset items into a padded batch."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..modeling.sizes import SIZE_DIVISIBLE, padded_size
from ..modeling.structures import GroundTruth
from .dataset import Unreadable
from .device_images import EncodedImages, PendingJpeg


@dataclass
class Batch:
    """``images`` (B, 3, H, W) uint8 RGB padded with zeros to a multiple of ``size_divisible``
    (the model makes them float on its device), or None while ``encoded`` holds them still to
    be decoded on the device (``to`` decodes them); ``image_sizes`` (B, 2) true (height, width);
    ``targets`` padded ground truth; ``meta`` each item without its image (ids, names, original
    size, resize factor, source file, GT as read), for turning outputs back into results."""

    images: Tensor | None
    image_sizes: Tensor
    targets: GroundTruth
    image_ids: list
    file_names: list[str]
    image_scales: Tensor | None = None  # (B,) resize factor of each image, when resized
    # precomputed proposals (B, K, 4) and their (B, K) validity, when the dataset carries them
    proposals: tuple[Tensor, Tensor] | None = None
    meta: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # the batch's unreadable images, reported
    encoded: EncodedImages | None = None

    def _map(self, fn, targets: GroundTruth) -> Batch:
        scales = self.image_scales
        return Batch(
            None if self.images is None else fn(self.images),
            fn(self.image_sizes),
            targets,
            self.image_ids,
            self.file_names,
            fn(scales) if scales is not None else None,
            None if self.proposals is None else tuple(fn(t) for t in self.proposals),
            self.meta,
            self.skipped,
            None if self.encoded is None else self.encoded.map_pixels(fn),
        )

    def to(self, device: torch.device | str) -> Batch:
        """On ``device``, images still encoded decoded there; from pinned memory the copies
        are asynchronous."""
        moved = self._map(lambda t: t.to(device, non_blocking=True), self.targets.to(device))
        if moved.encoded is None:
            return moved
        images = moved.encoded.decode(torch.device(device))
        return dataclasses.replace(moved, images=images, encoded=None)

    def pin_memory(self) -> Batch:
        """Page-locked copies (DataLoader's ``pin_memory=True`` calls this)."""
        return self._map(lambda t: t.pin_memory(), self.targets.pin_memory())


@dataclass
class EmptyBatch:
    """What ``collate`` gives when no image of a batch could be read: their messages only."""

    skipped: list[str]


def collate(
    items: Sequence[dict | Unreadable | None], size_divisible: int = SIZE_DIVISIBLE
) -> Batch | EmptyBatch:
    """Pad a list of dataset items into a Batch. Unreadable items are left out and listed in
    ``skipped`` (warned of by whoever collects the batches: ``dataset.report_skipped``); if
    none is left the result is an ``EmptyBatch``."""
    if len(items) == 0:
        raise ValueError("empty batch: no images were given")
    kinds = (dict, Unreadable, type(None))
    foreign = [it for it in items if not isinstance(it, kinds)][:1]
    if foreign:  # e.g. a torchvision-style (image, target) pair, or a bare image tensor
        raise TypeError(
            f"a dataset item must be rpnkit's (a dict of DetectionDataset or ImageList), got "
            f"{type(foreign[0]).__name__}: give rpnkit a list of images, or a dataset's path"
        )
    skipped = [str(it) for it in items if not isinstance(it, dict)]
    items = [it for it in items if isinstance(it, dict)]
    if not items:
        return EmptyBatch(skipped)
    heights, widths = zip(*(_size(it) for it in items))
    h, w = padded_size(max(heights), max(widths), size_divisible)
    images, encoded = _pad(items, (h, w))
    image_sizes = torch.tensor(list(zip(heights, widths)))
    targets = GroundTruth.from_lists(
        [it["boxes"] for it in items],
        [it["labels"] for it in items],
        [it["ignore"] for it in items],
    )
    # validated here, on the CPU: the GPU training step then needs no sync for it
    targets = targets.check(image_sizes, [it["file_name"] for it in items])
    return Batch(
        proposals=_collate_proposals(items),
        images=images,
        image_sizes=image_sizes,
        targets=targets,
        image_ids=[it["image_id"] for it in items],
        file_names=[it["file_name"] for it in items],
        image_scales=torch.tensor([float(it.get("scale", 1.0)) for it in items]),
        meta=[_meta(it, size) for it, size in zip(items, zip(heights, widths))],
        skipped=skipped,
        encoded=encoded,
    )


def _size(item: dict) -> tuple[int, int]:
    """(height, width) of an item's image as the network sees it."""
    if "jpeg" in item or "native" in item:  # pixel steps still to come: the size they give
        return item["size"]
    return int(item["image"].shape[1]), int(item["image"].shape[2])


def _pad(items: Sequence[dict], canvas: tuple[int, int]):
    """(padded images, None), or (None, EncodedImages) when some are still encoded or have
    their pixel steps still to come (``native``: as decoded, for the device to transform)."""
    if any("jpeg" in it or "native" in it for it in items):
        encoded = EncodedImages(len(items), canvas)
        for i, it in enumerate(items):
            if "jpeg" in it:
                header, steps = it["jpeg"]
                encoded.jpegs.append(PendingJpeg(i, header, steps, str(it["source"])))
            elif "native" in it:
                encoded.pixels.append((i, *it["native"]))
            else:  # transformed by the worker
                encoded.pixels.append((i, it["image"], ()))
        return None, encoded
    images = torch.zeros((len(items), 3, *canvas), dtype=items[0]["image"].dtype)
    for i, it in enumerate(items):
        images[i, :, : it["image"].shape[1], : it["image"].shape[2]] = it["image"]
    return images, None


def _meta(item: dict, size: tuple[int, int]) -> dict:
    """The item without its image, and the (height, width) the network sees it at."""
    meta = {k: v for k, v in item.items() if k not in ("image", "proposals", "jpeg", "native")}
    meta["size"] = size
    meta.setdefault("orig_size", size)
    return meta


def _collate_proposals(items: Sequence[dict]) -> tuple[Tensor, Tensor] | None:
    """Precomputed proposals padded to (B, K, 4) with (B, K) validity, when items carry them."""
    if "proposals" not in items[0]:
        return None
    k = max([1, *(len(it["proposals"]) for it in items)])
    boxes = torch.zeros((len(items), k, 4))
    valid = torch.zeros((len(items), k), dtype=torch.bool)
    for i, it in enumerate(items):
        boxes[i, : len(it["proposals"])] = it["proposals"]
        valid[i, : len(it["proposals"])] = True
    return boxes, valid
