"""Proposal recall, computed the way pycocotools' COCOeval computes it with ``useCats=0``.

For every IoU threshold and area range, proposals are matched greedily in decreasing score order:
each takes the unmatched non-ignored GT box of highest IoU >= the threshold (the later box on a
tie), or else an ignored one; crowd regions can absorb any number of proposals and, with boxes
outside the area range, are ignored. Recall is matched non-ignored GT boxes over all non-ignored
GT boxes; AR@k averages recall over the IoU thresholds 0.5:0.05:0.95 with at most k proposals
per image.

Vectorised: one loop over proposal ranks, with all images, thresholds, area ranges and GT boxes
in each tensor operation. Runs on whatever device the tensors are on.

Shape glossary:
    I : images;  D : proposals per image (padded);  G : GT boxes per image (padded)
    T : IoU thresholds;  R : area ranges;  K : proposal budgets (maxDets)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

IOU_THRESHOLDS = tuple(float(t) for t in np.linspace(0.5, 0.95, 10))
AREA_RANGES = {
    "all": (0.0, 1e10),
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e10),
}
MAX_DETS = (10, 100, 300, 1000)
NEVER = torch.iinfo(torch.int64).max  # rank recorded for a GT box that no proposal matched


def _iou_with_crowd(dets: Tensor, gts: Tensor, crowd: Tensor) -> Tensor:
    """(I, D, 4), (I, G, 4) xyxy, (I, G) bool -> (I, D, G) IoU; for crowd GT, intersection over
    the proposal's area (COCO's rule)."""
    lt = torch.maximum(dets[:, :, None, :2], gts[:, None, :, :2])
    rb = torch.minimum(dets[:, :, None, 2:], gts[:, None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)  # (I, D, G)
    det_area = (dets[..., 2] - dets[..., 0]) * (dets[..., 3] - dets[..., 1])  # (I, D)
    gt_area = (gts[..., 2] - gts[..., 0]) * (gts[..., 3] - gts[..., 1])  # (I, G)
    union = det_area[:, :, None] + gt_area[:, None, :] - inter
    denom = torch.where(crowd[:, None, :], det_area[:, :, None].expand_as(union), union)
    return torch.where(denom > 0, inter / denom, torch.zeros_like(inter))


@dataclass
class MatchTable:
    """Per GT box, the rank of the proposal that matched it, or ``NEVER`` if none did.

    ``first_match`` (R, T, I, G) int64; ``counted`` (R, I, G) bool: real, non-ignored GT boxes
    of each area range.
    """

    first_match: Tensor
    counted: Tensor

    def recall(self, max_dets: int) -> Tensor:
        """(R, T) recall with at most ``max_dets`` proposals per image; -1 where no GT counts."""
        hit = (self.first_match < max_dets) & self.counted[:, None]  # (R, T, I, G)
        total = self.counted.sum(dim=(1, 2)).to(torch.float64)  # (R,)
        found = hit.sum(dim=(2, 3)).to(torch.float64)  # (R, T)
        return torch.where(total[:, None] > 0, found / total.clamp(min=1)[:, None], -1.0)

    def recall_per_image(self, max_dets: int) -> Tensor:
        """(I,) recall at IoU 0.5 for the "all" range; NaN for images without counted GT."""
        hit = (self.first_match[0, 0] < max_dets) & self.counted[0]  # (I, G)
        total = self.counted[0].sum(dim=1).to(torch.float64)
        return hit.sum(dim=1).to(torch.float64) / total


def match_proposals(
    pred_boxes: Tensor,
    pred_valid: Tensor,
    gt_boxes: Tensor,
    gt_mask: Tensor,
    gt_crowd: Tensor | None = None,
    gt_areas: Tensor | None = None,
    *,
    iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
    area_ranges: Sequence[tuple[float, float]] = tuple(AREA_RANGES.values()),
) -> MatchTable:
    """Greedy COCO matching of padded proposals to padded GT.

    (I, D, 4) xyxy proposals sorted by decreasing score with (I, D) validity; (I, G, 4) xyxy GT
    with (I, G) mask, crowd flags and areas (default: box areas). Computed in float64, as
    pycocotools does.
    """
    device = pred_boxes.device
    pred_boxes = pred_boxes.to(torch.float64)
    gt_boxes = gt_boxes.to(torch.float64)
    num_images, num_dets = pred_valid.shape
    if gt_crowd is None:
        gt_crowd = torch.zeros_like(gt_mask)
    gt_crowd = gt_crowd & gt_mask
    if gt_areas is None:
        gt_areas = (gt_boxes[..., 2] - gt_boxes[..., 0]) * (gt_boxes[..., 3] - gt_boxes[..., 1])
    gt_areas = gt_areas.to(torch.float64)
    thresholds = torch.tensor(
        [min(t, 1 - 1e-10) for t in iou_thresholds], dtype=torch.float64, device=device
    )  # (T,)
    ranges = torch.tensor(list(area_ranges), dtype=torch.float64, device=device)  # (R, 2)

    iou = _iou_with_crowd(pred_boxes, gt_boxes, gt_crowd)  # (I, D, G)
    outside = (gt_areas[None] < ranges[:, None, None, 0]) | (
        gt_areas[None] > ranges[:, None, None, 1]
    )  # (R, I, G)
    ignored = (outside | gt_crowd[None]) & gt_mask[None]  # (R, I, G)
    counted = gt_mask[None] & ~ignored  # (R, I, G)

    num_ranges, num_thr, num_gt = ranges.shape[0], thresholds.shape[0], gt_mask.shape[1]
    shape = (num_ranges, num_thr, num_images, num_gt)
    first_match = torch.full(shape, NEVER, dtype=torch.int64, device=device)
    taken = torch.zeros(shape, dtype=torch.bool, device=device)
    flip = torch.arange(num_gt - 1, -1, -1, device=device)
    gt_index = torch.arange(num_gt, device=device)
    for rank in range(num_dets):
        iou_r = iou[:, rank]  # (I, G)
        available = gt_mask[None, None] & (~taken | gt_crowd[None, None])  # (R, T, I, G)
        cand = (
            available
            & (iou_r[None, None] >= thresholds[None, :, None, None])
            & pred_valid[None, None, :, rank, None]
        )
        cand_counted = cand & ~ignored[:, None]
        prefer = cand_counted.any(dim=-1, keepdim=True)
        cand = torch.where(prefer, cand_counted, cand & ignored[:, None])
        score = torch.where(cand, iou_r[None, None], -1.0)
        # the highest IoU wins; on a tie the later GT box, as in pycocotools' loop
        best = num_gt - 1 - score[..., flip].argmax(dim=-1, keepdim=True)  # (R, T, I, 1)
        chosen = (gt_index == best) & cand.any(dim=-1, keepdim=True)  # (R, T, I, G)
        newly = chosen & ~taken
        first_match = torch.where(newly, rank, first_match)
        taken = taken | chosen
    return MatchTable(first_match=first_match, counted=counted)


def proposal_recall_summary(
    table: MatchTable, max_dets: Sequence[int] = MAX_DETS
) -> dict[str, float]:
    """AR@k (IoU 0.5:0.95), recall@k@0.5 and @0.7, per area range as in COCO's names."""
    out: dict[str, float] = {}
    names = list(AREA_RANGES)
    thresholds = list(IOU_THRESHOLDS)
    i50 = thresholds.index(0.5)
    i70 = int(np.argmin([abs(t - 0.7) for t in thresholds]))
    for k in max_dets:
        rec = table.recall(k).cpu()  # (R, T)
        for r, name in enumerate(names[: rec.shape[0]]):
            suffix = "" if name == "all" else f"_{name}"
            row = rec[r]
            out[f"AR@{k}{suffix}"] = float(row[row > -1].mean()) if (row > -1).any() else -1.0
            out[f"recall@{k}@0.5{suffix}"] = float(row[i50])
            out[f"recall@{k}@0.7{suffix}"] = float(row[i70])
    return out


