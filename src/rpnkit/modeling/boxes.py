"""Box formats, IoU, the box coder, and validation of ground-truth boxes at the library boundary.

Box format inside rpnkit: ``xyxy`` in pixels of the network input, ``(x1, y1, x2, y2)`` with
``x2 > x1`` and ``y2 > y1``; widths are ``x2 - x1`` (no ``+1``, as torchvision and detectron2).

Shape glossary:
    N, M : numbers of boxes
    B    : images in a batch
    G    : padded number of ground-truth boxes per image (G_max)
    ...  : any leading batch dimensions
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

# Decoded widths and heights are clamped at exp(log(1000 / 16)) times the anchor's: deltas from an
# untrained network must not overflow ``exp``.
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


def box_xyxy_to_xywh(boxes: Tensor) -> Tensor:
    """(..., 4) xyxy -> (..., 4) xywh (COCO: top-left corner, width, height)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack((x1, y1, x2 - x1, y2 - y1), dim=-1)


def box_xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(..., 4) xywh -> (..., 4) xyxy."""
    x, y, w, h = boxes.unbind(-1)
    return torch.stack((x, y, x + w, y + h), dim=-1)


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """(..., 4) xyxy -> (..., 4) centre x, centre y, width, height."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(..., 4) centre x, centre y, width, height -> (..., 4) xyxy."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """(..., 4) xyxy -> (...) areas."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _intersection(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """(..., N, 4), (..., M, 4) xyxy -> (..., N, M) intersection areas."""
    lt = torch.maximum(boxes1[..., :, None, :2], boxes2[..., None, :, :2])  # (..., N, M, 2)
    rb = torch.minimum(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])  # (..., N, M, 2)
    wh = (rb - lt).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU. (..., N, 4), (..., M, 4) xyxy -> (..., N, M).

    Leading dimensions broadcast, so a batch of (B, N, 4) anchors-per-image against (B, G, 4)
    ground truth gives (B, N, G) in one call. A pair of empty boxes has IoU 0, not NaN.
    """
    inter = _intersection(boxes1, boxes2)
    union = box_area(boxes1)[..., :, None] + box_area(boxes2)[..., None, :] - inter
    return inter / union.clamp(min=torch.finfo(inter.dtype).tiny)


def clip_boxes(boxes: Tensor, image_sizes: Tensor) -> Tensor:
    """Clip (B, N, 4) xyxy boxes to per-image sizes (B, 2) given as (height, width)."""
    hw = image_sizes.to(boxes.dtype)
    upper = torch.stack((hw[:, 1], hw[:, 0], hw[:, 1], hw[:, 0]), dim=-1)[:, None, :]  # (B, 1, 4)
    return torch.minimum(boxes.clamp(min=0), upper)


@dataclass(frozen=True)
class BoxCoder:
    """Encodes boxes as deltas to reference boxes (anchors or proposals) and back.

    tx = wx (x - xa) / wa,  ty = wy (y - ya) / ha,  tw = ww log(w / wa),  th = wh log(h / ha)

    where (x, y) is a box's centre and (w, h) its size. ``weights`` are (1, 1, 1, 1) for the RPN
    and (10, 10, 5, 5) for the second stage. Decoding clamps tw and th at ``scale_clamp``.
    """

    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    scale_clamp: float = BBOX_XFORM_CLIP

    def encode(self, gt_boxes: Tensor, reference_boxes: Tensor) -> Tensor:
        """(..., 4) xyxy targets, (..., 4) xyxy references -> (..., 4) deltas."""
        wx, wy, ww, wh = self.weights
        ref_w = reference_boxes[..., 2] - reference_boxes[..., 0]
        ref_h = reference_boxes[..., 3] - reference_boxes[..., 1]
        ref_cx = reference_boxes[..., 0] + 0.5 * ref_w
        ref_cy = reference_boxes[..., 1] + 0.5 * ref_h

        gt_w = gt_boxes[..., 2] - gt_boxes[..., 0]
        gt_h = gt_boxes[..., 3] - gt_boxes[..., 1]
        gt_cx = gt_boxes[..., 0] + 0.5 * gt_w
        gt_cy = gt_boxes[..., 1] + 0.5 * gt_h

        dx = wx * (gt_cx - ref_cx) / ref_w
        dy = wy * (gt_cy - ref_cy) / ref_h
        dw = ww * torch.log(gt_w / ref_w)
        dh = wh * torch.log(gt_h / ref_h)
        return torch.stack((dx, dy, dw, dh), dim=-1)

    def decode(self, deltas: Tensor, reference_boxes: Tensor) -> Tensor:
        """(..., 4) deltas, (..., 4) xyxy references -> (..., 4) xyxy boxes.

        Computed in float32 at least: bf16 centres lose whole pixels on large images.
        """
        dtype = torch.promote_types(deltas.dtype, torch.float32)
        deltas = deltas.to(dtype)
        reference_boxes = reference_boxes.to(dtype)
        wx, wy, ww, wh = self.weights
        widths = reference_boxes[..., 2] - reference_boxes[..., 0]
        heights = reference_boxes[..., 3] - reference_boxes[..., 1]
        ctr_x = reference_boxes[..., 0] + 0.5 * widths
        ctr_y = reference_boxes[..., 1] + 0.5 * heights

        dx = deltas[..., 0] / wx
        dy = deltas[..., 1] / wy
        dw = (deltas[..., 2] / ww).clamp(max=self.scale_clamp)
        dh = (deltas[..., 3] / wh).clamp(max=self.scale_clamp)

        pred_ctr_x = dx * widths + ctr_x
        pred_ctr_y = dy * heights + ctr_y
        pred_w = torch.exp(dw) * widths
        pred_h = torch.exp(dh) * heights
        half_w = 0.5 * pred_w
        half_h = 0.5 * pred_h
        return torch.stack(
            (pred_ctr_x - half_w, pred_ctr_y - half_h, pred_ctr_x + half_w, pred_ctr_y + half_h),
            dim=-1,
        )


