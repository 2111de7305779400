"""The second stage (Fast R-CNN head): RoI sampling, RoI pooling over pyramid levels, the box
head, class-specific regression, losses and detection post-processing, batched over images.

Boxes are scored in one of two modes (``RoIHeadConfig.score_mode``). ``"classification"``:
Faster R-CNN's softmax over the classes, class-specific regression, NMS within each class.
``"localization"`` (OLN, Kim et al., RA-L 2022, the OLN-Box head): class-agnostic; besides
the box regression, one output regresses the IoU of each RoI with its matched GT box (L1 on
its sigmoid, on the foreground RoIs), and no classifier is trained; a final box scores the
geometric mean sqrt(RPN score x predicted IoU) of its proposal's two localization qualities,
then class-agnostic NMS. Its boxes are open-world proposals.

Shape glossary:
    B : images;  K : proposals per image (padded);  G : GT boxes per image (padded)
    R : sampled RoIs per image;  C : classes including background (index 0)
    L : feature levels used for pooling;  S : pooled size (7)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import check_choices, check_ranges
from .boxes import BoxCoder, box_iou, clip_boxes
from .matching import IGNORE, NEGATIVE, POSITIVE, BalancedSampler, SampledAnchors
from .nms import nms_keep
from .pooling import pool_by_level, pool_level, pool_on_canvas, pool_sorted_by_level
from .rpn import _check_box_coder_weights
from .structures import GroundTruth


@dataclass(frozen=True)
class RoIHeadConfig:
    """Second-stage settings. ``bg_iou`` is the background IoU range [low, high): (0.1, 0.5) in
    the paper, (0.0, 0.5) in the modern setting; below ``low`` a RoI is ignored."""

    num_classes: int = 91  # including background
    rois_per_image: int = 512
    positive_fraction: float = 0.25
    fg_iou: float = 0.5
    bg_iou: tuple[float, float] = (0.0, 0.5)
    pooler: Literal["align", "pool"] = "align"
    pooled_size: int = 7
    sampling_ratio: int = 2
    head: Literal["mlp", "vgg"] = "mlp"
    representation_size: int = 1024
    box_coder_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    smooth_l1_beta: float = 1.0 / 9
    score_threshold: float = 0.05
    nms_threshold: float = 0.5
    detections_per_image: int = 100
    nms_candidates: int = 5000  # per image, best first: see postprocess_detections
    min_size: float = 1e-2
    canonical_scale: float = 224.0
    canonical_level: int = 4
    # False: the second stage's losses train its own layers only, not the shared features (no
    # RoIAlign backward, which is slow on a CPU; the demo's setting)
    feature_gradient: bool = True
    # "localization": OLN's class-agnostic box head (module docstring); num_classes is then 2
    score_mode: Literal["classification", "localization"] = "classification"
    iou_loss_weight: float = 1.0  # localization: the weight of the IoU branch's L1 loss

    def __post_init__(self) -> None:
        check_ranges(self, ("num_classes",), low=2, integer=True)
        counts = ("rois_per_image", "pooled_size", "representation_size", "detections_per_image")
        check_ranges(self, (*counts, "nms_candidates"), low=1, integer=True)
        check_ranges(self, ("sampling_ratio", "canonical_level"), low=0, integer=True)
        check_ranges(self, ("positive_fraction", "nms_threshold"), low=0, high=1, low_open=True)
        check_ranges(self, ("fg_iou", "score_threshold"), low=0, high=1)
        check_ranges(self, ("smooth_l1_beta", "min_size", "iou_loss_weight"), low=0)
        check_ranges(self, ("canonical_scale",), low=0, low_open=True)
        bg = self.bg_iou
        if not (
            len(bg) == 2
            and all(isinstance(v, (int, float)) for v in bg)
            and 0 <= bg[0] <= bg[1] <= self.fg_iou
        ):
            raise ValueError(
                "RoIHeadConfig.bg_iou must be a range (low, high) with 0 <= low <= high <= "
                f"fg_iou ({self.fg_iou}), got {bg!r}"
            )
        _check_box_coder_weights(self)
        check_choices(
            self,
            {
                "pooler": ("align", "pool"),
                "head": ("mlp", "vgg"),
                "score_mode": ("classification", "localization"),
            },
        )
        if self.score_mode == "localization" and self.num_classes != 2:
            raise ValueError(
                "RoIHeadConfig.score_mode='localization' is class-agnostic: it needs "
                f"num_classes=2 (background and object), got {self.num_classes}"
            )

    @property
    def class_agnostic(self) -> bool:
        """One "object" class: every GT box is foreground whatever its label."""
        return self.score_mode == "localization"

    @classmethod
    def paper(cls, **overrides) -> RoIHeadConfig:
        """The paper's: 128 RoIs, background [0.1, 0.5), RoIPool, VGG fc6/fc7, NMS 0.3."""
        settings = dict(
            rois_per_image=128,
            bg_iou=(0.1, 0.5),
            pooler="pool",
            head="vgg",
            representation_size=4096,
            nms_threshold=0.3,
        )
        settings.update(overrides)
        return cls(**settings)

    @classmethod
    def localization(cls, **overrides) -> RoIHeadConfig:
        """OLN's box head (``oln_box.py``): class-agnostic, 512 RoIs with at most 25 %
        foreground at IoU >= 0.5 (GT added), L1 box loss (beta 0) and IoU loss of weight 1;
        at test time no score threshold, NMS 0.7 and 1,500 boxes per image (more than AR@1000
        needs, as proposals on seen-class objects do not count against the budget)."""
        settings = dict(
            score_mode="localization",
            num_classes=2,
            smooth_l1_beta=0.0,
            score_threshold=0.0,
            nms_threshold=0.7,
            detections_per_image=1500,
        )
        settings.update(overrides)
        return cls(**settings)