def pad_boxes(lists: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """[(n_i, 4)] -> (I, N, 4) zero-padded boxes and (I, N) validity."""
    n = max([1, *(len(b) for b in lists)])
    boxes = torch.zeros(len(lists), n, 4)
    valid = torch.zeros(len(lists), n, dtype=torch.bool)
    for i, b in enumerate(lists):
        boxes[i, : len(b)] = b
        valid[i, : len(b)] = True
    return boxes, valid


def pad_cat(tensors: Sequence[Tensor]) -> Tensor:
    """Concatenate along dim 0, padding dim 1 with zeros (False) to the longest."""
    width = max(t.shape[1] for t in tensors)
    padded = []
    for t in tensors:
        pad = [0, 0] * (t.ndim - 2) + [0, width - t.shape[1]]
        padded.append(torch.nn.functional.pad(t, pad))
    return torch.cat(padded, dim=0)


def recall_vs_proposals(table: MatchTable, ks: Sequence[int]) -> dict[str, list[float]]:
    """Recall against the number of proposals per image: AR (0.5:0.95) and recall at IoU 0.5
    and 0.7 for each k, over all sizes."""
    thresholds = list(IOU_THRESHOLDS)
    i50, i70 = thresholds.index(0.5), int(np.argmin([abs(t - 0.7) for t in thresholds]))
    rows = [table.recall(k)[0] for k in ks]  # (T,) each, "all" sizes
    return {
        "k": list(ks),
        "AR": [float(r.mean()) for r in rows],
        "recall@0.5": [float(r[i50]) for r in rows],
        "recall@0.7": [float(r[i70]) for r in rows],
    }


def recall_vs_iou(
    pred_boxes: Tensor,
    pred_valid: Tensor,
    gt_boxes: Tensor,
    gt_mask: Tensor,
    gt_crowd: Tensor | None = None,
    *,
    ks: Sequence[int] = (100, 1000),
    thresholds: Sequence[float] = tuple(float(t) for t in np.linspace(0.5, 1.0, 21)),
) -> dict[str, list[float]]:
    """Recall against the IoU threshold (0.5 to 1.0), for each proposal budget in ``ks``."""
    table = match_proposals(
        pred_boxes,
        pred_valid,
        gt_boxes,
        gt_mask,
        gt_crowd,
        iou_thresholds=thresholds,
        area_ranges=((0.0, 1e10),),
    )
    out: dict[str, list[float]] = {"iou": list(thresholds)}
    for k in ks:
        out[f"recall@{k}"] = [float(v) for v in table.recall(k)[0]]
    return out


def format_recall_table(metrics: dict[str, float], ks: Sequence[int] = MAX_DETS) -> str:
    """A text table: rows AR (0.5:0.95), recall@0.5 and @0.7; columns k x sizes."""
    lines = []
    sizes = ("", "_small", "_medium", "_large")
    header = f"{'':>14}" + "".join(f"{'k=' + str(k):>9}" for k in ks)
    for size in sizes:
        name = size.removeprefix("_") or "all"
        lines.append(f"[{name}]")
        lines.append(header)
        for label, key in (
            ("AR 0.5:0.95", "AR@{k}"),
            ("recall@0.5", "recall@{k}@0.5"),
            ("recall@0.7", "recall@{k}@0.7"),
        ):
            values = [metrics.get(key.format(k=k) + size, float("nan")) for k in ks]
            lines.append(f"{label:>14}" + "".join(f"{v:9.3f}" for v in values))
    return "\n".join(lines)