def _side_product(wh: Tensor) -> Tensor:
    """(..., 2) widths and heights -> (...) areas. Not ``prod(-1)``: prod's backward counts the
    zeros of its input on the host (a GPU->CPU sync in every IoU-loss backward)."""
    return wh[..., 0] * wh[..., 1]


def paired_intersection_union(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """Intersection and union areas of paired (..., 4) xyxy boxes -> (...), (...)."""
    lt = torch.maximum(boxes1[..., :2], boxes2[..., :2])
    rb = torch.minimum(boxes1[..., 2:], boxes2[..., 2:])
    inter = _side_product((rb - lt).clamp(min=0))
    area1 = _side_product((boxes1[..., 2:] - boxes1[..., :2]).clamp(min=0))
    area2 = _side_product((boxes2[..., 2:] - boxes2[..., :2]).clamp(min=0))
    return inter, area1 + area2 - inter


def iou_loss(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """1 - IoU for paired (..., 4) xyxy boxes -> (...): the Cascade RPN's linear IoU loss."""
    inter, union = paired_intersection_union(boxes1, boxes2)
    return 1 - inter / union.clamp(min=torch.finfo(inter.dtype).tiny)


def generalized_iou_loss(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """1 - GIoU for paired (..., 4) xyxy boxes -> (...)."""
    tiny = torch.finfo(boxes1.dtype).tiny
    inter, union = paired_intersection_union(boxes1, boxes2)
    lt = torch.minimum(boxes1[..., :2], boxes2[..., :2])
    hull = _side_product((torch.maximum(boxes1[..., 2:], boxes2[..., 2:]) - lt).clamp(min=0))
    iou = inter / union.clamp(min=tiny)
    return 1 - iou + (hull - union) / hull.clamp(min=tiny)


def find_bad_gt_boxes(gt_boxes: Tensor, gt_mask: Tensor, image_sizes: Tensor) -> Tensor:
    """(B, G, 4) xyxy, (B, G) bool, (B, 2) (h, w) -> (B, G) bool: real boxes that are unusable.

    A box is unusable if a coordinate is NaN or inf, if it is empty or inverted (x2 <= x1 or
    y2 <= y1), or if it lies entirely outside its image. Purely tensor ops: no GPU->CPU sync.
    """
    finite = torch.isfinite(gt_boxes).all(dim=-1)
    x1, y1, x2, y2 = gt_boxes.unbind(-1)
    h = image_sizes[:, 0, None].to(gt_boxes.dtype)
    w = image_sizes[:, 1, None].to(gt_boxes.dtype)
    ordered = (x2 > x1) & (y2 > y1)
    overlaps_image = (x2 > 0) & (y2 > 0) & (x1 < w) & (y1 < h)
    return gt_mask & ~(finite & ordered & overlaps_image)


def describe_bad_gt_box(
    gt_boxes: Tensor, gt_mask: Tensor, image_sizes: Tensor, names: Sequence[str] | None = None
) -> str | None:
    """A message naming the first unusable box (image index and name, box index, coordinates,
    reason), or None if every box is usable."""
    bad = find_bad_gt_boxes(gt_boxes, gt_mask, image_sizes)
    if not bool(bad.any()):
        return None
    b, g = (int(i) for i in bad.nonzero()[0])
    box = gt_boxes[b, g]
    x1, y1, x2, y2 = (float(v) for v in box)
    h, w = (int(v) for v in image_sizes[b])
    if not bool(torch.isfinite(box).all()):
        why = "has a NaN or infinite coordinate"
    elif x2 <= x1 or y2 <= y1:
        why = "is empty or inverted (x2 <= x1 or y2 <= y1)"
    else:
        why = f"lies entirely outside the {w}x{h} (w x h) image"
    coords = ", ".join(f"{v:g}" for v in (x1, y1, x2, y2))
    image = f"image {b} ({names[b]})" if names is not None else f"image {b}"
    return f"{image}: ground-truth box {g} ({coords}) in xyxy {why}"
