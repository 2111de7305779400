"""Helpers for comparing proposals with a reference (tests and benchmarks)."""

from __future__ import annotations

import torch
from torch import Tensor


def _by_coordinates(boxes: Tensor, scores: Tensor) -> Tensor:
    """(N, 4), (N,) -> (N, 5) float64 rows [x1, y1, x2, y2, score] in coordinate order."""
    rows = torch.cat([boxes.double(), scores[:, None].double()], dim=1).cpu()
    for col in (3, 2, 1, 0):  # least significant key first; stable sorts keep the earlier keys
        rows = rows[rows[:, col].sort(stable=True).indices]
    return rows


def same_proposals(
    boxes: Tensor,
    scores: Tensor,
    ref_boxes: Tensor,
    ref_scores: Tensor,
    *,
    atol: float = 1e-4,
    score_atol: float = 0.0,
) -> bool:
    """True if two ranked proposal lists hold the same (box, score) pairs.

    Both lists must be sorted by decreasing score; equal pairs then mean the same proposals in
    the same order, except among equal scores (float32 sigmoids often tie, and sort orders of
    ties are not defined). Boxes are compared to ``atol`` pixels, scores to ``score_atol``
    (0: exactly; a CUDA sigmoid may differ from the CPU's by one ulp).
    """
    if boxes.shape != ref_boxes.shape:
        return False
    for s in (scores.float(), ref_scores.float()):
        if bool((s[1:] > s[:-1] + score_atol).any()):
            return False
    a, b = _by_coordinates(boxes, scores.float()), _by_coordinates(ref_boxes, ref_scores.float())
    return torch.allclose(a[:, :4], b[:, :4], atol=atol, rtol=0) and torch.allclose(
        a[:, 4], b[:, 4], atol=score_atol, rtol=0
    )


@torch.no_grad()
def copy_rpn_head_to_torchvision(head, tv_head) -> None:
    """Load rpnkit's (shared-predictor) RPNHead weights into torchvision's RPNHead."""
    tv_head.conv[0][0].weight.copy_(head.conv.weight)
    tv_head.conv[0][0].bias.copy_(head.conv.bias)
    tv_head.cls_logits.weight.copy_(head.cls_logits[0].weight)
    tv_head.cls_logits.bias.copy_(head.cls_logits[0].bias)
    tv_head.bbox_pred.weight.copy_(head.bbox_pred[0].weight)
    tv_head.bbox_pred.bias.copy_(head.bbox_pred[0].bias)
