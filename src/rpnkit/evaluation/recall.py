"""Proposal recall, computed the way pycocotools' COCOeval computes it with ``useCats=0``.

For every IoU threshold and area range, proposals are matched greedily in decreasing score order:
each takes the unmatched non-ignored GT box of highest IoU >= the threshold (the later box on a
tie), or else an ignored one; crowd regions can absorb any number of proposals and, with boxes
outside the area range, are ignored. Recall is matched non-ignored GT boxes over all non-ignored
GT boxes; AR@k averages recall over the IoU thresholds 0.5:0.05:0.95 with at most k proposals
per image.

How ``match_proposals`` computes it, exactly, with no loop over proposal ranks. Per area range,
IoU threshold and image, the greedy loop is a serial dictatorship: in rank order, each proposal
takes its favourite acceptable box (IoU >= the threshold) among those not taken yet, crowd boxes
never being taken; its favourite is a non-ignored box if it can, then the highest IoU, then the
later box (pycocotools scans the boxes sorted non-ignored first and keeps the last best).

1. Candidate pairs. A (GT box, proposal) pair below the smallest threshold (IoU, or IoA for a
   crowd box) is acceptable at no threshold, and a proposal without acceptable pairs takes
   nothing and changes nothing, so only the pairs at or above it are kept (P of them, ignored
   and crowd boxes included: a proposal that takes one is used up).
2. Preferences. Per area range the pairs of each proposal are sorted by its preference; a
   threshold only drops those below it. Pruning: if some proposal's only acceptable box is a
   non-crowd box, that box is surely taken once its turn has passed (it took the box or found
   it taken), so the box's pairs with later proposals can never be chosen and are dropped.
   This does not depend on the area range, which orders boxes but does not make them
   acceptable. On COCO-like proposals it removes most of the pairs.
3. The greedy result is the unique fixed point of ``held[g]`` = the best rank among the
   proposals whose favourite is ``g`` among the boxes free to them (not held by a better-ranked
   proposal: ``held >= own rank``, or crowd): by induction over ranks, the boxes held below a
   proposal's rank are exactly those that the greedy loop gave to earlier proposals. Iterating
   from ``held = NEVER`` reaches it: ``held`` only decreases (the boxes free to a proposal only
   shrink, so a holder keeps choosing its box), and after round k the first k candidate
   proposals of every image are final: the rounds number at most the candidate proposals of
   the busiest image plus one, 4-6 in practice. Each round is a few gathers, scatters and
   cumulative sums over the kept (range, threshold, pair) entries of every image at once: a
   parallel deferred acceptance in which every box prefers the better-ranked proposal.

``_match_proposals_reference`` keeps the straightforward loop over ranks, for tests. Images are
processed in chunks that bound the (GT box, proposal) IoU table to ``_CHUNK_PAIRS`` values.
Everything runs on the tensors' device; the host waits for it once for the chunks, three times
per chunk (the sizes of the pairs and entries) and once per round (has anything changed?).

Shape glossary:
    I : images;  D : proposals per image (padded);  G : GT boxes per image (padded)
    T : IoU thresholds;  R : area ranges;  K : proposal budgets (maxDets)
    N : real GT boxes of a chunk of images, flattened;  P : candidate (GT box, proposal) pairs
    E : entries, the kept (range, threshold, pair) with the pair's IoU >= that threshold
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from .detection import format_metric

IOU_THRESHOLDS = tuple(float(t) for t in np.linspace(0.5, 0.95, 10))
AREA_RANGES = {
    "all": (0.0, 1e10),
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e10),
}
MAX_DETS = (10, 100, 300, 1000)
NEVER = torch.iinfo(torch.int64).max  # rank recorded for a GT box that no proposal matched
_CHUNK_PAIRS = 1 << 22  # (GT box, proposal) IoU values computed at once: bounds the memory


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


def _iou_per_gt(pred_boxes: Tensor, image: Tensor, gts: Tensor, crowd: Tensor) -> Tensor:
    """(I, D, 4) proposals; (N,) image of each GT box, (N, 4) its box, (N,) crowd -> (N, D)
    IoU (IoA for crowd) with its image's proposals: the float64 operations of
    ``_iou_with_crowd`` in the same order, so the same values to the bit."""
    coords = pred_boxes.permute(2, 0, 1).contiguous()  # (4, I, D)
    det_area = (coords[2] - coords[0]) * (coords[3] - coords[1])  # (I, D)
    x1, y1, x2, y2 = coords.index_select(1, image)  # (N, D) each
    gx1, gy1, gx2, gy2 = (c[:, None] for c in gts.unbind(-1))  # (N, 1) each
    w = (torch.minimum(x2, gx2) - torch.maximum(x1, gx1)).clamp_(min=0)
    h = (torch.minimum(y2, gy2) - torch.maximum(y1, gy1)).clamp_(min=0)
    inter = w.mul_(h)
    det_area = det_area.index_select(0, image)  # (N, D)
    union = det_area + (gx2 - gx1) * (gy2 - gy1) - inter
    denom = torch.where(crowd[:, None], det_area, union)
    return torch.where(denom > 0, inter / denom, 0.0)


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


class _Setup(NamedTuple):
    """The inputs of a matching in float64, with what both algorithms derive from them."""

    pred_boxes: Tensor  # (I, D, 4) float64
    gt_boxes: Tensor  # (I, G, 4) float64
    crowd: Tensor  # (I, G) bool, real crowd boxes
    ignored: Tensor  # (R, I, G) bool: real boxes that are crowd or outside the area range
    counted: Tensor  # (R, I, G) bool: real boxes that are neither
    thresholds: Tensor  # (T,) float64, at most 1 - 1e-10 as in pycocotools


def _setup(
    pred_boxes: Tensor,
    gt_boxes: Tensor,
    gt_mask: Tensor,
    gt_crowd: Tensor | None,
    gt_areas: Tensor | None,
    iou_thresholds: Sequence[float],
    area_ranges: Sequence[tuple[float, float]],
) -> _Setup:
    """Float64 boxes, real crowd boxes, ignored and counted boxes per range, thresholds."""
    device = pred_boxes.device
    pred_boxes = pred_boxes.to(torch.float64)
    gt_boxes = gt_boxes.to(torch.float64)
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
    outside = (gt_areas[None] < ranges[:, None, None, 0]) | (
        gt_areas[None] > ranges[:, None, None, 1]
    )  # (R, I, G)
    ignored = (outside | gt_crowd[None]) & gt_mask[None]  # (R, I, G)
    counted = gt_mask[None] & ~ignored  # (R, I, G)
    return _Setup(pred_boxes, gt_boxes, gt_crowd, ignored, counted, thresholds)


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
    pycocotools does; by the fixed point of the module docstring, in chunks of images.
    """
    s = _setup(pred_boxes, gt_boxes, gt_mask, gt_crowd, gt_areas, iou_thresholds, area_ranges)
    num_images, num_gt = gt_mask.shape
    shape = (s.ignored.shape[0], s.thresholds.shape[0], num_images, num_gt)  # (R, T, I, G)
    first_match = torch.full(shape, NEVER, dtype=torch.int64, device=pred_boxes.device)
    for start, stop in _image_chunks(gt_mask, pred_valid.shape[1]):
        rows = slice(start, stop)
        image, slot = gt_mask[rows].nonzero(as_tuple=True)  # (N,) each
        crowd = s.crowd[rows][image, slot]  # (N,)
        iou = _iou_per_gt(s.pred_boxes[rows], image, s.gt_boxes[rows][image, slot], crowd)
        first_match[:, :, start + image, slot] = _match_chunk(
            iou,
            pred_valid[rows][image],
            image,
            crowd,
            s.ignored[:, rows][:, image, slot],
            s.thresholds,
        )
    return MatchTable(first_match=first_match, counted=s.counted)


