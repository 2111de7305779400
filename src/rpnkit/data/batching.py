"""Collating dataset items into a padded batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..modeling.sizes import SIZE_DIVISIBLE, padded_size
from ..modeling.structures import GroundTruth


@dataclass
class Batch:
    """``images`` (B, 3, H, W) padded with zeros to a multiple of ``size_divisible``;
    ``image_sizes`` (B, 2) true (height, width); ``targets`` padded ground truth."""

    images: Tensor
    image_sizes: Tensor
    targets: GroundTruth
    image_ids: list
    file_names: list[str]
    image_scales: Tensor | None = None  # (B,) resize factor of each image, when resized
    # precomputed proposals (B, K, 4) and their (B, K) validity, when the dataset carries them
    proposals: tuple[Tensor, Tensor] | None = None

    def to(self, device: torch.device | str) -> Batch:
        scales = self.image_scales
        return Batch(
            self.images.to(device, non_blocking=True),
            self.image_sizes.to(device, non_blocking=True),
            self.targets.to(device),
            self.image_ids,
            self.file_names,
            scales.to(device, non_blocking=True) if scales is not None else None,
            None
            if self.proposals is None
            else tuple(t.to(device, non_blocking=True) for t in self.proposals),
        )


def collate(items: Sequence[dict | None], size_divisible: int = SIZE_DIVISIBLE) -> Batch | None:
    """Pad a list of dataset items into a Batch. Items that are None (images that could not be
    read, already reported) are dropped; if none is left the result is None."""
    if len(items) == 0:
        raise ValueError("empty batch: no images were given")
    items = [it for it in items if it is not None]
    if not items:
        return None
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
    proposals = None
    if "proposals" in items[0]:
        k = max([1, *(len(it["proposals"]) for it in items)])
        boxes = torch.zeros((len(items), k, 4))
        valid = torch.zeros((len(items), k), dtype=torch.bool)
        for i, it in enumerate(items):
            boxes[i, : len(it["proposals"])] = it["proposals"]
            valid[i, : len(it["proposals"])] = True
        proposals = (boxes, valid)
    return Batch(
        proposals=proposals,
        images=images,
        image_sizes=image_sizes,
        targets=targets,
        image_ids=[it["image_id"] for it in items],
        file_names=[it["file_name"] for it in items],
        image_scales=torch.tensor([float(it.get("scale", 1.0)) for it in items]),
    )
