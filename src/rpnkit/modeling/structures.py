"""Batch containers with fixed, padded shapes.

Shape glossary:
    B : images;  G : padded GT boxes per image (G_max)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .boxes import describe_bad_gt_box


@dataclass(frozen=True)
class GroundTruth:
    """Padded ground truth of a batch.

    ``boxes`` (B, G, 4) xyxy pixels; ``mask`` (B, G) bool marks real entries; ``ignore`` (B, G)
    bool marks crowd/ignore regions among them; ``labels`` (B, G) int64 class ids (1..K, for the
    second stage; the RPN ignores them). ``validated`` is set by ``check``: validating on the CPU
    (``collate`` does) spares the GPU training step its synchronisation.
    """

    boxes: Tensor
    mask: Tensor
    ignore: Tensor
    labels: Tensor
    validated: bool = False
    max_label: int | None = None  # the largest class id of a real box, recorded by ``check``

    @classmethod
    def from_lists(
        cls,
        boxes: Sequence[Tensor],
        labels: Sequence[Tensor] | None = None,
        ignore: Sequence[Tensor] | None = None,
        *,
        device: torch.device | str | None = None,
    ) -> GroundTruth:
        """Pad per-image (G_i, 4) boxes, (G_i,) labels and (G_i,) ignore flags into a batch."""
        if len(boxes) == 0:
            raise ValueError("empty batch: no images were given")
        for i, b in enumerate(boxes):
            if b.ndim != 2 or b.shape[1] != 4:
                raise ValueError(
                    f"image {i}: ground-truth boxes must have shape (G, 4) in xyxy order, got "
                    f"{tuple(b.shape)}"
                )
        num = len(boxes)
        g_max = max(1, *(int(b.shape[0]) for b in boxes))  # one padded slot at least
        device = device if device is not None else boxes[0].device
        out_boxes = torch.zeros((num, g_max, 4), dtype=torch.float32, device=device)
        out_mask = torch.zeros((num, g_max), dtype=torch.bool, device=device)
        out_ignore = torch.zeros((num, g_max), dtype=torch.bool, device=device)
        out_labels = torch.zeros((num, g_max), dtype=torch.int64, device=device)
        for i, b in enumerate(boxes):
            g = b.shape[0]
            out_boxes[i, :g] = b.to(device=device, dtype=torch.float32)
            out_mask[i, :g] = True
            if labels is not None:
                out_labels[i, :g] = labels[i].to(device)
            else:
                out_labels[i, :g] = 1
            if ignore is not None:
                out_ignore[i, :g] = ignore[i].to(device=device, dtype=torch.bool)
        return cls(out_boxes, out_mask, out_ignore, out_labels)

    @property
    def batch_size(self) -> int:
        return self.boxes.shape[0]

    def to(self, device: torch.device | str) -> GroundTruth:
        return GroundTruth(
            self.boxes.to(device, non_blocking=True),
            self.mask.to(device, non_blocking=True),
            self.ignore.to(device, non_blocking=True),
            self.labels.to(device, non_blocking=True),
            self.validated,
            self.max_label,
        )

    def pin_memory(self) -> GroundTruth:
        """In page-locked memory, so that copies to the GPU run asynchronously."""
        pinned = [t.pin_memory() for t in (self.boxes, self.mask, self.ignore, self.labels)]
        return GroundTruth(*pinned, self.validated, self.max_label)

    def check(self, image_sizes: Tensor, names: Sequence[str] | None = None) -> GroundTruth:
        """Raise ValueError naming the image, the box and the problem if any box is unusable;
        return the same ground truth marked as validated.

        On a GPU this synchronises once, to learn whether anything is wrong.
        """
        if self.boxes.ndim != 3 or self.boxes.shape[-1] != 4:
            raise ValueError(
                f"ground-truth boxes must be padded to (B, G, 4), got {tuple(self.boxes.shape)}"
            )
        if self.mask.shape != self.boxes.shape[:2]:
            raise ValueError(
                f"ground-truth mask {tuple(self.mask.shape)} does not match boxes "
                f"{tuple(self.boxes.shape)}"
            )
        if image_sizes.shape != (self.boxes.shape[0], 2):
            raise ValueError(
                f"image_sizes must be (B, 2) = ({self.boxes.shape[0]}, 2) as (height, width), "
                f"got {tuple(image_sizes.shape)}"
            )
        message = describe_bad_gt_box(self.boxes, self.mask, image_sizes, names)
        if message is not None:
            raise ValueError(message)
        top = int(self.labels.masked_fill(~self.mask, 0).max()) if self.mask.numel() else 0
        return dataclasses.replace(self, validated=True, max_label=top)