def _image_chunks(gt_mask: Tensor, num_dets: int) -> list[tuple[int, int]]:
    """Consecutive image ranges with at most ``_CHUNK_PAIRS`` (GT box, proposal) pairs each
    (or one image alone); one host sync, for the GT counts."""
    chunks, start, pairs = [], 0, 0
    for i, n in enumerate(gt_mask.sum(dim=1).tolist()):
        if i > start and (pairs + n) * num_dets > _CHUNK_PAIRS:
            chunks.append((start, i))
            start, pairs = i, 0
        pairs += n
    if start < gt_mask.shape[0]:
        chunks.append((start, gt_mask.shape[0]))
    return chunks


def _match_chunk(
    iou: Tensor, valid: Tensor, image: Tensor, crowd: Tensor, ignored: Tensor, thresholds: Tensor
) -> Tensor:
    """The rank of the proposal that takes each GT box, per area range and threshold.

    (N, D) IoU of each real GT box with its image's proposals and (N, D) their validity; (N,)
    image and crowd flag of each box, (R, N) ignored per area range, (T,) thresholds ->
    (R, T, N) int64 rank or ``NEVER``.
    """
    num_gt, num_dets = iou.shape
    num_ranges, num_thr = ignored.shape[0], thresholds.shape[0]
    # step 1: the candidate pairs, sorted by GT box then proposal
    gt, det = ((iou >= thresholds.min()) & valid).nonzero(as_tuple=True)  # (P,) each
    pair_iou, pair_crowd = iou[gt, det], crowd.gather(0, gt)  # (P,) each
    order, group = _preference_order(pair_iou, image.gather(0, gt) * num_dets + det, gt, ignored)
    keep = _prune(pair_iou >= thresholds[:, None], gt, det, group, pair_crowd, num_gt)  # (T, P)
    # the entries: the kept (range, threshold, pair), by range and threshold, then in order of
    # preference, so that the entries of one proposal are consecutive (a segment)
    r, t, j = keep[:, order].transpose(0, 1).nonzero(as_tuple=True)  # (E,) each
    pair = order.view(-1)[r * order.shape[1] + j]  # (E,)
    problem, proposal = r * num_thr + t, group[pair]  # (E,) each
    first = torch.ones_like(problem, dtype=torch.bool)  # (E,) the first entry of its segment
    first[1:] = (problem[1:] != problem[:-1]) | (proposal[1:] != proposal[:-1])
    place = torch.arange(problem.shape[0], device=iou.device)  # (E,)
    segment = torch.where(first, place, 0).cummax(0).values  # (E,) its segment's first entry
    box = problem * num_gt + gt[pair]  # (E,) which (range, threshold, GT box)
    held = _settle(box, det[pair], pair_crowd[pair], segment, num_ranges * num_thr * num_gt)
    return held.view(num_ranges, num_thr, num_gt)