@dataclass
class SampledRoIs:
    """``boxes`` (B, R, 4) xyxy, ``valid`` (B, R), ``labels`` (B, R) int64 (0 = background),
    ``targets`` (B, R, 4) regression targets to the matched GT and ``ious`` (B, R) the IoU of
    each RoI with that GT (both meaningful where labels > 0)."""

    boxes: Tensor
    valid: Tensor
    labels: Tensor
    targets: Tensor
    ious: Tensor


@dataclass
class Detections:
    """Padded detections: ``boxes`` (B, D, 4) xyxy, ``scores`` (B, D), ``labels`` (B, D)
    int64 class ids (1..C-1), ``num`` (B,) valid count, best first."""

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    num: Tensor

    def per_image(self) -> list[tuple[Tensor, Tensor, Tensor]]:
        return [
            (self.boxes[i, :n], self.scores[i, :n], self.labels[i, :n])
            for i, n in enumerate(self.num.tolist())
        ]


def _combine_samples(sample: SampledAnchors, rois_per_image: int) -> tuple[Tensor, Tensor]:
    """Positive slots then negative slots, compacted into (B, R) indices and validity."""
    num_pos = sample.pos_valid.sum(dim=1, keepdim=True)  # (B, 1)
    num_neg = sample.neg_valid.sum(dim=1, keepdim=True)
    slots = torch.arange(rois_per_image, device=num_pos.device)[None, :]  # (1, R)
    from_pos = sample.pos_idx.gather(
        1, slots.clamp(max=sample.pos_idx.shape[1] - 1).expand(len(num_pos), -1)
    )
    neg_slot = (slots - num_pos).clamp(min=0, max=sample.neg_idx.shape[1] - 1)
    from_neg = sample.neg_idx.gather(1, neg_slot)
    index = torch.where(slots < num_pos, from_pos, from_neg)
    return index, slots < num_pos + num_neg


