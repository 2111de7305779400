"""Helpers for comparing proposals with a reference (tests and benchmarks)."""

from __future__ import annotations

import torch
from torch import Tensor


def canonical_order(boxes: Tensor, scores: Tensor) -> Tensor:
    """(N, 4) boxes and (N,) scores -> (N, 5) float64 rows [score, x1, y1, x2, y2] sorted by
    decreasing score, then by coordinates. Two lists that differ only in the order of equal
    scores (float32 sigmoids often tie) become equal."""
    rows = torch.cat([scores[:, None].double(), boxes.double()], dim=1).cpu()
    for col in (4, 3, 2, 1):  # least significant key first; stable sorts keep earlier keys
        rows = rows[rows[:, col].sort(stable=True).indices]
    return rows[(-rows[:, 0]).sort(stable=True).indices]


def same_proposals(
    boxes: Tensor, scores: Tensor, ref_boxes: Tensor, ref_scores: Tensor, *, atol: float = 1e-4
) -> bool:
    """True if both lists hold the same (box, score) pairs up to the order of equal scores;
    boxes to ``atol`` pixels, scores exactly."""
    if boxes.shape != ref_boxes.shape:
        return False
    # both must be ranked: then equal multisets differ only in the order of equal scores
    for s in (scores.float(), ref_scores.float()):
        if bool((s[1:] > s[:-1]).any()):
            return False
    a, b = canonical_order(boxes, scores.float()), canonical_order(ref_boxes, ref_scores.float())
    return torch.equal(a[:, 0], b[:, 0]) and torch.allclose(a[:, 1:], b[:, 1:], atol=atol, rtol=0)
