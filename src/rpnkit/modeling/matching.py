"""Anchor-to-ground-truth matching and balanced sampling, batched over the images of a batch.

Ground truth arrives padded: ``gt_boxes`` (B, G, 4) xyxy with ``gt_mask`` (B, G) marking real
boxes and ``gt_ignore`` (B, G) marking crowd/ignore regions among them. Anchors are shared by all
images: (A, 4).

On CUDA, matching runs as two fused Triton passes that never store IoU values. Elsewhere the IoU
matrix is built in chunks of anchors: at most ``chunk_elements`` entries at a time, and the
chunks are kept for the second pass only while the whole matrix has at most ``cache_elements``
entries. A crowded image with 1,000 boxes against 270k anchors never holds its 270M-entry
matrix.

Shape glossary:
    B : images;  A : anchors;  G : padded GT boxes per image;  C : anchors in one chunk
    P : positive slots per image (batch_size_per_image * positive_fraction)
    S : sampled anchors per image (batch_size_per_image)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from .boxes import box_area

# Values of ``matched_idxs`` that are not GT indices.
BELOW_LOW_THRESHOLD = -1  # best IoU < low threshold: background
BETWEEN_THRESHOLDS = -2  # low <= best IoU < high: neither, ignored in training
IGNORED = -3  # outside the allowed border, or background covered by a crowd/ignore region

# Anchor labels for training.
POSITIVE = 1
NEGATIVE = 0
IGNORE = -1


def _iou_and_intersection(anchors: Tensor, gt_boxes: Tensor) -> tuple[Tensor, Tensor]:
    """(C, 4) anchors, (B, G, 4) GT xyxy -> (B, C, G) IoU and intersection areas.

    Works per axis so that no (B, C, G, 2) temporaries are built; the values equal
    ``box_iou``'s bit for bit.
    """
    a = anchors[None, :, None, :]  # (1, C, 1, 4)
    g = gt_boxes[:, None, :, :]  # (B, 1, G, 4)
    iw = (torch.minimum(a[..., 2], g[..., 2]) - torch.maximum(a[..., 0], g[..., 0])).clamp(min=0)
    ih = (torch.minimum(a[..., 3], g[..., 3]) - torch.maximum(a[..., 1], g[..., 1])).clamp(min=0)
    inter = iw * ih  # (B, C, G)
    area_a = box_area(anchors)[None, :, None]  # (1, C, 1)
    union = area_a + box_area(gt_boxes)[:, None, :] - inter
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
    """

    high_threshold: float = 0.7
    low_threshold: float = 0.3
    allow_low_quality_matches: bool = True
    crowd_ioa_threshold: float = 0.5
    chunk_elements: int = 1 << 22
    cache_elements: int = 1 << 26

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
            matched_iou, matched_gt, in_crowd, low_quality = self._match_chunked(
                anchors, gt_boxes, real, crowd
            )

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

        keys = torch.rand(labels.shape, generator=generator, device=labels.device)  # in [0, 1)
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
