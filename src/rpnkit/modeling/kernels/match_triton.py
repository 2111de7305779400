"""Anchor matching in two Triton passes, without ever building the (B, A, G) IoU matrix.

1. ``_match_pass1``: per (image, block of anchors), loop over the GT boxes one by one: each
   anchor's best IoU with a real GT and its index (the first on ties, as ``torch.max``), whether
   it lies inside a crowd region (intersection over anchor area), and each GT's best IoU within
   the block. One ``amax`` over the blocks then gives each GT's best IoU over all anchors
   (atomics on the few GT addresses serialised thousands of blocks: 1 ms instead of 30 us).
2. ``_match_pass2``: the same tiles again; an anchor is a low-quality match if its IoU with some
   real GT equals that GT's best (> 0). Ties count.

IoU is computed as ``rpnkit.modeling.boxes.box_iou`` computes it, in float32, with floating-point
contraction disabled so that the values equal the PyTorch path's bit for bit.

Shapes: anchors (A, 4); gt (B, G, 4) xyxy; real, crowd (B, G) bool.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

BLOCK_A = 256  # anchors per program (bench/sweep_match.py)
NUM_WARPS = 4


@triton.jit
def _load_gt(gt_ptr, flags_ptr, idx):
    """Scalars of GT box ``idx`` (flat index into (B, G)): x1, y1, x2, y2 and its flag."""
    gx1 = tl.load(gt_ptr + idx * 4 + 0)
    gy1 = tl.load(gt_ptr + idx * 4 + 1)
    gx2 = tl.load(gt_ptr + idx * 4 + 2)
    gy2 = tl.load(gt_ptr + idx * 4 + 3)
    return gx1, gy1, gx2, gy2, tl.load(flags_ptr + idx) != 0


@triton.jit
def _iou_with(ax1, ay1, ax2, ay2, area_a, gx1, gy1, gx2, gy2):
    """(BA,) anchors against one GT box -> (BA,) IoU and intersection, as box_iou computes."""
    iw = tl.maximum(tl.minimum(ax2, gx2) - tl.maximum(ax1, gx1), 0.0)
    ih = tl.maximum(tl.minimum(ay2, gy2) - tl.maximum(ay1, gy1), 0.0)
    inter = iw * ih
    union = area_a + (gx2 - gx1) * (gy2 - gy1) - inter
    return tl.math.div_rn(inter, tl.maximum(union, 1.1754943508222875e-38)), inter


@triton.jit
def _load_anchors(anchors_ptr, offs, ok):
    ax1 = tl.load(anchors_ptr + offs * 4 + 0, mask=ok, other=0.0)
    ay1 = tl.load(anchors_ptr + offs * 4 + 1, mask=ok, other=0.0)
    ax2 = tl.load(anchors_ptr + offs * 4 + 2, mask=ok, other=0.0)
    ay2 = tl.load(anchors_ptr + offs * 4 + 3, mask=ok, other=0.0)
    return ax1, ay1, ax2, ay2, (ax2 - ax1) * (ay2 - ay1)


# Sizes are not specialised: Triton would otherwise compile a variant for each size's
# divisibility by 16 (or equality to 1), and images of many shapes would stall training on each
@triton.jit(do_not_specialize=["num_anchors", "num_gt", "num_blocks"])
def _match_pass1(
    anchors_ptr,
    gt_ptr,
    real_ptr,
    crowd_ptr,
    best_iou_ptr,
    best_gt_ptr,
    in_crowd_ptr,
    block_best_ptr,
    num_anchors,
    num_gt,
    num_blocks,
    crowd_threshold,
    BA: tl.constexpr,
):
    # each thread owns whole anchors and walks the GT boxes one by one: the per-anchor
    # maximum stays in registers; only the per-GT maximum needs a block reduction
    pid = tl.program_id(0)
    b = tl.program_id(1)
    offs = pid * BA + tl.arange(0, BA)
    a_ok = offs < num_anchors
    ax1, ay1, ax2, ay2, area_a = _load_anchors(anchors_ptr, offs, a_ok)
    best = tl.full([BA], -1.0, tl.float32)
    best_idx = tl.zeros([BA], tl.int32)
    crowd_hit = tl.zeros([BA], tl.int1)
    for g in range(0, num_gt):
        gx1, gy1, gx2, gy2, real = _load_gt(gt_ptr, real_ptr, b * num_gt + g)
        crowd = tl.load(crowd_ptr + b * num_gt + g) != 0
        iou, inter = _iou_with(ax1, ay1, ax2, ay2, area_a, gx1, gy1, gx2, gy2)
        iou = tl.where(real, iou, -1.0)
        better = iou > best  # strictly: the first GT wins ties, as torch.max
        best_idx = tl.where(better, g, best_idx)
        best = tl.where(better, iou, best)
        col_best = tl.max(tl.where(a_ok, iou, -1.0), axis=0)
        tl.store(block_best_ptr + (b * num_blocks + pid) * num_gt + g, col_best)
        # inside a crowd: intersection >= threshold x anchor area (no division)
        crowd_hit = crowd_hit | tl.where(crowd, inter >= crowd_threshold * area_a, False)
    out = b * num_anchors + offs
    tl.store(best_iou_ptr + out, tl.maximum(best, 0.0), mask=a_ok)
    tl.store(best_gt_ptr + out, best_idx.to(tl.int64), mask=a_ok)
    tl.store(in_crowd_ptr + out, crowd_hit, mask=a_ok)


@triton.jit(do_not_specialize=["num_anchors", "num_gt"])
def _match_pass2(
    anchors_ptr,
    gt_ptr,
    real_ptr,
    gt_best_ptr,
    low_quality_ptr,
    num_anchors,
    num_gt,
    BA: tl.constexpr,
):
    pid = tl.program_id(0)
    b = tl.program_id(1)
    offs = pid * BA + tl.arange(0, BA)
    a_ok = offs < num_anchors
    ax1, ay1, ax2, ay2, area_a = _load_anchors(anchors_ptr, offs, a_ok)
    found = tl.zeros([BA], tl.int1)
    for g in range(0, num_gt):
        gx1, gy1, gx2, gy2, real = _load_gt(gt_ptr, real_ptr, b * num_gt + g)
        gt_best = tl.load(gt_best_ptr + b * num_gt + g)
        iou, _ = _iou_with(ax1, ay1, ax2, ay2, area_a, gx1, gy1, gx2, gy2)
        found = found | tl.where(real & (gt_best > 0.0), iou == gt_best, False)
    tl.store(low_quality_ptr + b * num_anchors + offs, found, mask=a_ok)


def match_triton(
    anchors: Tensor,
    gt_boxes: Tensor,
    real: Tensor,
    crowd: Tensor,
    crowd_threshold: float,
    *,
    wrap=None,
    block_a: int = BLOCK_A,
    num_warps: int = NUM_WARPS,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """-> best IoU (B, A), best GT index (B, A), in-crowd (B, A) bool, low-quality (B, A) bool."""
    num_anchors = anchors.shape[0]
    num_images, num_gt = real.shape
    device = anchors.device
    anchors = anchors.contiguous().float()
    gt_boxes = gt_boxes.contiguous().float()
    real, crowd = real.contiguous(), crowd.contiguous()
    best_iou = torch.empty((num_images, num_anchors), dtype=torch.float32, device=device)
    best_gt = torch.empty((num_images, num_anchors), dtype=torch.int64, device=device)
    in_crowd = torch.empty((num_images, num_anchors), dtype=torch.bool, device=device)
    low_quality = torch.empty((num_images, num_anchors), dtype=torch.bool, device=device)
    num_blocks = triton.cdiv(num_anchors, block_a)
    block_best = torch.empty((num_images, num_blocks, num_gt), dtype=torch.float32, device=device)
    launch = wrap or (lambda kernel: kernel)
    grid = (num_blocks, num_images)
    launch(_match_pass1)[grid](
        anchors,
        gt_boxes,
        real,
        crowd,
        best_iou,
        best_gt,
        in_crowd,
        block_best,
        num_anchors,
        num_gt,
        num_blocks,
        crowd_threshold,
        BA=block_a,
        enable_fp_fusion=False,
        num_warps=num_warps,
    )
    gt_best = block_best.amax(dim=1).clamp(min=0)  # (B, G); padded GT: -1 -> 0, never > 0
    launch(_match_pass2)[grid](
        anchors,
        gt_boxes,
        real,
        gt_best,
        low_quality,
        num_anchors,
        num_gt,
        BA=block_a,
        enable_fp_fusion=False,
        num_warps=num_warps,
    )
    return best_iou, best_gt, in_crowd, low_quality


@torch.library.triton_op("rpnkit::match_anchors", mutates_args=())
def match_anchors_op(
    anchors: Tensor, gt_boxes: Tensor, real: Tensor, crowd: Tensor, crowd_threshold: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The registered op: capturable in CUDA graphs and traceable by torch.compile."""
    return match_triton(
        anchors, gt_boxes, real, crowd, crowd_threshold, wrap=torch.library.wrap_triton
    )
