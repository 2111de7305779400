"""Anchor-to-ground-truth matching and balanced sampling, batched over the images of a batch.

Ground truth arrives padded: ``gt_boxes`` (B, G, 4) xyxy with ``gt_mask`` (B, G) marking real
boxes and ``gt_ignore`` (B, G) marking crowd/ignore regions among them. Anchors are shared by all
images: (A, 4).

On CUDA, matching runs as two fused Triton passes that never store IoU values. Elsewhere the IoU
matrix is built in chunks of anchors: at most ``chunk_elements`` entries at a time, and the
chunks are kept for the second pass only while the whole matrix has at most ``cache_elements``
entries. A crowded image with 1,000 boxes against 270k anchors never holds its 270M-entry
matrix.

On the CPU a crowded image takes the sparse path instead (``Matcher._match_sparse``): an anchor
and a GT box have IoU > 0 only if they overlap, so it computes the IoU of the overlapping
(anchor, GT) pairs only, which ``sparse_matching`` finds through an index of the anchors, and
rebuilds the matrix path's maxima, ties and flags from them bit for bit. 1,500 GT boxes of
10-60 px against the 268k anchors of an 800x1333 image: 3.3M pairs instead of 404M entries.

Shape glossary:
    B : images;  A : anchors;  G : padded GT boxes per image;  C : anchors in one chunk
    A' : anchors with positive width and height (the sparse path's index holds these, sorted)
    M : real (or crowd) GT boxes of the batch;  N : candidate pairs of a chunk (sparse path)
    P : positive slots per image (batch_size_per_image * positive_fraction), in the sampler
    S : sampled anchors per image (batch_size_per_image)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from .boxes import box_area
from .sparse_matching import (
    AnchorIndex,
    CandidatePlan,
    anchor_index,
    cached_anchor_index,
    plan_candidates,
    take_boxes,
)

# Values of ``matched_idxs`` that are not GT indices.
BELOW_LOW_THRESHOLD = -1  # best IoU < low threshold: background
BETWEEN_THRESHOLDS = -2  # low <= best IoU < high: neither, ignored in training
IGNORED = -3  # outside the allowed border, or background covered by a crowd/ignore region

# Anchor labels for training.
POSITIVE = 1
NEGATIVE = 0
IGNORE = -1


def _iou_and_intersection(anchors: Tensor, gt_boxes: Tensor) -> tuple[Tensor, Tensor]:
    """(C, 4) anchors, (B, G, 4) GT xyxy -> (B, C, G) IoU and intersection areas; or paired,
    (N, 4) anchors and (N, 4) GT boxes -> (N,) and (N,): the sparse path's candidate pairs.

    Works per axis so that no (B, C, G, 2) temporaries are built; the values equal
    ``box_iou``'s bit for bit, and a pair's values equal its entry of the matrix (the same
    elementwise operations in the same order).
    """
    if gt_boxes.dim() == 2:  # paired
        a, g = anchors, gt_boxes  # (N, 4) each
        area_a, area_g = box_area(anchors), box_area(gt_boxes)  # (N,) each
    else:
        a = anchors[None, :, None, :]  # (1, C, 1, 4)
        g = gt_boxes[:, None, :, :]  # (B, 1, G, 4)
        area_a = box_area(anchors)[None, :, None]  # (1, C, 1)
        area_g = box_area(gt_boxes)[:, None, :]  # (B, 1, G)
    iw = (torch.minimum(a[..., 2], g[..., 2]) - torch.maximum(a[..., 0], g[..., 0])).clamp(min=0)
    ih = (torch.minimum(a[..., 3], g[..., 3]) - torch.maximum(a[..., 1], g[..., 1])).clamp(min=0)
    inter = iw * ih  # (B, C, G) or (N,)
    union = area_a + area_g - inter
    return inter / union.clamp(min=torch.finfo(inter.dtype).tiny), inter


@dataclass(frozen=True)
class MatchResult:
    """``matched_idxs`` (B, A) int64: a GT index >= 0, or one of the negative states above.
    ``matched_iou`` (B, A): each anchor's best IoU with a real (non-ignore) GT box."""

    matched_idxs: Tensor
    matched_iou: Tensor

    def labels(self) -> Tensor:
        """(B, A) int8 labels: POSITIVE, NEGATIVE or IGNORE."""
        labels = torch.full_like(self.matched_idxs, IGNORE, dtype=torch.int8)
        labels.masked_fill_(self.matched_idxs >= 0, POSITIVE)
        return labels.masked_fill_(self.matched_idxs == BELOW_LOW_THRESHOLD, NEGATIVE)


