"""Collating dataset items into a padded batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..modeling.sizes import SIZE_DIVISIBLE, padded_size
from ..modeling.structures import GroundTruth
from .dataset import Unreadable


@dataclass
class Batch:
    """``images`` (B, 3, H, W) uint8 RGB padded with zeros to a multiple of ``size_divisible``
    (the model makes them float on its device); ``image_sizes`` (B, 2) true (height, width);
    ``targets`` padded ground truth; ``meta`` each item without its image (ids, names, original
    size, resize factor, source file, GT as read), for turning outputs back into results."""

    images: Tensor
    image_sizes: Tensor
    targets: GroundTruth
    image_ids: list
    file_names: list[str]
    image_scales: Tensor | None = None  # (B,) resize factor of each image, when resized
    # precomputed proposals (B, K, 4) and their (B, K) validity, when the dataset carries them
    proposals: tuple[Tensor, Tensor] | None = None
    meta: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # the batch's unreadable images, reported

    def _map(self, fn, targets: GroundTruth) -> Batch:
        scales = self.image_scales
        return Batch(
            fn(self.images),
            fn(self.image_sizes),
            targets,
            self.image_ids,
            self.file_names,
            fn(scales) if scales is not None else None,
            None if self.proposals is None else tuple(fn(t) for t in self.proposals),
            self.meta,
            self.skipped,
        )

    def to(self, device: torch.device | str) -> Batch:
        """On ``device``; from pinned memory the copies are asynchronous."""
        return self._map(lambda t: t.to(device, non_blocking=True), self.targets.to(device))

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
    """Pad a list of dataset items into a Batch. Unreadable items (already reported) are left
    out and listed in ``skipped``; if none is left the result is an ``EmptyBatch``."""
    if len(items) == 0:
        raise ValueError("empty batch: no images were given")
    skipped = [str(it) for it in items if not isinstance(it, dict)]
    items = [it for it in items if isinstance(it, dict)]
    if not items:
        return EmptyBatch(skipped)
    heights = [int(it["image"].shape[1]) for it in items]
    widths = [int(it["image"].shape[2]) for it in items]
    h, w = padded_size(max(heights), max(widths), size_divisible)
    images = torch.zeros((len(items), 3, h, w), dtype=items[0]["image"].dtype)
    for i, it in enumerate(items):
        images[i, :, : heights[i], : widths[i]] = it["image"]
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
    )


def _meta(item: dict, size: tuple[int, int]) -> dict:
    """The item without its image, and the (height, width) the network sees it at."""
    meta = {k: v for k, v in item.items() if k not in ("image", "proposals")}
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
