"""The second stage (Fast R-CNN head): RoI sampling, RoI pooling over pyramid levels, the box
head, class-specific regression, losses and detection post-processing, batched over images.

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

from .boxes import BoxCoder, box_iou, clip_boxes
from .matching import IGNORE, NEGATIVE, POSITIVE, BalancedSampler, SampledAnchors
from .nms import nms_keep
from .pooling import pool_by_level, pool_level, pool_sorted_by_level
from .rpn import _check_box_coder_weights, _check_choices, _check_ranges  # config validation
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

    def __post_init__(self) -> None:
        _check_ranges(self, ("num_classes",), low=2, integer=True)
        counts = ("rois_per_image", "pooled_size", "representation_size", "detections_per_image")
        _check_ranges(self, (*counts, "nms_candidates"), low=1, integer=True)
        _check_ranges(self, ("sampling_ratio", "canonical_level"), low=0, integer=True)
        _check_ranges(self, ("positive_fraction", "nms_threshold"), low=0, high=1, low_open=True)
        _check_ranges(self, ("fg_iou", "score_threshold"), low=0, high=1)
        _check_ranges(self, ("smooth_l1_beta", "min_size"), low=0)
        _check_ranges(self, ("canonical_scale",), low=0, low_open=True)
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
        _check_choices(self, {"pooler": ("align", "pool"), "head": ("mlp", "vgg")})

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


@dataclass
class SampledRoIs:
    """``boxes`` (B, R, 4) xyxy, ``valid`` (B, R), ``labels`` (B, R) int64 (0 = background),
    ``targets`` (B, R, 4) regression targets to the matched GT (meaningful where labels > 0)."""

    boxes: Tensor
    valid: Tensor
    labels: Tensor
    targets: Tensor


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
        labels = torch.where(state.gather(1, index) == POSITIVE, labels, 0) * valid
        gt_boxes = targets.boxes.gather(1, gt_index[..., None].expand(-1, -1, 4))
        fg = labels > 0
        # only foreground RoIs have targets; elsewhere zeros (a degenerate unused box would
        # encode to NaN, and NaN times a zero mask still poisons the gradient)
        deltas = self.coder.encode(gt_boxes, boxes)
        return SampledRoIs(boxes, valid, labels, torch.where(fg[..., None], deltas, 0.0))


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
        # the step that reads slice lengths on the host; only rpnkit.export passes another
        # (its graph twin, rpnkit/export/graph_ops.py)
        pool_levels: Callable[..., Tensor] = pool_sorted_by_level,
    ) -> Tensor:
        """Features [(B, ch, H_l, W_l)] for the pooled levels, (B, R, 4) boxes ->
        (B*R, ch, S, S)."""
        num_images, r = boxes.shape[:2]
        flat = boxes.reshape(-1, 4).float()
        batch_index = torch.arange(num_images, device=boxes.device).repeat_interleave(r)
        rois = torch.cat([batch_index[:, None].to(flat.dtype), flat], dim=1)  # (B*R, 5)
        if len(features) == 1:
            return self._pool(features[0], rois, self.strides[0])
        levels = self.levels(flat)
        if torch.compiler.is_compiling() and pool_levels is pool_sorted_by_level:
            # one opaque op instead of a graph break at the slice lengths read on the host
            c = self.config
            settings = (c.pooled_size, c.sampling_ratio, c.pooler == "align")
            return pool_by_level(list(features), rois, levels, self.strides, *settings)
        return pool_levels(features, self.strides, rois, levels, self._pool)

    def _pool(self, feature: Tensor, rois: Tensor, stride: int) -> Tensor:
        c = self.config
        align = c.pooler == "align"
        return pool_level(
            feature, rois, stride, size=c.pooled_size, sampling_ratio=c.sampling_ratio, align=align
        )


class BoxHead(nn.Module):
    """Two fully connected layers (1024-wide MLP, or VGG's fc6/fc7 at 4096), then the class
    scores (C) and class-specific box deltas (4 C)."""

    def __init__(self, *, in_channels: int, config: RoIHeadConfig) -> None:
        super().__init__()
        size, width = config.pooled_size, config.representation_size
        self.fc6 = nn.Linear(in_channels * size * size, width)
        self.fc7 = nn.Linear(width, width)
        self.dropout = config.head == "vgg"  # VGG's fc6/fc7 were trained with dropout
        self.cls_score = nn.Linear(width, config.num_classes)
        self.bbox_pred = nn.Linear(width, config.num_classes * 4)

    def forward(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        """(N, ch, S, S) -> (N, C) logits, (N, 4 C) deltas."""
        x = F.relu(self.fc6(pooled.flatten(1)))
        if self.dropout:
            x = F.dropout(x, 0.5, self.training)
        x = F.relu(self.fc7(x))
        if self.dropout:
            x = F.dropout(x, 0.5, self.training)
        return self.cls_score(x), self.bbox_pred(x)


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
    # the best candidates of each image, sorted by score (failing ones rank last)
    n = min(config.nms_candidates, scores.shape[1])
    top_scores, top_idx = scores.masked_fill(~passing, -1.0).topk(n, dim=1)  # (B, n)
    top_valid = passing.gather(1, top_idx)
    top_boxes = decoded.gather(1, top_idx[..., None].expand(-1, -1, 4))
    top_labels = top_idx % (c - 1) + 1  # class ids 1..C-1
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
    ) -> tuple[Detections | None, dict[str, Tensor], SampledRoIs | None]:
        """Features of the pooled levels, (B, K, 4) proposals (detached), (B, K) validity."""
        if targets is not None:
            self._check_labels(targets)
            sample = self.sampler(proposals.detach(), proposals_valid, targets, generator)
            if not self.config.feature_gradient:
                features = [f.detach() for f in features]
            logits, deltas = self.box_head(self.pooler(features, sample.boxes))
            losses = fast_rcnn_losses(logits, deltas, sample, self.config.smooth_l1_beta)
            return None, losses, sample
        logits, deltas = self.box_head(self.pooler(features, proposals))
        detections = postprocess_detections(
            logits, deltas, proposals, proposals_valid, image_sizes, self.config, self.coder
        )
        return detections, {}, None