class RoISampler:
    """Proposals plus GT boxes -> R sampled RoIs per image with labels and box targets."""

    def __init__(self, config: RoIHeadConfig) -> None:
        self.config = config
        self.sampler = BalancedSampler(config.rois_per_image, config.positive_fraction)
        self.coder = BoxCoder(config.box_coder_weights)

    def __call__(
        self,
        proposals: Tensor,
        proposals_valid: Tensor,
        targets: GroundTruth,
        generator: torch.Generator | None = None,
    ) -> SampledRoIs:
        """(B, K, 4), (B, K), GT -> SampledRoIs. GT boxes are appended to the proposals."""
        cfg = self.config
        real = targets.mask & ~targets.ignore  # (B, G)
        rois = torch.cat([proposals.to(targets.boxes.dtype), targets.boxes], dim=1)  # (B, K+G, 4)
        rois_valid = torch.cat([proposals_valid, real], dim=1)
        iou = box_iou(rois, targets.boxes).masked_fill(~real[:, None, :], -1.0)  # (B, K+G, G)
        best, matched = (
            iou.max(dim=2)
            if iou.shape[2]
            else (
                torch.full(rois_valid.shape, -1.0, device=rois.device),
                torch.zeros(rois_valid.shape, dtype=torch.long, device=rois.device),
            )
        )
        lo, hi = cfg.bg_iou
        state = torch.full_like(matched, IGNORE, dtype=torch.int8)
        state.masked_fill_((best >= lo) & (best < hi), NEGATIVE)
        state.masked_fill_(best < 0, NEGATIVE if lo <= 0 else IGNORE)  # images without GT
        state.masked_fill_(best >= cfg.fg_iou, POSITIVE)
        state.masked_fill_(~rois_valid, IGNORE)
        index, valid = _combine_samples(self.sampler(state, generator), cfg.rois_per_image)
        boxes = rois.gather(1, index[..., None].expand(-1, -1, 4))  # (B, R, 4)
        gt_index = matched.gather(1, index)
        labels = targets.labels.gather(1, gt_index) if targets.labels.shape[1] else gt_index
        if cfg.class_agnostic:  # every object is of the one class, whatever its label
            labels = torch.ones_like(gt_index)
        labels = torch.where(state.gather(1, index) == POSITIVE, labels, 0) * valid
        gt_boxes = targets.boxes.gather(1, gt_index[..., None].expand(-1, -1, 4))
        fg = labels > 0
        # only foreground RoIs have targets; elsewhere zeros (a degenerate unused box would
        # encode to NaN, and NaN times a zero mask still poisons the gradient)
        deltas = self.coder.encode(gt_boxes, boxes)
        ious = torch.where(fg, best.gather(1, index), 0.0)  # the RoI's own, before regression
        return SampledRoIs(boxes, valid, labels, torch.where(fg[..., None], deltas, 0.0), ious)


