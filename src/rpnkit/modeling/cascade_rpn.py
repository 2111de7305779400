"""The Cascade RPN (Vu et al., "Cascade RPN: Delving into High-Quality Region Proposal Network
with Adaptive Convolution", NeurIPS 2019): one square anchor per position, refined twice, each
stage's convolution sampling the features where that position's current box lies.

Shape glossary:
    B  : images in the batch (padded to one size)
    L  : feature levels;  A : anchor positions of an image over all levels (one anchor each),
         in the anchors' order (level, row, column)
    G  : padded GT boxes per image;  C : anchor positions in one chunk of the assignment
    KK : sampling points of the k x k kernel (9);  O = 2 * KK offset channels

The two stages, for the whole batch at once:

1. Stage 1 regresses each anchor (``scale`` x stride square, ``scale`` = 8) with a 3x3
   convolution whose sampling grid is the anchor. The paper's adaptive grid puts the kernel's
   points at the centres of a 3x3 partition of the box (``adaptive_offsets``): 8/3 cells apart
   for an anchor of 8 strides, the same for every position, which is a dilated convolution;
   stage 1 is that dilated convolution with the spacing rounded to whole cells (dilation 3, the
   paper's and mmdetection's). Its ReLU output is also stage 2's input (the paper's bridged
   feature). Stage 1 has no objectness.
2. The stage-1 boxes, detached (no gradient flows into the offsets or stage 2's references) and
   clipped to the image, set every position's offsets: stage 2's 3x3 kernel samples the centres
   of a 3x3 partition of that position's own box (``torchvision.ops.deform_conv2d``, run in
   float32). Stage 2 predicts objectness and deltas to the stage-1 box.
3. Proposals: rpnkit's ``select_proposals``, with the stage-1 boxes as each image's anchors,
   stage 2's box coder and its objectness as the score.

Training (``CascadeRPN.losses``):

- Stage 1, ``region_assign`` (the paper's region assigner): a GT box goes to the level whose
  anchor size is nearest its scale sqrt(wh) in log space; there, anchors whose centre lies in
  the box's central region (``center_ratio`` 0.2 of its width and height, on the level's grid)
  are positives, the rest of its ignore region (``ignore_ratio`` 0.5) is ignored, and so is the
  ignore region on the two neighbouring levels. A linear IoU loss (1 - IoU) between the decoded
  boxes and their GT, on every positive, weighted by ``stage1_loss_weight`` (10).
- Stage 2, ``match_boxes``: max-IoU matching with the stage-1 boxes as anchors (``RPNConfig``'s
  ``fg_iou_threshold`` 0.7 and ``bg_iou_threshold`` 0.7; a GT's best boxes also positive when
  their IoU reaches ``min_pos_iou`` 0.3), rpnkit's ``BalancedSampler`` (256, half positive),
  and ``rpn_losses``: binary cross-entropy, weighted by ``objectness_loss_weight`` (0.7), and
  the IoU loss of ``RPNConfig.box_loss`` weighted by ``box_loss_weight`` (10), both divided by
  the sampled count.

Configuration: ``RPNConfig`` describes the final stage as it does a vanilla RPN (anchors,
matching thresholds, sampling, box coder, box loss, proposals, ``allowed_border``);
``CascadeConfig`` adds stage 1 and what stage 2 does differently. Box coder weights are the
inverse of mmdetection's target stds: (0.1, 0.1, 0.5, 0.5) -> (10, 10, 2, 2) for stage 1 and
(0.05, 0.05, 0.1, 0.1) -> (20, 20, 10, 10) for stage 2.

Synchronisation: none beyond the vanilla RPN's. Index tables are cached per feature size,
both assignments are dense masked tensor operations over fixed (B, C, G) chunks (their loop
runs over chunks of anchors, sized from shapes alone), sampling is rpnkit's sync-free sampler,
and proposal selection is the vanilla path. The convolutions loop over levels, as ``RPNHead``.

Departures from the paper and from mmdetection's implementation, all deliberate:

- The region assignment runs for the whole batch at once instead of a loop over GT boxes; the
  loop's outcome is kept: where ignore regions of GT boxes on one level overlap, the last GT in
  the image's order decides (a positive if the anchor is in its central region, else ignored),
  and neighbouring-level ignores override positives. Crowd/ignore GT boxes (which mmdetection's
  assigner rejects) never make positives; stage 1 has no negatives, so nothing else changes.
- The level of a GT box is the one whose anchor size is nearest in log2 (ties go up): the
  paper's floor(log2(scale / (8 x stride_0)) + 0.5) when strides double, and defined for any.
- Regions are computed on each level's anchor grid, ``x / stride - offset``, so the anchor
  ``offset`` setting (0 by default, as mmdetection's) is honoured.
- A low-quality match in stage 2 takes the box's own best GT (rpnkit's ``Matcher`` rule, as
  py-faster-rcnn); mmdetection's loop gives it to the last GT whose best box it is. Crowd GT
  boxes never match, and background boxes mostly inside one are ignored, as in the vanilla RPN.
- Stage 1's IoU loss is divided by (anchor positions of the batch) / 200, mmdetection's
  normaliser for an unsampled stage (from Guided Anchoring).
- ``objectness_loss_weight`` defaults to 0.7 (mmdetection's Cascade RPN + Faster R-CNN
  setting); its RPN-only config uses 1.0.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import DeformConv2d, deform_conv2d

from ..config import check_choices, check_ranges
from .anchors import AnchorConfig, AnchorGenerator, LevelAnchors, visible_anchors
from .boxes import BoxCoder, box_area, clip_boxes, iou_loss
from .matching import BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, IGNORED, BalancedSampler, MatchResult
from .rpn import (
    ProposalConfig,
    RPNConfig,
    RPNOutput,
    check_rpn_inputs,
    module_proposals,
    rpn_losses,
)
from .structures import GroundTruth

KERNEL_SIZE = 3  # the adaptive convolutions' kernel
STAGE1_NORMALIZER = 200.0  # stage 1's loss: divided by (anchor positions in the batch) / 200


@dataclass(frozen=True)
class CascadeConfig:
    """What a Cascade RPN adds to the ``RPNConfig`` of its final stage.

    Stage 1: the region assignment's ``center_ratio`` (positives) and ``ignore_ratio``, its box
    coder weights (1 / mmdetection's target stds 0.1, 0.1, 0.5, 0.5) and its IoU-loss weight.
    Stage 2: ``min_pos_iou``, the least IoU at which a GT's best stage-1 boxes are positives
    (low-quality matches), and the objectness loss weight. ``adaptive_conv``: how stage 2's
    adaptive convolution is computed (the same convolution either way): ``"auto"``,
    torchvision's ``deform_conv2d`` on CUDA and ``sampled_conv2d`` elsewhere, or either one."""

    center_ratio: float = 0.2
    ignore_ratio: float = 0.5
    stage1_box_coder_weights: tuple[float, float, float, float] = (10.0, 10.0, 2.0, 2.0)
    stage1_loss_weight: float = 10.0
    min_pos_iou: float = 0.3
    objectness_loss_weight: float = 0.7
    adaptive_conv: Literal["auto", "deform_conv2d", "sampled"] = "auto"

    def __post_init__(self) -> None:
        check_choices(self, {"adaptive_conv": ("auto", "deform_conv2d", "sampled")})
        check_ranges(self, ("center_ratio", "ignore_ratio"), low=0, high=1, low_open=True)
        if self.center_ratio > self.ignore_ratio:
            raise ValueError(
                f"CascadeConfig.center_ratio must be at most ignore_ratio, got "
                f"{self.center_ratio!r} > {self.ignore_ratio!r}"
            )
        check_ranges(self, ("stage1_loss_weight", "objectness_loss_weight"), low=0)
        check_ranges(self, ("min_pos_iou",), low=0, high=1)
        weights = self.stage1_box_coder_weights
        if len(weights) != 4 or not all(isinstance(w, (int, float)) and w > 0 for w in weights):
            raise ValueError(
                "CascadeConfig.stage1_box_coder_weights must be 4 numbers > 0 (wx, wy, ww, wh), "
                f"got {weights!r}"
            )


def cascade_rpn_config(
    strides: Sequence[int],
    *,
    scale: float = 8.0,
    train_proposals: ProposalConfig | None = None,
    test_proposals: ProposalConfig | None = None,
) -> RPNConfig:
    """The final-stage ``RPNConfig`` of a Cascade RPN on levels of these strides: one square
    anchor of ``scale`` x stride per position, max-IoU matching at 0.7 / 0.7, linear IoU loss
    weighted 10 with stds (0.05, 0.05, 0.1, 0.1), NMS at 0.8 (mmdetection's test setting: 2,000
    per level before NMS; rpnkit keeps 1,000 per image after it, as its vanilla FPN presets)."""
    levels = tuple(LevelAnchors(int(s), (float(scale * s),), (1.0,)) for s in strides)
    return RPNConfig(
        anchors=AnchorConfig(levels=levels),
        fg_iou_threshold=0.7,
        bg_iou_threshold=0.7,
        box_loss="iou",
        box_loss_weight=10.0,
        box_coder_weights=(20.0, 20.0, 10.0, 10.0),
        train_proposals=train_proposals
        or ProposalConfig(pre_nms_top_n=2000, post_nms_top_n=2000, nms_threshold=0.8),
        test_proposals=test_proposals
        or ProposalConfig(pre_nms_top_n=2000, post_nms_top_n=1000, nms_threshold=0.8),
    )


def anchor_scale(config: RPNConfig) -> float:
    """The anchors' size in strides, checking that ``config`` fits a Cascade RPN: one square
    anchor per position on every level, the same size in strides on all of them (stage 1's
    dilated convolution is shared by the levels), a sigmoid classification head, the modern
    loss normalisation and an IoU or GIoU box loss."""
    scales = set()
    for i, level in enumerate(config.anchors.levels):
        square = level.shapes == () and level.ratios == (1.0,) and len(level.sizes) == 1
        if not square:
            raise ValueError(
                f"a Cascade RPN has one square anchor per position: anchor level {i} has sizes "
                f"{level.sizes}, ratios {level.ratios} and shapes {level.shapes} (use "
                "cascade_rpn_config)"
            )
        scales.add(level.sizes[0] / level.stride)
    if len(scales) != 1:
        raise ValueError(
            "a Cascade RPN's anchors must be the same number of strides wide on every level "
            f"(one dilated convolution serves them all), got {sorted(scales)}"
        )
    settings = {
        "objectness": ("sigmoid",),
        "objectness_mode": ("classification",),
        "loss_form": ("modern",),
        "box_loss": ("iou", "giou"),
    }
    for name, allowed in settings.items():
        if getattr(config, name) not in allowed:
            raise ValueError(
                f"a Cascade RPN needs RPNConfig.{name} in {allowed}, got {getattr(config, name)!r}"
            )
    return scales.pop()


def stage1_dilation(scale: float, kernel_size: int = KERNEL_SIZE) -> int:
    """Stage 1's dilation: the adaptive grid of an anchor ``scale`` strides wide spaces the
    kernel's points scale / k cells apart (8 / 3 for the paper's anchors), rounded to whole
    cells (3)."""
    return max(1, round(scale / kernel_size))


@dataclass(frozen=True)
class AnchorGrid:
    """Where each anchor position sits, (A,) each: ``level`` (int64), ``col`` and ``row`` on
    its level's grid, its level's ``stride``, ``width`` and ``height`` (in positions), and
    ``bounds`` (L - 1,): the log2 anchor sizes halfway between levels (a GT's level is how
    many of them its log2 scale reaches)."""

    level: Tensor
    col: Tensor
    row: Tensor
    stride: Tensor
    width: Tensor
    height: Tensor
    bounds: Tensor


@functools.lru_cache(maxsize=64)
def _anchor_grid(
    feature_sizes: tuple[tuple[int, int], ...], anchors: AnchorConfig, device: torch.device
) -> AnchorGrid:
    """Built once per feature size and device (a loop over levels here, never per batch)."""
    parts = []
    for level, ((h, w), lv) in enumerate(zip(feature_sizes, anchors.levels)):
        row, col = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")  # (H, W)
        n = h * w
        parts.append(
            (
                torch.full((n,), level),
                col.reshape(-1).float(),
                row.reshape(-1).float(),
                torch.full((n,), float(lv.stride)),
                torch.full((n,), float(w)),
                torch.full((n,), float(h)),
            )
        )
    log_sizes = [math.log2(lv.sizes[0]) for lv in anchors.levels]
    bounds = torch.tensor([(a + b) / 2 for a, b in itertools.pairwise(log_sizes)])
    columns = [torch.cat(c).to(device) for c in zip(*parts)]
    return AnchorGrid(*columns, bounds=bounds.to(device))


def anchor_grid(
    feature_sizes: Sequence[tuple[int, int]], anchors: AnchorConfig, device: torch.device
) -> AnchorGrid:
    """The cached ``AnchorGrid`` of these feature sizes (torch.compile traces the builder)."""
    build = _anchor_grid.__wrapped__ if torch.compiler.is_compiling() else _anchor_grid
    sizes = tuple((int(h), int(w)) for h, w in feature_sizes)
    return build(sizes, anchors, torch.device(device))


def adaptive_offsets(
    boxes: Tensor, grid: AnchorGrid, *, offset: float, kernel_size: int = KERNEL_SIZE
) -> Tensor:
    """(B, A, 4) xyxy boxes, one per anchor position -> (B, A, O) offsets of a k x k
    ``deform_conv2d`` (padding k // 2, dilation 1) at each position, placing its sampling points
    at the centres of a k x k partition of the position's box.

    ``offset``: the anchors' centre offset (a position's centre is (col + offset) x stride).
    Offsets are (dy, dx) per kernel point, points row-major, as ``deform_conv2d`` reads them.
    """
    k = kernel_size
    stride = grid.stride  # (A,)
    cx = (boxes[..., 0] + boxes[..., 2]) / (2 * stride) - offset  # (B, A), in positions
    cy = (boxes[..., 1] + boxes[..., 3]) / (2 * stride) - offset
    w = (boxes[..., 2] - boxes[..., 0]) / stride  # (B, A)
    h = (boxes[..., 3] - boxes[..., 1]) / stride
    taps = torch.arange(k, device=boxes.device, dtype=boxes.dtype) - (k // 2)  # (k,): -1, 0, 1
    ky, kx = taps.repeat_interleave(k), taps.repeat(k)  # (KK,) each, row-major
    # point n samples (cy + ky h / k, cx + kx w / k); deform_conv2d's own is (row + ky, col + kx)
    dy = cy[..., None] + ky * (h[..., None] / k) - grid.row[:, None] - ky  # (B, A, KK)
    dx = cx[..., None] + kx * (w[..., None] / k) - grid.col[:, None] - kx
    return torch.stack((dy, dx), dim=-1).flatten(-2)  # (B, A, KK, 2) -> (B, A, O)


def _flatten(maps: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H*W, C): one anchor per position, in the anchors' order."""
    b, c = maps.shape[:2]
    return maps.permute(0, 2, 3, 1).reshape(b, -1, c)  # (B, H, W, C) -> (B, H*W, C)


def sampled_conv2d(
    x: Tensor, offsets: Tensor, weight: Tensor, bias: Tensor, *, padding: tuple[int, int]
) -> Tensor:
    """``deform_conv2d(x, offsets, weight, bias, padding=padding)`` (stride 1, dilation 1, no
    mask) computed as bilinear sampling of the k x k points of every position
    (``grid_sample``, zeros outside the image, as deform_conv2d reads them) and one matmul
    with the weight. (B, C, H, W), (B, 2 k k, H, W) (dy, dx) per point, row-major, (O, C, k, k),
    (O,) -> (B, O, H, W). Holds the (B, C, k k, H, W) samples, as deform_conv2d's columns."""
    b, c, h, w = x.shape
    out_channels, _, kh, kw = weight.shape
    ky, kx = torch.meshgrid(
        torch.arange(kh, device=x.device, dtype=x.dtype) - padding[0],
        torch.arange(kw, device=x.device, dtype=x.dtype) - padding[1],
        indexing="ij",
    )
    rows = torch.arange(h, device=x.device, dtype=x.dtype).view(1, 1, h, 1)
    cols = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, 1, w)
    shift = offsets.view(b, kh * kw, 2, h, w)
    y = rows + ky.reshape(1, -1, 1, 1) + shift[:, :, 0]  # (B, k k, H, W) sampled rows
    xs = cols + kx.reshape(1, -1, 1, 1) + shift[:, :, 1]
    # pixel centres at (i + 0.5) * 2 / size - 1 (align_corners=False): defined for size 1 too
    grid = torch.stack(((xs + 0.5) * 2 / w - 1, (y + 0.5) * 2 / h - 1), dim=-1)
    sampled = F.grid_sample(
        x, grid.view(b, kh * kw * h, w, 2), mode="bilinear", align_corners=False
    ).view(b, c * kh * kw, h * w)  # channel-major, then kernel point: weight's own order
    out = torch.matmul(weight.reshape(out_channels, c * kh * kw), sampled)  # (B, O, H*W)
    return out.view(b, out_channels, h, w) + bias.view(1, -1, 1, 1)


class CascadeRPNHead(nn.Module):
    """Both stages' layers, shared by the levels: stage 1, a dilated 3x3 conv + ReLU (the
    bridged feature) and a 1x1 conv for deltas; stage 2, an adaptive 3x3 conv (deform_conv2d
    with given offsets) + ReLU and 1x1 convs for the objectness logit and deltas."""

    def __init__(
        self, *, in_channels: int, num_levels: int, dilation: int, adaptive_conv: str = "auto"
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.adaptive_conv_mode = adaptive_conv
        self.num_anchors_per_level = [1] * num_levels
        c, k = in_channels, KERNEL_SIZE
        self.stage1_conv = nn.Conv2d(c, c, k, padding=dilation * (k // 2), dilation=dilation)
        self.stage1_deltas = nn.Conv2d(c, 4, 1)
        self.stage2_conv = DeformConv2d(c, c, k, padding=k // 2)
        self.stage2_logits = nn.Conv2d(c, 1, 1)
        self.stage2_deltas = nn.Conv2d(c, 4, 1)
        for layer in (
            self.stage1_conv,
            self.stage1_deltas,
            self.stage2_conv,
            self.stage2_logits,
            self.stage2_deltas,
        ):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.constant_(layer.bias, 0)

    def stage1(self, features: Sequence[Tensor]) -> tuple[list[Tensor], Tensor]:
        """Features [(B, C, H_l, W_l)] -> bridged features (the same shapes), (B, A, 4) deltas."""
        bridged, deltas = [], []
        for feature in features:
            t = F.relu(self.stage1_conv(feature))
            bridged.append(t)
            deltas.append(_flatten(self.stage1_deltas(t)))
        return bridged, torch.cat(deltas, dim=1)

    def stage2(
        self, bridged: Sequence[Tensor], offsets: Tensor, *, mode: str | None = None
    ) -> tuple[Tensor, Tensor]:
        """Bridged features [(B, C, H_l, W_l)], (B, A, O) offsets -> (B, A) objectness logits,
        (B, A, 4) deltas. ``mode``: the adaptive convolution's, by default the head's own
        (``CascadeConfig.adaptive_conv``); the export passes "sampled"."""
        logits, deltas = [], []
        per_level = offsets.split([t.shape[-2] * t.shape[-1] for t in bridged], dim=1)
        for t, level_offsets in zip(bridged, per_level):
            b, _, h, w = t.shape
            level_offsets = level_offsets.transpose(1, 2).reshape(b, -1, h, w)  # -> (B, O, H, W)
            x = F.relu(self.adaptive_conv(t, level_offsets, mode=mode))
            logits.append(_flatten(self.stage2_logits(x))[..., 0])  # (B, H*W)
            deltas.append(_flatten(self.stage2_deltas(x)))  # (B, H*W, 4)
        return torch.cat(logits, dim=1), torch.cat(deltas, dim=1)

    def adaptive_conv(self, x: Tensor, offsets: Tensor, *, mode: str | None = None) -> Tensor:
        """Stage 2's 3x3 conv at (B, O, H, W) offsets, in float32 under any autocast: offsets
        of tens of positions need more than bf16's 8 bits. The output keeps ``x``'s dtype.

        ``CascadeConfig.adaptive_conv`` "auto": on CUDA torchvision's ``deform_conv2d`` (its
        cost measured on the H200); elsewhere the same convolution as bilinear sampling + one
        matmul (``sampled_conv2d``), equal to it up to float rounding and 4.3x faster forward +
        backward on a 2-core CPU, where ``deform_conv2d``'s backward was three quarters of a
        training step (bench/bench_cascade_step.py). ``mode`` overrides the head's own."""
        conv = self.stage2_conv
        mode = self.adaptive_conv_mode if mode is None else mode
        sampled = mode == "sampled" or (mode == "auto" and not x.is_cuda)
        with torch.autocast(x.device.type, enabled=False):
            adaptive = sampled_conv2d if sampled else deform_conv2d
            out = adaptive(
                x.float(),
                offsets.float(),
                conv.weight.float(),
                conv.bias.float(),
                padding=conv.padding,
            )
        return out.to(x.dtype)


def _region_bounds(gt: Tensor, stride: Tensor, size: Tensor, ratio: float, offset: float):
    """(B, 1, G) GT coordinates x1, x2 (or y1, y2) in pixels, (1, C, 1) strides and level sizes
    -> (B, C, G) first and last grid positions of the region keeping ``ratio`` of each side
    (mmdetection's ``calc_region``: rounded, clamped to the level)."""
    f1, f2 = gt[0] / stride - offset, gt[1] / stride - offset
    low = torch.round((1 - ratio) * f1 + ratio * f2).clamp(min=0)
    high = torch.round(ratio * f1 + (1 - ratio) * f2).clamp(min=0)
    return torch.minimum(low, size), torch.minimum(high, size)


def _in_region(grid_slice, gt_xyxy, ratio: float, offset: float) -> Tensor:
    """(B, C, G): the anchor's centre lies in the GT's region of ``ratio`` on its level's grid."""
    col, row, stride, width, height = grid_slice  # (1, C, 1) each
    x1, x2 = _region_bounds(gt_xyxy[0::2], stride, width, ratio, offset)
    y1, y2 = _region_bounds(gt_xyxy[1::2], stride, height, ratio, offset)
    return (col >= x1) & (col <= x2) & (row >= y1) & (row <= y2)


def region_assign(
    grid: AnchorGrid,
    gt_boxes: Tensor,
    real: Tensor,
    *,
    center_ratio: float,
    ignore_ratio: float,
    offset: float = 0.0,
    chunk_elements: int = 1 << 22,
) -> Tensor:
    """The region assigner of stage 1 (see the module docstring) for the whole batch.

    (B, G, 4) xyxy GT boxes, (B, G) real (matchable) -> (B, A) ``matched_idxs``: a GT index
    (positive), ``IGNORED`` or ``BELOW_LOW_THRESHOLD`` (neither: stage 1 does not use them)."""
    gt_boxes, real, _ = _at_least_one_gt(gt_boxes, real, real)
    num_images, num_gt = real.shape
    num_positions = grid.level.shape[0]
    scale = box_area(gt_boxes).clamp(min=0).sqrt()  # (B, G)
    gt_level = torch.bucketize(torch.log2(scale), grid.bounds, right=True)  # (B, G)
    gt_xyxy = [gt_boxes[..., i][:, None, :] for i in range(4)]  # 4 x (B, 1, G)
    gt_order = torch.arange(num_gt, device=gt_boxes.device)  # (G,)
    r_center, r_ignore = (1 - center_ratio) / 2, (1 - ignore_ratio) / 2
    chunk = max(1, chunk_elements // max(1, num_images * num_gt))
    out = []
    for start in range(0, num_positions, chunk):  # chunks of positions, sized from shapes
        part = slice(start, start + chunk)
        cols = (grid.col, grid.row, grid.stride, grid.width, grid.height)
        grid_slice = tuple(t[part][None, :, None] for t in cols)  # (1, C, 1) each
        gap = grid.level[part][None, :, None] - gt_level[:, None, :]  # (B, C, G) level distance
        in_ignore = _in_region(grid_slice, gt_xyxy, r_ignore, offset) & real[:, None, :]
        # the last GT whose ignore region holds the anchor on its own level decides
        decider = torch.where(in_ignore & (gap == 0), gt_order, -1).amax(-1)  # (B, C)
        in_center = _in_region(grid_slice, gt_xyxy, r_center, offset)
        positive = in_center.gather(-1, decider.clamp(min=0)[..., None])[..., 0] & (decider >= 0)
        idx = torch.where(decider >= 0, IGNORED, BELOW_LOW_THRESHOLD)
        idx = torch.where(positive, decider, idx)
        neighbour = (in_ignore & (gap.abs() == 1)).any(-1)  # the neighbouring levels' ignores
        out.append(idx.masked_fill(neighbour, IGNORED))
    return torch.cat(out, dim=1)


def _at_least_one_gt(gt_boxes: Tensor, real: Tensor, crowd: Tensor):
    """(B, G, 4) boxes and (B, G) masks, with G = 0 padded to one slot that is neither real nor
    crowd: the reductions over G then need no special case."""
    if gt_boxes.shape[1] > 0:
        return gt_boxes, real, crowd
    pad = real.new_zeros((real.shape[0], 1))
    return gt_boxes.new_zeros((gt_boxes.shape[0], 1, 4)), pad, pad


def _overlaps(boxes: Tensor, gt_boxes: Tensor) -> tuple[Tensor, Tensor]:
    """(B, C, 4) boxes of each image, (B, G, 4) GT, xyxy -> (B, C, G) IoU and intersection over
    the box's own area. Per axis: no (B, C, G, 2) temporaries."""
    b, g = boxes[:, :, None, :], gt_boxes[:, None, :, :]  # (B, C, 1, 4), (B, 1, G, 4)
    iw = (torch.minimum(b[..., 2], g[..., 2]) - torch.maximum(b[..., 0], g[..., 0])).clamp(min=0)
    ih = (torch.minimum(b[..., 3], g[..., 3]) - torch.maximum(b[..., 1], g[..., 1])).clamp(min=0)
    inter = iw * ih  # (B, C, G)
    area = box_area(boxes)[:, :, None]  # (B, C, 1)
    tiny = torch.finfo(inter.dtype).tiny
    union = area + box_area(gt_boxes)[:, None, :] - inter
    return inter / union.clamp(min=tiny), inter / area.clamp(min=tiny)


def match_boxes(
    boxes: Tensor,
    gt: GroundTruth,
    *,
    config: RPNConfig,
    min_pos_iou: float,
    visible: Tensor | None = None,
) -> MatchResult:
    """Stage 2's max-IoU matching, with (B, A, 4) xyxy boxes of each image as the anchors.

    ``config``'s thresholds: a box is positive at IoU >= ``fg_iou_threshold`` with its best real
    GT, background below ``bg_iou_threshold``; with ``allow_low_quality_matches`` every box at a
    GT's maximum IoU (ties count) is positive too, when that maximum is >= ``min_pos_iou`` and
    > 0, matched to its own best GT. Background boxes with at least ``crowd_ioa_threshold`` of
    their area in a crowd region, and boxes not ``visible`` (B, A), are ``IGNORED``. IoU is
    computed in chunks of ``match_chunk_elements`` and recomputed, not kept, for the ties."""
    gt_boxes, real, crowd = _at_least_one_gt(gt.boxes, gt.mask & ~gt.ignore, gt.mask & gt.ignore)
    num_images, num_boxes = boxes.shape[:2]
    num_gt = real.shape[1]
    chunk = max(1, config.match_chunk_elements // max(1, num_images * num_gt))
    parts = [slice(s, s + chunk) for s in range(0, num_boxes, chunk)]  # sized from shapes

    def masked_iou(part: slice) -> tuple[Tensor, Tensor]:
        iou, ioa = _overlaps(boxes[:, part], gt_boxes)  # (B, C, G) each
        return iou.masked_fill(~real[:, None, :], -1.0), ioa  # boxes that cannot match: -1

    # 1. Each box's best real GT and whether it lies in a crowd; each GT's best IoU.
    best_iou, best_gt, in_crowd = [], [], []
    gt_best = torch.full(real.shape, -1.0, device=boxes.device, dtype=boxes.dtype)  # (B, G)
    for part in parts:
        iou, ioa = masked_iou(part)
        value, index = iou.max(dim=-1)
        best_iou.append(value)
        best_gt.append(index)
        in_crowd.append(((ioa >= config.crowd_ioa_threshold) & crowd[:, None, :]).any(-1))
        gt_best = torch.maximum(gt_best, iou.amax(dim=1))
    best_iou, best_gt, in_crowd = (torch.cat(t, dim=1) for t in (best_iou, best_gt, in_crowd))

    # 2. Threshold into states (masks, not boolean indexing: no GPU->CPU sync).
    matched = best_gt.masked_fill(best_iou < config.fg_iou_threshold, BETWEEN_THRESHOLDS)
    matched.masked_fill_(best_iou < config.bg_iou_threshold, BELOW_LOW_THRESHOLD)

    # 3. Low-quality matches: every box at a GT's maximum (ties count) takes its own best GT.
    if config.allow_low_quality_matches:
        eligible = (gt_best >= min_pos_iou) & (gt_best > 0)  # (B, G)
        target = gt_best.masked_fill(~eligible, float("inf"))[:, None, :]  # (B, 1, G)
        at_max = torch.cat([(masked_iou(p)[0] == target).any(-1) for p in parts], dim=1)
        matched = torch.where(at_max, best_gt, matched)

    # 4. Crowd regions turn background into ignored; so does the border.
    matched.masked_fill_((matched == BELOW_LOW_THRESHOLD) & in_crowd, IGNORED)
    if visible is not None:
        matched.masked_fill_(~visible, IGNORED)
    return MatchResult(matched_idxs=matched, matched_iou=best_iou.clamp(min=0))


class CascadeRPN(nn.Module):
    """Anchors + both stages + their assignments and losses + proposals, for a whole padded
    batch at once. Called as ``RegionProposalNetwork``, returning an ``RPNOutput``: its
    ``pred_objectness`` and ``pred_deltas`` are stage 2's, ``refined_anchors`` the stage-1
    boxes they refine, ``match`` / ``sample`` stage 2's and ``stage1_match`` stage 1's."""

    def __init__(self, *, in_channels: int, config: RPNConfig, cascade: CascadeConfig) -> None:
        super().__init__()
        scale = anchor_scale(config)
        self.config = config
        self.cascade = cascade
        self.anchor_generator = AnchorGenerator(config.anchors)
        self.head = CascadeRPNHead(
            in_channels=in_channels,
            num_levels=len(config.anchors.levels),
            dilation=stage1_dilation(scale),
            adaptive_conv=cascade.adaptive_conv,
        )
        self.stage1_box_coder = BoxCoder(cascade.stage1_box_coder_weights)
        self.box_coder = BoxCoder(config.box_coder_weights)
        self.sampler = BalancedSampler(config.batch_size_per_image, config.positive_fraction)

    def forward(
        self,
        features: Sequence[Tensor],
        image_sizes: Tensor,
        targets: GroundTruth | None = None,
        *,
        image_scales: Tensor | None = None,
        proposal_config: ProposalConfig | None = None,
    ) -> RPNOutput:
        """Features [(B, C, H_l, W_l)], (B, 2) image (height, width) -> RPNOutput, with the
        losses when ``targets`` are given; as ``RegionProposalNetwork.forward``."""
        check_rpn_inputs(
            features, image_sizes, anchors=self.config.anchors, in_channels=self.head.in_channels
        )
        feature_sizes = [(f.shape[-2], f.shape[-1]) for f in features]
        device = features[0].device
        anchors = self.anchor_generator(feature_sizes, device=device, dtype=torch.float32)
        grid = anchor_grid(feature_sizes, self.config.anchors, device)

        # 1. Stage 1: every anchor regressed; the boxes keep their gradient for stage 1's loss.
        bridged, stage1_deltas = self.head.stage1(features)
        stage1_boxes = self.stage1_box_coder.decode(stage1_deltas, anchors)  # (B, A, 4)
        # the refined anchors are detached: no gradient flows into the offsets or references
        refined = clip_boxes(stage1_boxes.detach(), image_sizes)

        # 2. Stage 2: the adaptive convolution samples each position's own refined box.
        offsets = adaptive_offsets(refined, grid, offset=self.config.anchors.offset)
        pred_objectness, pred_deltas = self.head.stage2(bridged, offsets)

        # 3. Proposals: the vanilla batched selection, with per-image anchors.
        proposals = module_proposals(
            self, pred_objectness, pred_deltas, refined, feature_sizes, image_sizes,
            proposal_config, image_scales,
        )  # fmt: skip
        output = RPNOutput(proposals, {}, pred_objectness, pred_deltas, anchors, feature_sizes)
        output.refined_anchors = refined
        if targets is not None:
            output.losses = self.losses(output, stage1_boxes, grid, image_sizes, targets)
        return output

    def losses(
        self,
        output: RPNOutput,
        stage1_boxes: Tensor,
        grid: AnchorGrid,
        image_sizes: Tensor,
        targets: GroundTruth,
    ) -> dict[str, Tensor]:
        """Both stages' assignments (stored in ``output``) and losses.

        Unvalidated ground truth is checked first: on a GPU that is the step's one GPU->CPU
        sync, which ``collate`` avoids by validating on the CPU."""
        if not targets.validated:
            targets = targets.check(image_sizes)
        visible = visible_anchors(output.anchors, image_sizes, self.config.allowed_border)

        # 1. Stage 1: region assignment, IoU loss on every positive.
        output.stage1_match = self.assign_anchors(output.anchors, grid, targets, visible)
        loss_stage1 = self.stage1_loss(stage1_boxes, output.anchors, targets, output.stage1_match)

        # 2. Stage 2: max-IoU matching on the refined boxes, sampled, the vanilla losses.
        output.match = match_boxes(
            output.refined_anchors,
            targets,
            config=self.config,
            min_pos_iou=self.cascade.min_pos_iou,
            visible=visible,
        )
        output.sample = self.sampler(output.match.labels())
        stage2 = rpn_losses(
            output.pred_objectness,
            output.pred_deltas,
            output.refined_anchors,
            targets.boxes,
            output.match,
            output.sample,
            config=self.config,
            num_positions=output.anchors.shape[0],
            box_coder=self.box_coder,
        )
        return {
            "loss_stage1_box": loss_stage1,
            "loss_objectness": self.cascade.objectness_loss_weight * stage2["loss_objectness"],
            "loss_rpn_box": stage2["loss_rpn_box"],
        }

    def assign_anchors(
        self, anchors: Tensor, grid: AnchorGrid, targets: GroundTruth, visible: Tensor
    ) -> MatchResult:
        """Stage 1's region assignment of the (A, 4) anchors; ``matched_iou`` is each positive's
        IoU with its GT (0 elsewhere)."""
        matched = region_assign(
            grid,
            targets.boxes,
            targets.mask & ~targets.ignore,  # crowd regions never make positives
            center_ratio=self.cascade.center_ratio,
            ignore_ratio=self.cascade.ignore_ratio,
            offset=self.config.anchors.offset,
            chunk_elements=self.config.match_chunk_elements,
        ).masked_fill(~visible, IGNORED)
        gt = _matched_gt(targets.boxes, matched)  # (B, A, 4)
        iou = 1 - iou_loss(anchors[None].expand_as(gt), gt)
        return MatchResult(matched_idxs=matched, matched_iou=torch.where(matched >= 0, iou, 0.0))

    def stage1_loss(
        self, stage1_boxes: Tensor, anchors: Tensor, targets: GroundTruth, match: MatchResult
    ) -> Tensor:
        """Linear IoU loss of the (B, A, 4) decoded stage-1 boxes on every positive, weighted
        and divided by the batch's anchor positions / 200 (mmdetection's)."""
        positive = match.matched_idxs >= 0  # (B, A)
        gt = _matched_gt(targets.boxes, match.matched_idxs)  # (B, A, 4)
        # other anchors regress onto themselves: finite values, masked out below
        gt = torch.where(positive[..., None], gt, anchors[None])
        per_box = iou_loss(stage1_boxes.float(), gt)  # (B, A)
        total = torch.where(positive, per_box, 0.0).sum()
        norm = positive.numel() / STAGE1_NORMALIZER  # a Python number: no sync
        return self.cascade.stage1_loss_weight * total / norm


def _matched_gt(gt_boxes: Tensor, matched_idxs: Tensor) -> Tensor:
    """(B, G, 4) GT, (B, A) matched indices -> (B, A, 4) each anchor's GT box (GT 0 where the
    index is a negative state)."""
    index = matched_idxs.clamp(min=0)[..., None].expand(-1, -1, 4)  # (B, A, 4)
    return gt_boxes.gather(1, index)