def _preference_order(
    pair_iou: Tensor, proposal: Tensor, gt: Tensor, ignored: Tensor
) -> tuple[Tensor, Tensor]:
    """Step 2: (P,) pairs sorted by GT box then proposal, with their IoU, proposal (numbered
    over the chunk) and GT box; (R, N) ignored -> (R, P) per area range the pairs of each
    proposal together, proposals in rank order, each in its order of preference; (P,) the
    proposal of each pair renumbered 0, 1, ... in that order."""
    num_pairs = pair_iou.shape[0]
    # stable sorts from the last key to the first; reversed, the pairs put the later box first
    order = torch.arange(num_pairs - 1, -1, -1, device=pair_iou.device)  # (P,)
    order = order[torch.sort(pair_iou[order], descending=True, stable=True).indices]
    key = proposal[order] * 2 + ignored[:, gt[order]]  # (R, P): proposal, then ignored last
    order = order[torch.sort(key, dim=1, stable=True).indices]  # (R, P)
    grouped = proposal[order[0]]  # (P,) the same in every range
    first = torch.ones_like(grouped, dtype=torch.bool)
    first[1:] = grouped[1:] != grouped[:-1]
    group = torch.empty_like(proposal).scatter_(0, order[0], first.cumsum(0) - 1)
    return order, group