class MultiLevelRoIPooler(nn.Module):
    """RoIAlign or RoIPool from torchvision's kernels; on a pyramid each box goes to level
    k = floor(4 + log2(sqrt(w h) / 224)), clamped to the pooled levels."""

    def __init__(self, *, strides: Sequence[int], config: RoIHeadConfig) -> None:
        super().__init__()
        self.strides = list(strides)
        self.config = config
        self.k_min = round(math.log2(self.strides[0]))
        self.k_max = round(math.log2(self.strides[-1]))

    def levels(self, boxes: Tensor) -> Tensor:
        """(N, 4) -> (N,) index into the pooled levels (torchvision's LevelMapper)."""
        c = self.config
        scale = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        k = torch.floor(c.canonical_level + torch.log2(scale / c.canonical_scale) + 1e-6)
        k = torch.nan_to_num(k, nan=self.k_min)  # a NaN box must not become int64's minimum
        return (k.clamp(self.k_min, self.k_max) - self.k_min).to(torch.int64)

    def forward(
        self,
        features: Sequence[Tensor],
        boxes: Tensor,
        *,
        # None: RoIAlign on one canvas on CUDA, otherwise level by level; only rpnkit.export
        # passes a step (its graph twin, rpnkit/export/graph_ops.py)
        pool_levels: Callable[..., Tensor] | None = None,
    ) -> Tensor:
        """Features [(B, ch, H_l, W_l)] for the pooled levels, (B, R, 4) boxes ->
        (B*R, ch, S, S)."""
        c = self.config
        num_images, r = boxes.shape[:2]
        flat = boxes.reshape(-1, 4).float()
        batch_index = torch.arange(num_images, device=boxes.device).repeat_interleave(r)
        rois = torch.cat([batch_index[:, None].to(flat.dtype), flat], dim=1)  # (B*R, 5)
        if len(features) == 1:
            return self._pool(features[0], rois, self.strides[0])
        levels = self.levels(flat)
        if pool_levels is not None:  # as given, even under torch.compile
            return pool_levels(features, self.strides, rois, levels, self._pool)
        if c.pooler == "align" and c.sampling_ratio > 0 and features[0].is_cuda:
            # one call, no GPU->CPU sync, traced by torch.compile. Not on the CPU, where there
            # is no sync to save and the canvas costs more than the loop: 1.4x the pooler's
            # forward and backward on 2 cores (1,024 RoIs, 800 x 1,216, batch 2). Nor for the
            # adaptive sampling ratio (0), ceil(RoI size / S) samples: moving a RoI can change
            # its float32 width by one step, and so the count
            settings = {"size": c.pooled_size, "sampling_ratio": c.sampling_ratio}
            return pool_on_canvas(features, self.strides, rois, levels, **settings)
        if torch.compiler.is_compiling():
            # one opaque op instead of a graph break at the slice lengths read on the host
            settings = (c.pooled_size, c.sampling_ratio, c.pooler == "align")
            return pool_by_level(list(features), rois, levels, self.strides, *settings)
        return pool_sorted_by_level(features, self.strides, rois, levels, self._pool)

    def _pool(self, feature: Tensor, rois: Tensor, stride: int) -> Tensor:
        c = self.config
        align = c.pooler == "align"
        return pool_level(
            feature, rois, stride, size=c.pooled_size, sampling_ratio=c.sampling_ratio, align=align
        )


