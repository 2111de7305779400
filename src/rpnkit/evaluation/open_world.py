"""Proposal recall on classes never seen in training: the novel-class protocol of OLN (Kim et
al., "Learning Open-World Object Proposals without Learning to Classify", RA-L 2022).

A model is trained on the boxes of some classes (the *seen* ones, e.g. the 20 VOC classes of
COCO) with every other object unlabelled, and its proposals are scored on the boxes of the
other (*novel*) classes only. A proposal that lands on a seen-class object (IoU >= 0.5 with a
seen-class GT box) is neither right nor wrong: it is removed before the budget of k proposals
is applied, so it does not use up the budget, as OLN counts it. The remaining proposals keep
their order, and recall is COCO's (``recall.match_proposals``) over the novel boxes.

Shape glossary:
    I : images;  D : proposals per image (padded, sorted by decreasing score)
    G : GT boxes per image (padded)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

# the seen classes and the training index of the protocol live with the data (rpnkit train
# --classes uses them); imported here, where the protocol's users have found them
from ..data.class_subset import VOC as VOC
from ..data.class_subset import VOC_CLASSES_IN_COCO as VOC_CLASSES_IN_COCO
from ..data.class_subset import keep_classes as keep_classes
from ..data.class_subset import seen_class_names as seen_class_names
from ..modeling.boxes import box_iou
from .recall import AREA_RANGES, match_proposals, proposal_recall_summary

NOVEL_MAX_DETS = (10, 100, 1000)
SEEN_IOU_THRESHOLD = 0.5


def drop_seen_proposals(
    pred_boxes: Tensor,
    pred_valid: Tensor,
    seen_boxes: Tensor,
    seen_mask: Tensor,
    *,
    iou_threshold: float = SEEN_IOU_THRESHOLD,
) -> tuple[Tensor, Tensor]:
    """Remove the proposals that land on seen-class objects and close the gaps.

    (I, D, 4) xyxy proposals sorted by decreasing score with (I, D) validity; (I, G, 4) xyxy
    seen-class GT boxes with (I, G) mask -> (I, D, 4) boxes and (I, D) validity: the valid
    proposals with IoU < ``iou_threshold`` with every seen box, in their order, first.
    """
    iou = box_iou(pred_boxes.float(), seen_boxes.float())  # (I, D, G)
    on_seen = ((iou >= iou_threshold) & seen_mask[:, None, :]).any(dim=2)  # (I, D)
    keep = pred_valid & ~on_seen
    # a stable sort of "dropped" (False first) moves the kept proposals up, in their order
    order = (~keep).to(torch.int8).sort(dim=1, stable=True).indices  # (I, D)
    boxes = pred_boxes.gather(1, order[..., None].expand(-1, -1, 4))
    return torch.where(keep.gather(1, order)[..., None], boxes, 0.0), keep.gather(1, order)


def novel_class_recall(
    pred_boxes: Tensor,
    pred_valid: Tensor,
    gt_boxes: Tensor,
    gt_mask: Tensor,
    gt_seen: Tensor,
    gt_crowd: Tensor | None = None,
    gt_areas: Tensor | None = None,
    *,
    max_dets: Sequence[int] = NOVEL_MAX_DETS,
    seen_iou_threshold: float = SEEN_IOU_THRESHOLD,
) -> dict[str, float]:
    """AR@k (and recall@k@0.5/@0.7, per size) on the novel-class GT boxes only.

    (I, D, 4) proposals sorted by decreasing score with (I, D) validity; (I, G, 4) xyxy GT with
    (I, G) mask, ``gt_seen`` (I, G) marking the boxes of seen classes, crowd flags and areas as
    ``match_proposals`` takes them. Proposals with IoU >= ``seen_iou_threshold`` with a seen
    box (crowd ones included) are removed before the budget; the seen boxes are then left out
    of the GT. ``num_novel`` counts the novel (non-crowd) boxes.
    """
    seen = gt_mask & gt_seen
    boxes, valid = drop_seen_proposals(
        pred_boxes, pred_valid, gt_boxes, seen, iou_threshold=seen_iou_threshold
    )
    novel = gt_mask & ~gt_seen
    crowd = None if gt_crowd is None else gt_crowd & novel
    table = match_proposals(
        boxes, valid, gt_boxes, novel, crowd, gt_areas, area_ranges=tuple(AREA_RANGES.values())
    )
    metrics = proposal_recall_summary(table, max_dets)
    metrics["num_novel"] = float(table.counted[0].sum())
    return metrics


def seen_flags(labels: Tensor, class_names: Sequence[str], seen: Sequence[str]) -> Tensor:
    """Labels (1..K, label k is ``class_names[k - 1]``; 0 for padding) -> bool tensor of the
    same shape: the box's class is one of ``seen``. Unknown names in ``seen`` raise a
    ValueError."""
    unknown = sorted(set(seen) - set(class_names))
    if unknown:
        raise ValueError(f"seen classes {unknown} are not among the dataset's classes")
    table = torch.tensor([False, *(name in set(seen) for name in class_names)])
    return table.to(labels.device)[labels.clamp(min=0)]