def _prune(
    acceptable: Tensor, gt: Tensor, det: Tensor, group: Tensor, crowd: Tensor, num_gt: int
) -> Tensor:
    """(T, P) acceptable pairs -> those that may be chosen. A proposal whose only acceptable
    box is a non-crowd box takes it unless it is taken already, so after that proposal's turn
    the box is surely taken: its pairs with later proposals are dropped, at that threshold.
    Exact, whatever the area range (which orders the boxes but does not make them acceptable).

    (P,) GT box, rank, proposal number and crowd flag of each pair; N GT boxes.
    """
    num_thr = acceptable.shape[0]
    by_proposal, by_gt = group.expand(num_thr, -1), gt.expand(num_thr, -1)  # (T, P) each
    count = torch.zeros(acceptable.shape, dtype=torch.int64, device=det.device)
    count.scatter_add_(1, by_proposal, acceptable.long())  # (T, P) acceptable boxes per proposal
    alone = acceptable & (count.gather(1, by_proposal) == 1) & ~crowd  # (T, P)
    rank = det.expand(num_thr, -1).masked_fill(~alone, NEVER)  # (T, P)
    full = torch.full((num_thr, num_gt), NEVER, dtype=torch.int64, device=det.device)
    first_alone = full.scatter_reduce_(1, by_gt, rank, "amin")  # (T, N)
    return acceptable & (det <= first_alone.gather(1, by_gt))


def _settle(box: Tensor, rank: Tensor, crowd: Tensor, segment: Tensor, num_boxes: int) -> Tensor:
    """The fixed point of the module docstring (step 3), by rounds until nothing changes.

    Per entry, in order of preference within each segment (the consecutive entries of one
    proposal at one (range, threshold)): (E,) the box, the proposal's rank, the box's crowd
    flag, the segment start (the position of its segment's first entry) -> (num_boxes,) the
    best rank among the proposals taking each box, or ``NEVER``.
    """
    held = torch.full((num_boxes,), NEVER, dtype=torch.int64, device=box.device)
    for _ in range(box.shape[0] + 1):  # each round but the last lowers some held rank
        # free to this proposal: not held by a better-ranked one (crowd boxes: never held)
        free = (held.gather(0, box) >= rank) | crowd  # (E,)
        # its favourite is its first free entry: no free entry before it in its segment
        before = free.cumsum(0) - free.long()  # (E,) free entries before, over all segments
        chosen = free & (before == before.gather(0, segment))  # (E,) one per segment at most
        taker = rank.masked_fill(~chosen, NEVER)
        new = torch.full_like(held, NEVER).scatter_reduce_(0, box, taker, "amin")
        if torch.equal(new, held):  # one host sync per round
            return held
        held = new
    raise AssertionError("the rounds must reach a fixed point")


def _match_proposals_reference(
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
    """``match_proposals`` the straightforward way, for tests and benchmarks: one loop over
    proposal ranks on the padded batch, all images, thresholds, ranges and GT boxes at once."""
    s = _setup(pred_boxes, gt_boxes, gt_mask, gt_crowd, gt_areas, iou_thresholds, area_ranges)
    device, gt_crowd, ignored, thresholds = pred_boxes.device, s.crowd, s.ignored, s.thresholds
    iou = _iou_with_crowd(s.pred_boxes, s.gt_boxes, gt_crowd)  # (I, D, G)
    num_images, num_dets = pred_valid.shape
    num_ranges, num_thr, num_gt = ignored.shape[0], thresholds.shape[0], gt_mask.shape[1]
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
    return MatchTable(first_match=first_match, counted=s.counted)


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
    """A text table: rows AR (0.5:0.95), recall@0.5 and @0.7; columns k x sizes; n/a where
    there is no GT to count (COCO's -1: no small objects)."""
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
            lines.append(f"{label:>14}" + "".join(format_metric(v, 9) for v in values))
    return "\n".join(lines)