class BoxHead(nn.Module):
    """Two fully connected layers (1024-wide MLP, or VGG's fc6/fc7 at 4096), then the class
    scores (C) and class-specific box deltas (4 C); in localization mode the IoU logit (1)
    and class-agnostic deltas (4) instead (OLN's Shared2FCBBoxScoreHead without its unused
    classifier)."""

    def __init__(self, *, in_channels: int, config: RoIHeadConfig) -> None:
        super().__init__()
        size, width = config.pooled_size, config.representation_size
        self.fc6 = nn.Linear(in_channels * size * size, width)
        self.fc7 = nn.Linear(width, width)
        self.dropout = config.head == "vgg"  # VGG's fc6/fc7 were trained with dropout
        if config.class_agnostic:
            self.iou_score = nn.Linear(width, 1)
            nn.init.normal_(self.iou_score.weight, std=0.01)  # OLN's: every IoU starts at 0.5
            nn.init.zeros_(self.iou_score.bias)
            self.bbox_pred = nn.Linear(width, 4)
        else:
            self.cls_score = nn.Linear(width, config.num_classes)
            self.bbox_pred = nn.Linear(width, config.num_classes * 4)

    def forward(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        """(N, ch, S, S) -> (N, C) logits, (N, 4 C) deltas; localization mode: (N, 1) IoU
        logits, (N, 4) deltas."""
        x = F.relu(self.fc6(pooled.flatten(1)))
        if self.dropout:
            x = F.dropout(x, 0.5, self.training)
        x = F.relu(self.fc7(x))
        if self.dropout:
            x = F.dropout(x, 0.5, self.training)
        scores = self.iou_score if hasattr(self, "iou_score") else self.cls_score
        return scores(x), self.bbox_pred(x)


def fast_rcnn_losses(
    class_logits: Tensor, box_deltas: Tensor, sample: SampledRoIs, beta: float
) -> dict[str, Tensor]:
    """Cross-entropy over the sampled RoIs and smooth-L1 on the foreground RoIs' deltas for
    their class, both divided by the number of sampled RoIs (torchvision's normalisation)."""
    labels = sample.labels.reshape(-1)  # (B*R,)
    valid = sample.valid.reshape(-1)
    count = valid.sum().clamp(min=1).to(class_logits.dtype)
    ce = F.cross_entropy(class_logits.float(), labels, reduction="none")
    deltas = box_deltas.float().view(len(labels), -1, 4)  # (N, 4C) -> (N, C, 4)
    own = deltas.gather(1, labels[:, None, None].expand(-1, 1, 4)).squeeze(1)  # (N, 4)
    box = F.smooth_l1_loss(
        own, sample.targets.reshape(-1, 4).float(), beta=beta, reduction="none"
    ).sum(-1)
    fg = (labels > 0) & valid
    return {
        "loss_classifier": (ce * valid).sum() / count,
        "loss_box_reg": (box * fg).sum() / count,
    }


def localization_losses(
    iou_logits: Tensor, box_deltas: Tensor, sample: SampledRoIs, config: RoIHeadConfig
) -> dict[str, Tensor]:
    """OLN's box-head losses: smooth-L1 (L1 at beta 0, OLN's) on the foreground RoIs'
    class-agnostic deltas, and L1 between the sigmoid of the IoU logit and the RoI's IoU with
    its GT on the foreground RoIs, weighted by ``iou_loss_weight``; no classification loss.
    Both are divided by the number of sampled RoIs, background included (OLN's
    ``avg_factor``: the background RoIs count but have no target).

    (B*R, 1) IoU logits, (B*R, 4) deltas, the SampledRoIs they were computed on."""
    valid = sample.valid.reshape(-1)  # (B*R,)
    fg = (sample.labels.reshape(-1) > 0) & valid
    count = valid.sum().clamp(min=1).to(torch.float32)
    box = F.smooth_l1_loss(
        box_deltas.float(),
        sample.targets.reshape(-1, 4).float(),
        beta=config.smooth_l1_beta,
        reduction="none",
    ).sum(-1)
    pred_iou = torch.sigmoid(iou_logits.float().reshape(-1))
    iou = (pred_iou - sample.ious.reshape(-1).float()).abs()
    # masks select with where: a background RoI's delta may be anything
    return {
        "loss_box_reg": torch.where(fg, box, 0.0).sum() / count,
        "loss_iou": config.iou_loss_weight * torch.where(fg, iou, 0.0).sum() / count,
    }


def postprocess_detections(
    class_logits: Tensor,
    box_deltas: Tensor,
    boxes: Tensor,
    valid: Tensor,
    image_sizes: Tensor,
    config: RoIHeadConfig,
    coder: BoxCoder,
    *,
    nms: Callable[..., Tensor] = nms_keep,  # only rpnkit.export passes another (its graph twin)
) -> Detections:
    """(B*R, C), (B*R, 4C), (B, R, 4) RoIs, (B, R) -> top detections per image: decode per
    class, clip, drop background, scores at or below the threshold and tiny boxes, NMS within
    each class, keep the best ``detections_per_image``. Batched over images, no sync.

    The NMS sees each image's ``nms_candidates`` best (RoI, class) pairs that pass the threshold
    (all of them, as in torchvision, when there are no more than that).
    """
    if config.class_agnostic:
        raise ValueError(
            "a localization-mode box head has no class scores: its detections come from "
            "postprocess_localization, with the proposals' RPN scores"
        )
    num_images, r = boxes.shape[:2]
    c = class_logits.shape[1]
    scores = F.softmax(class_logits.float(), -1).view(num_images, r, c)
    decoded = coder.decode(
        box_deltas.float().view(num_images, r, c, 4),
        boxes.float()[:, :, None, :].expand(-1, -1, c, -1),
    )
    decoded = clip_boxes(decoded.reshape(num_images, r * c, 4), image_sizes).view(
        num_images, r, c, 4
    )
    # drop the background column, flatten the (RoI, class) pairs of each image
    scores = scores[..., 1:].reshape(num_images, -1)  # (B, R*(C-1))
    decoded = decoded[:, :, 1:].reshape(num_images, -1, 4)
    wh = decoded[..., 2:] - decoded[..., :2]
    passing = (
        valid[:, :, None].expand(-1, -1, c - 1).reshape(num_images, -1)
        & (scores > config.score_threshold)
        & (wh >= config.min_size).all(-1)
        & torch.isfinite(decoded).all(-1)
    )
    return keep_best_detections(scores, decoded, passing, c - 1, config, nms=nms)


def keep_best_detections(
    scores: Tensor,
    boxes: Tensor,
    passing: Tensor,
    num_labels: int,
    config: RoIHeadConfig,
    *,
    nms: Callable[..., Tensor] = nms_keep,
) -> Detections:
    """(B, M) scores, (B, M, 4) boxes and (B, M) passing flags of each image's M = R x
    ``num_labels`` (RoI, class) pairs, class ids 1..num_labels fastest -> the best
    ``detections_per_image`` after NMS within each class. Batched, no sync."""
    # the best candidates of each image, sorted by score (failing ones rank last)
    n = min(config.nms_candidates, scores.shape[1])
    top_scores, top_idx = scores.masked_fill(~passing, -1.0).topk(n, dim=1)  # (B, n)
    top_valid = passing.gather(1, top_idx)
    top_boxes = boxes.gather(1, top_idx[..., None].expand(-1, -1, 4))
    top_labels = top_idx % num_labels + 1  # class ids 1..num_labels
    det = config.detections_per_image
    keep = nms(
        top_boxes, top_valid, config.nms_threshold, classes=top_labels, max_keep=det
    )  # (B, n)
    # the first ``det`` kept, in score order: kept slots rank by position, the others last
    rank = torch.where(keep, torch.arange(n, device=keep.device), n)
    slots = rank.topk(min(det, n), dim=1, largest=False).values.clamp(max=n - 1)  # (B, D')
    num = keep.sum(dim=1).clamp(max=det)
    found = torch.arange(slots.shape[1], device=keep.device)[None, :] < num[:, None]
    pad = det - slots.shape[1]
    # padding is zeros, chosen with where: multiplying by a mask would keep a NaN
    kept_boxes = top_boxes.gather(1, slots[..., None].expand(-1, -1, 4))
    out_boxes = F.pad(torch.where(found[..., None], kept_boxes, 0.0), (0, 0, 0, pad))
    out_scores = F.pad(torch.where(found, top_scores.gather(1, slots), 0.0), (0, pad))
    out_labels = F.pad(torch.where(found, top_labels.gather(1, slots), 0), (0, pad))
    return Detections(out_boxes, out_scores, out_labels, num)


def combined_scores(rpn_scores: Tensor, iou_logits: Tensor) -> Tensor:
    """OLN's box score: the geometric mean sqrt(RPN score x sigmoid(IoU logit)) of the two
    localization qualities. (B, R) scores in [0, 1], (B, R) logits -> (B, R)."""
    return torch.sqrt(rpn_scores.float().clamp(min=0) * torch.sigmoid(iou_logits.float()))


def postprocess_localization(
    iou_logits: Tensor,
    box_deltas: Tensor,
    boxes: Tensor,
    valid: Tensor,
    rpn_scores: Tensor,
    image_sizes: Tensor,
    config: RoIHeadConfig,
    coder: BoxCoder,
    *,
    nms: Callable[..., Tensor] = nms_keep,
) -> Detections:
    """(B*R, 1) IoU logits, (B*R, 4) class-agnostic deltas, (B, R, 4) RoIs, (B, R) validity
    and (B, R) RPN scores -> the best ``detections_per_image`` boxes per image (label 1),
    scored by ``combined_scores``: decode, clip, drop scores at or below the threshold and
    tiny boxes, class-agnostic NMS. Batched over images, no sync."""
    num_images, r = boxes.shape[:2]
    scores = combined_scores(rpn_scores, iou_logits.view(num_images, r))  # (B, R)
    decoded = coder.decode(box_deltas.float().view(num_images, r, 4), boxes.float())
    decoded = clip_boxes(decoded, image_sizes)
    wh = decoded[..., 2:] - decoded[..., :2]
    passing = (
        valid
        & (scores > config.score_threshold)
        & (wh >= config.min_size).all(-1)
        & torch.isfinite(decoded).all(-1)
        & torch.isfinite(scores)
    )
    return keep_best_detections(scores, decoded, passing, 1, config, nms=nms)


class RoIHeads(nn.Module):
    """Sampler + pooler + box head, with losses in training and detections at inference."""

    def __init__(self, *, in_channels: int, strides: Sequence[int], config: RoIHeadConfig) -> None:
        super().__init__()
        self.config = config
        self.sampler = RoISampler(config)
        self.pooler = MultiLevelRoIPooler(strides=strides, config=config)
        self.box_head = BoxHead(in_channels=in_channels, config=config)
        self.coder = BoxCoder(config.box_coder_weights)

    def _check_labels(self, targets: GroundTruth) -> None:
        """Class ids beyond the head's classes are an error naming the image and the box. Free
        for GT validated on the CPU (``collate`` records the largest id); otherwise one sync."""
        top = targets.max_label
        if top is None:
            top = (
                int(targets.labels.masked_fill(~targets.mask, 0).max()) if targets.mask.any() else 0
            )
        if top < self.config.num_classes:
            return
        bad = ((targets.labels >= self.config.num_classes) & targets.mask).nonzero()[0]
        b, g = (int(v) for v in bad)
        raise ValueError(
            f"image {b}: ground-truth box {g} has class id {int(targets.labels[b, g])} "
            f"but the head has {self.config.num_classes - 1} classes (ids 1.."
            f"{self.config.num_classes - 1}; 0 is background)"
        )

    def forward(
        self,
        features: Sequence[Tensor],
        proposals: Tensor,
        proposals_valid: Tensor,
        image_sizes: Tensor,
        targets: GroundTruth | None = None,
        generator: torch.Generator | None = None,
        *,
        proposal_scores: Tensor | None = None,
        config: RoIHeadConfig | None = None,
    ) -> tuple[Detections | None, dict[str, Tensor], SampledRoIs | None]:
        """Features of the pooled levels, (B, K, 4) proposals (detached), (B, K) validity.
        ``proposal_scores`` (B, K): the RPN's, which localization mode's boxes are scored
        with (None: 1 for every proposal, as for given proposals). ``config``: this call's
        post-processing settings (score threshold, NMS, detections per image) in place of the
        head's own, at inference only; the sampler, pooler and box coder stay the head's."""
        if config is not None and targets is not None:
            raise ValueError("RoIHeads: a per-call config is for inference, not for training")
        cfg = self.config if config is None else config
        if targets is not None:
            if not cfg.class_agnostic:  # class-agnostic: the labels are not used
                self._check_labels(targets)
            sample = self.sampler(proposals.detach(), proposals_valid, targets, generator)
            if not cfg.feature_gradient:
                features = [f.detach() for f in features]
            scores, deltas = self.box_head(self.pooler(features, sample.boxes))
            if cfg.class_agnostic:
                return None, localization_losses(scores, deltas, sample, cfg), sample
            return None, fast_rcnn_losses(scores, deltas, sample, cfg.smooth_l1_beta), sample
        scores, deltas = self.box_head(self.pooler(features, proposals))
        if cfg.class_agnostic:
            if proposal_scores is None:
                proposal_scores = torch.ones(proposals_valid.shape, device=proposals.device)
            detections = postprocess_localization(
                scores,
                deltas,
                proposals,
                proposals_valid,
                proposal_scores.detach(),
                image_sizes,
                cfg,
                self.coder,
            )
        else:
            detections = postprocess_detections(
                scores, deltas, proposals, proposals_valid, image_sizes, cfg, self.coder
            )
        return detections, {}, None