@dataclass(frozen=True)
class Matcher:
    """Labels anchors against GT boxes by IoU.

    An anchor is matched to its best GT if the IoU is >= ``high_threshold``; with
    ``allow_low_quality_matches`` it is also matched if it is the best anchor of some GT box. Ties
    count: every anchor at a GT's maximum IoU is matched, provided that maximum is > 0. A
    low-quality match takes the anchor's own best GT (as py-faster-rcnn, detectron2 and
    torchvision). Below ``low_threshold`` an anchor is background, unless at least
    ``crowd_ioa_threshold`` of it lies inside a crowd/ignore region: crowds never make negatives.

    On the CPU, ``sparse`` picks between two exact paths with bit-identical results: the dense
    IoU matrix in chunks of anchors, and IoU for the overlapping (anchor, GT) pairs only (see
    ``_match_sparse``). None chooses per call: sparse when its candidate pairs are estimated
    cheaper than the matrix (crowded images); True takes it whenever it is exact (float32 or
    float64 boxes of one dtype, finite); False keeps the dense path. CUDA always uses Triton.
    """

    high_threshold: float = 0.7
    low_threshold: float = 0.3
    allow_low_quality_matches: bool = True
    crowd_ioa_threshold: float = 0.5
    chunk_elements: int = 1 << 22
    cache_elements: int = 1 << 26
    sparse: bool | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.low_threshold <= self.high_threshold <= 1:
            raise ValueError(
                f"need 0 <= low_threshold <= high_threshold <= 1, got {self.low_threshold} and "
                f"{self.high_threshold}"
            )

    def __call__(
        self,
        anchors: Tensor,
        gt_boxes: Tensor,
        gt_mask: Tensor,
        gt_ignore: Tensor | None = None,
        visible: Tensor | None = None,
    ) -> MatchResult:
        """(A, 4), (B, G, 4), (B, G), (B, G) | None, (B, A) | None -> MatchResult."""
        if gt_ignore is None:
            gt_ignore = torch.zeros_like(gt_mask)
        real = gt_mask & ~gt_ignore  # (B, G) boxes that can match
        crowd = gt_mask & gt_ignore  # (B, G) regions that only suppress negatives

        # 1. Each anchor's best real GT and whether it lies in a crowd; each GT's best anchors.
        if gt_mask.shape[1] == 0:
            zeros = torch.zeros(
                (gt_mask.shape[0], anchors.shape[0]), dtype=torch.bool, device=anchors.device
            )
            matched_iou = zeros.to(anchors.dtype)
            matched_gt = zeros.long()
            in_crowd = low_quality = zeros
        elif anchors.is_cuda and _triton_match() is not None:
            matched_iou, matched_gt, in_crowd, low_quality = _triton_match()(
                anchors, gt_boxes, real, crowd, float(self.crowd_ioa_threshold)
            )
        else:
            found = self._match_sparse(anchors, gt_boxes, real, crowd)
            if found is None:
                found = self._match_chunked(anchors, gt_boxes, real, crowd)
            matched_iou, matched_gt, in_crowd, low_quality = found

        # 2. Threshold into states (masked_fill, not boolean indexing: no GPU->CPU sync).
        matched_idxs = matched_gt.masked_fill(matched_iou < self.high_threshold, BETWEEN_THRESHOLDS)
        matched_idxs.masked_fill_(matched_iou < self.low_threshold, BELOW_LOW_THRESHOLD)

        # 3. Low-quality matches: the best anchor(s) of every GT take their own best GT.
        if self.allow_low_quality_matches:
            matched_idxs = torch.where(low_quality, matched_gt, matched_idxs)

        # 4. Crowd regions turn background into ignored; so does the border.
        matched_idxs.masked_fill_((matched_idxs == BELOW_LOW_THRESHOLD) & in_crowd, IGNORED)
        if visible is not None:
            matched_idxs.masked_fill_(~visible, IGNORED)
        return MatchResult(matched_idxs=matched_idxs, matched_iou=matched_iou)

    def _match_chunked(
        self, anchors: Tensor, gt_boxes: Tensor, real: Tensor, crowd: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The PyTorch path, in chunks of anchors: (B, A) best IoU, best GT, in-crowd flags and
        low-quality flags (the anchor is at some GT's maximum IoU, > 0; ties count)."""
        num_images, num_gt = real.shape
        num_anchors = anchors.shape[0]
        device = anchors.device
        matched_iou = torch.zeros((num_images, num_anchors), dtype=anchors.dtype, device=device)
        matched_gt = torch.zeros((num_images, num_anchors), dtype=torch.int64, device=device)
        in_crowd = torch.zeros((num_images, num_anchors), dtype=torch.bool, device=device)
        low_quality = torch.zeros_like(in_crowd)
        gt_best_iou = torch.zeros((num_images, num_gt), dtype=anchors.dtype, device=device)
        chunk = max(1, self.chunk_elements // max(1, num_images * num_gt))
        starts = range(0, num_anchors, chunk)
        # keep the IoU chunks for the second pass when they fit in cache_elements; otherwise
        # recompute them (bounded memory for crowded images)
        keep = num_images * num_anchors * num_gt <= self.cache_elements
        cached: list[Tensor] = []
        for start in starts:
            iou, inter = _iou_and_intersection(anchors[start : start + chunk], gt_boxes)
            iou = iou.masked_fill(~real[:, None, :], -1.0)
            best, arg = iou.max(dim=2)
            matched_iou[:, start : start + chunk] = best.clamp(min=0)
            matched_gt[:, start : start + chunk] = arg
            gt_best_iou = torch.maximum(gt_best_iou, iou.max(dim=1).values)
            # inside a crowd: intersection >= threshold x anchor area (as the GPU kernel)
            area = box_area(anchors[start : start + chunk])[None, :, None]
            hit = (inter >= self.crowd_ioa_threshold * area) & crowd[:, None, :]
            in_crowd[:, start : start + chunk] = hit.any(dim=2)
            if keep:
                cached.append(iou)

        gt_has_overlap = real & (gt_best_iou > 0)  # (B, G)
        for i, start in enumerate(starts):
            if keep:
                iou = cached[i]
            else:  # recomputed: bit-identical to the first pass's values
                iou = _iou_and_intersection(anchors[start : start + chunk], gt_boxes)[0]
                iou = iou.masked_fill(~real[:, None, :], -1.0)
            is_best = (iou == gt_best_iou[:, None, :]) & gt_has_overlap[:, None, :]
            low_quality[:, start : start + chunk] = is_best.any(dim=2)
        return matched_iou, matched_gt, in_crowd, low_quality

    def _match_sparse(
        self, anchors: Tensor, gt_boxes: Tensor, real: Tensor, crowd: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
        """The sparse CPU path: ``_match_chunked``'s four (B, A) results, bit for bit, from the
        IoU of candidate (anchor, GT) pairs only; None where the dense path should run instead.

        A pair that does not overlap has intersection and IoU exactly 0, as in the matrix, so
        leaving it out changes no maximum: each anchor's best IoU is the max over its pairs and
        0; each GT's, the max over its pairs and 0. Ties are rebuilt as the matrix's ``max``
        breaks them (the lowest GT index): the lowest GT at an anchor's best when that best is
        > 0, else the image's first real GT (every real IoU is 0 and the rest -1). Chunks hold
        all the pairs of their GT boxes, so a GT's best is final within its chunk; anchors'
        bests are merged across chunks.
        """
        if self.sparse is False or torch.compiler.is_compiling():
            return None  # its sizes depend on the data: torch.compile takes the dense path
        auto = self.sparse is None
        index = cached_anchor_index(anchors)
        if auto and not _index_pays(real.shape, anchors.shape[0], cached=index is not None):
            return None
        if not _sparse_is_exact(anchors, gt_boxes, real | crowd):
            return None
        index = index if index is not None else anchor_index(anchors)
        real_at, crowd_at = real.nonzero().t(), crowd.nonzero().t()  # (2, M): image, GT slot
        real_boxes = gt_boxes[real_at[0], real_at[1]]  # (M, 4)
        crowd_boxes = gt_boxes[crowd_at[0], crowd_at[1]]
        plans = plan_candidates(index, real_boxes), plan_candidates(index, crowd_boxes)
        if auto and not _pairs_pay(plans, real.shape, anchors.shape[0]):
            return None
        state = _SparseState.empty(index, real.shape[0])
        cap = max(1, self.chunk_elements // _PAIR_MEMORY)
        for pos, box in plans[0].chunks(cap):
            state.add_real_pairs(pos, box, real_at, real_boxes.t().contiguous(), real.shape[1])
        # threshold x area as the matrix computes it, per sorted anchor: (A',)
        area_bound = self.crowd_ioa_threshold * box_area(index.coords.t())
        for pos, box in plans[1].chunks(cap):
            state.add_crowd_pairs(pos, box, crowd_at[0], crowd_boxes.t().contiguous(), area_bound)
        return state.finish(anchors, real, crowd, self.crowd_ioa_threshold)


# Memory of one candidate pair in the sparse path, in IoU-matrix entries: its positions,
# indices, gathered coordinates and temporaries come to about one entry's worth (a chunk of 1M
# pairs grows the peak RSS by ~75 MB, a dense chunk of 4M entries by ~250 MB); 4 keeps the
# sparse path well inside the dense path's bound. A chunk holds chunk_elements / 4 pairs.
_PAIR_MEMORY = 4
# Auto mode's cost model, in units of one entry of the dense matrix (33 ns single-threaded on
# the 2-core CPU of bench/bench_match_cpu.py). Measured: a candidate pair ~1.5 (gathers and
# scatters), a segment ~1, the (B, A') bookkeeping ~1 per anchor and image, building the index
# ~11 per anchor (once per anchors tensor), a call ~65k (2 ms of Python and small ops). The
# constants are rounded up: where the estimates are close the dense path is as good, and it
# is the one that needs no index.
_PAIR_COST = 3
_SEGMENT_COST = 2
_ANCHOR_COST = 2
_BUILD_COST = 16
_CALL_COST = 1 << 16
# Coordinates up to this size keep every difference and product finite in float32.
_MAX_COORDINATE = 1e18


def _index_pays(gt_shape: torch.Size, num_anchors: int, *, cached: bool) -> bool:
    """Auto mode, before any search: whether the matrix is big enough to pay for the sparse
    path's fixed costs (and for building the index, when this anchors tensor has none yet)."""
    num_images, num_gt = gt_shape
    fixed = _CALL_COST + _ANCHOR_COST * num_images * num_anchors
    if not cached:
        fixed += _BUILD_COST * num_anchors
    return fixed < num_images * num_anchors * num_gt


def _pairs_pay(
    plans: tuple[CandidatePlan, CandidatePlan], gt_shape: torch.Size, num_anchors: int
) -> bool:
    """Auto mode: whether the candidate pairs are estimated cheaper than the B x A x G matrix
    (they are not when most GT boxes are huge: a box over the whole image overlaps most
    anchors)."""
    num_images, num_gt = gt_shape
    pairs = sum(int(p.pairs_bound.sum()) for p in plans)
    segments = sum(int(p.segments.sum()) for p in plans)
    estimate = _CALL_COST + _ANCHOR_COST * num_images * num_anchors
    estimate += _PAIR_COST * pairs + _SEGMENT_COST * segments
    return estimate < num_images * num_anchors * num_gt


def _sparse_is_exact(anchors: Tensor, gt_boxes: Tensor, mask: Tensor) -> bool:
    """Whether the sparse path reproduces the matrix bit for bit: CPU tensors of one float32 or
    float64 dtype, finite (so that a pair that does not overlap has intersection exactly 0)."""
    if anchors.device.type != "cpu" or gt_boxes.device.type != "cpu":
        return False
    if anchors.dtype not in (torch.float32, torch.float64) or gt_boxes.dtype != anchors.dtype:
        return False
    if anchors.shape[0] == 0 or mask.shape[0] == 0:
        return False
    # the comparisons are False for NaN too
    limit = _MAX_COORDINATE
    return bool((anchors.abs() <= limit).all()) and bool((gt_boxes[mask].abs() <= limit).all())


@dataclass
class _SparseState:
    """The sparse path's running results, per image and *sorted* anchor position (the
    AnchorIndex order, where a chunk's pairs fall in runs): flat (B * A' + 1,) tensors whose
    last slot is a sink for pairs that must write nothing (``torch.where`` instead of boolean
    indexing: no compaction of the pairs)."""

    index: AnchorIndex
    best: Tensor | None  # (B * A' + 1,) each anchor's best IoU so far (>= 0)
    arg: Tensor | None  # (B * A' + 1,) int64: the lowest GT index at it
    low_quality: Tensor  # (B * A' + 1,) bool: at some GT's maximum IoU (> 0)
    in_crowd: Tensor  # (B * A' + 1,) bool: intersection >= threshold x area for some crowd

    @classmethod
    def empty(cls, index: AnchorIndex, num_images: int) -> _SparseState:
        flags = torch.zeros(num_images * index.num_indexed + 1, dtype=torch.bool)
        return cls(index, None, None, flags, flags.clone())

    @property
    def sink(self) -> int:
        return self.low_quality.shape[0] - 1

    def slots(self, pos: Tensor, box: Tensor, image: Tensor) -> Tensor:
        """(N,) sorted positions, (N,) boxes, (M,) their images -> (N,) flat slots."""
        if self.sink == self.index.num_indexed:  # one image
            return pos
        return pos + self.index.num_indexed * image.index_select(0, box)

    def add_real_pairs(
        self, pos: Tensor, box: Tensor, real_at: Tensor, real_coords: Tensor, num_gt: int
    ) -> None:
        """Fold in a chunk of pairs with real GT boxes: (N,) sorted anchor positions and (N,)
        indices into ``real_at`` (2, M) (image, GT slot) and ``real_coords`` (4, M)."""
        slot = self.slots(pos, box, real_at[0])
        anchors, boxes = take_boxes(self.index.coords, pos), take_boxes(real_coords, box)
        iou = _iou_and_intersection(anchors, boxes)[0]  # (N,)
        # each GT's best IoU (with 0, as the matrix's running maximum starts at 0): final here,
        # since a chunk holds every pair of its GT boxes
        gt_best = iou.new_zeros(real_coords.shape[1]).scatter_reduce_(0, box, iou, "amax")
        overlap = iou > 0
        is_best = (iou == gt_best.index_select(0, box)) & overlap
        self.low_quality.index_fill_(0, torch.where(is_best, slot, self.sink), True)
        # each anchor's best in this chunk, then the lowest GT index that reaches it: boxes are
        # numbered in (image, GT index) order, so the lowest box number is the lowest GT index
        best = iou.new_zeros(self.sink + 1).scatter_reduce_(0, slot, iou, "amax")
        at_best = (iou == best.index_select(0, slot)) & overlap
        num_boxes = real_coords.shape[1]
        arg = torch.full((self.sink + 1,), num_boxes, dtype=torch.int64)
        arg.scatter_reduce_(0, slot, torch.where(at_best, box, num_boxes), "amin")
        gt_index = torch.cat([real_at[1], real_at.new_full((1,), num_gt)])  # (M + 1,)
        arg = gt_index.index_select(0, arg)
        if self.best is None:
            self.best, self.arg = best, arg
            return
        # chunks come in increasing (image, GT) order: on a tie the earlier chunk's GT index is
        # the lower one and stays, so a later chunk wins with a higher IoU only
        take = best > self.best
        self.best = torch.where(take, best, self.best)
        self.arg = torch.where(take, arg, self.arg)

    def add_crowd_pairs(
        self, pos: Tensor, box: Tensor, image: Tensor, crowd_coords: Tensor, area_bound: Tensor
    ) -> None:
        """Fold in a chunk of pairs with crowd regions: (N,) sorted anchor positions, (N,)
        indices into ``image`` (M,) and ``crowd_coords`` (4, M); ``area_bound`` (A',)
        threshold x anchor area."""
        anchors, boxes = take_boxes(self.index.coords, pos), take_boxes(crowd_coords, box)
        inter = _iou_and_intersection(anchors, boxes)[1]  # (N,)
        hit = inter >= area_bound.index_select(0, pos)
        slot = self.slots(pos, box, image)
        self.in_crowd.index_fill_(0, torch.where(hit, slot, self.sink), True)

    def finish(
        self, anchors: Tensor, real: Tensor, crowd: Tensor, crowd_ioa_threshold: float
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The (B, A) best IoU, best GT, in-crowd and low-quality flags, in anchor order."""
        num_images, num_anchors = real.shape[0], anchors.shape[0]
        perm = self.index.perm  # (A',)
        shape = (num_images, perm.shape[0])
        # where every real IoU is 0 (and the rest -1), the matrix's max picks the first real GT
        first_real = real.to(torch.uint8).argmax(dim=1)  # (B,); 0 without real GT, as the matrix
        matched_iou = anchors.new_zeros((num_images, num_anchors))
        matched_gt = first_real[:, None].repeat(1, num_anchors)
        if self.best is not None:
            best = self.best[:-1].view(shape)
            matched_iou[:, perm] = best
            matched_gt[:, perm] = torch.where(
                best > 0, self.arg[:-1].view(shape), matched_gt[:, perm]
            )
        low_quality = torch.zeros((num_images, num_anchors), dtype=torch.bool)
        low_quality[:, perm] = self.low_quality[:-1].view(shape)
        in_crowd = torch.zeros_like(low_quality)
        in_crowd[:, perm] = self.in_crowd[:-1].view(shape)
        # a pair that does not overlap has intersection 0: inside iff 0 >= threshold x area,
        # true for every crowd of the image when the anchor's area or the threshold is <= 0
        zero_hit = crowd_ioa_threshold * box_area(anchors) <= 0  # (A,)
        in_crowd |= zero_hit[None, :] & crowd.any(dim=1)[:, None]
        return matched_iou, matched_gt, in_crowd, low_quality


@functools.cache
def _triton_match():
    """The registered Triton matching op, or None where Triton cannot be imported."""
    try:
        from .kernels.match_triton import match_anchors_op
    except ImportError:  # no Triton: CPU-only installs
        return None
    return match_anchors_op


@dataclass(frozen=True)
class SampledAnchors:
    """Anchor indices chosen for the loss, padded to fixed shapes.

    ``pos_idx`` (B, P) and ``neg_idx`` (B, S) index the anchors; ``pos_valid`` and ``neg_valid``
    mark the slots that hold a real sample. Valid slots come first.
    """

    pos_idx: Tensor
    pos_valid: Tensor
    neg_idx: Tensor
    neg_valid: Tensor

    def num_sampled(self) -> Tensor:
        """() int64: sampled anchors in the whole batch."""
        return self.pos_valid.sum() + self.neg_valid.sum()

    def masks(self, num_anchors: int) -> tuple[Tensor, Tensor]:
        """(B, A) bool masks of the sampled positives and negatives."""
        pos = torch.zeros(
            (self.pos_idx.shape[0], num_anchors), dtype=torch.bool, device=self.pos_idx.device
        )
        neg = torch.zeros_like(pos)
        # topk indices are distinct within an image, so a plain scatter has no collisions
        pos.scatter_(1, self.pos_idx, self.pos_valid)
        neg.scatter_(1, self.neg_idx, self.neg_valid)
        return pos, neg


@dataclass(frozen=True)
class BalancedSampler:
    """Samples ``batch_size_per_image`` anchors per image, at most ``positive_fraction`` of them
    positive; negatives fill the rest when positives run short.

    Batched and sync-free: each candidate gets a uniform random key, and ``topk`` over the keys
    picks a uniformly random subset of every image at once.
    """

    batch_size_per_image: int = 256
    positive_fraction: float = 0.5

    def __call__(self, labels: Tensor, generator: torch.Generator | None = None) -> SampledAnchors:
        """(B, A) int8 labels -> SampledAnchors."""
        num_anchors = labels.shape[1]
        is_pos = labels == POSITIVE
        is_neg = labels == NEGATIVE
        max_pos = int(self.batch_size_per_image * self.positive_fraction)
        num_pos = torch.clamp(is_pos.sum(dim=1), max=max_pos)  # (B,)
        num_neg = torch.minimum(is_neg.sum(dim=1), self.batch_size_per_image - num_pos)

        # in [0, 1); no generator argument when there is none: torch.compile's dynamic shapes
        # reject an explicit generator=None
        extra = {} if generator is None else {"generator": generator}
        keys = torch.rand(labels.shape, device=labels.device, **extra)
        pos_idx = torch.topk(
            torch.where(is_pos, keys, -1.0), min(max_pos, num_anchors), dim=1
        ).indices  # (B, P): positives first, since their keys beat -1
        neg_idx = torch.topk(
            torch.where(is_neg, keys, -1.0), min(self.batch_size_per_image, num_anchors), dim=1
        ).indices  # (B, S)
        slots_pos = torch.arange(pos_idx.shape[1], device=labels.device)
        slots_neg = torch.arange(neg_idx.shape[1], device=labels.device)
        return SampledAnchors(
            pos_idx=pos_idx,
            pos_valid=slots_pos[None, :] < num_pos[:, None],
            neg_idx=neg_idx,
            neg_valid=slots_neg[None, :] < num_neg[:, None],
        )
