"""Greedy NMS for many groups in two Triton launches, with fixed-shape output: no GPU->CPU sync.

1. ``_iou_mask_kernel``: for every group, bit j of word ``mask[g, i, j // 32]`` says that box i
   suppresses box j (j > i, the same class when classes are given, and IoU > threshold). All
   (group, row block, word) tiles in parallel.
2. ``_nms_scan_kernel``: one program per group walks its boxes in score order, keeping a box if
   no kept box suppressed it and OR-ing the kept box's row into the running ``removed`` bits. It
   stops at the end of the 32-box word in which the group reached ``max_keep`` kept boxes: the
   caller wants at most that many, and the scan is the serial part.

The IoU is computed exactly as torchvision's CUDA kernel computes it (float32, the same
operations in the same order, correctly rounded division), so the kept sets agree.

Shapes: boxes (G, N, 4) xyxy float32, sorted by decreasing score in each group; valid (G, N)
bool; classes (G, N) int32 (all zeros: one class); keep (G, N) bool. W = ceil(N / 32) mask
words per row.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

BLOCK_ROWS = 64


# Sizes are not specialised: Triton would otherwise compile a variant for each size's
# divisibility by 16, and a training run with images of many shapes would stall on each
@triton.jit(do_not_specialize=["n", "w"])
def _iou_mask_kernel(boxes_ptr, classes_ptr, mask_ptr, n, w, threshold, BLOCK_R: tl.constexpr):
    g = tl.program_id(0)
    rows = tl.program_id(1) * BLOCK_R + tl.arange(0, BLOCK_R)  # (R,)
    word = tl.program_id(2)
    cols = word * 32 + tl.arange(0, 32)  # (32,)
    row_ok = rows < n
    col_ok = cols < n
    base = boxes_ptr + g * n * 4
    ax1 = tl.load(base + rows * 4 + 0, mask=row_ok, other=0.0)
    ay1 = tl.load(base + rows * 4 + 1, mask=row_ok, other=0.0)
    ax2 = tl.load(base + rows * 4 + 2, mask=row_ok, other=0.0)
    ay2 = tl.load(base + rows * 4 + 3, mask=row_ok, other=0.0)
    bx1 = tl.load(base + cols * 4 + 0, mask=col_ok, other=0.0)
    by1 = tl.load(base + cols * 4 + 1, mask=col_ok, other=0.0)
    bx2 = tl.load(base + cols * 4 + 2, mask=col_ok, other=0.0)
    by2 = tl.load(base + cols * 4 + 3, mask=col_ok, other=0.0)
    # torchvision's devIoU: left/right/top/bottom, clamped width and height, areas, division
    left = tl.maximum(ax1[:, None], bx1[None, :])
    right = tl.minimum(ax2[:, None], bx2[None, :])
    top = tl.maximum(ay1[:, None], by1[None, :])
    bottom = tl.minimum(ay2[:, None], by2[None, :])
    width = tl.maximum(right - left, 0.0)
    height = tl.maximum(bottom - top, 0.0)
    inter = width * height
    area_a = (ax2 - ax1) * (ay2 - ay1)
    area_b = (bx2 - bx1) * (by2 - by1)
    union = area_a[:, None] + area_b[None, :] - inter
    iou = tl.math.div_rn(inter, union)
    a_cls = tl.load(classes_ptr + g * n + rows, mask=row_ok, other=0)
    b_cls = tl.load(classes_ptr + g * n + cols, mask=col_ok, other=0)
    same = a_cls[:, None] == b_cls[None, :]
    hit = (iou > threshold) & same & (cols[None, :] > rows[:, None]) & col_ok[None, :]
    bits = hit.to(tl.uint32) << tl.arange(0, 32).to(tl.uint32)[None, :]
    packed = tl.sum(bits, axis=1)  # distinct bits: the sum is the OR
    tl.store(mask_ptr + (g * n + rows) * w + word, packed.to(tl.int32), mask=row_ok)


@triton.jit(do_not_specialize=["n", "w", "max_keep"])
def _nms_scan_kernel(mask_ptr, valid_ptr, keep_ptr, n, w, max_keep, W_PAD: tl.constexpr):
    g = tl.program_id(0)
    offs = tl.arange(0, W_PAD)
    removed = tl.zeros([W_PAD], dtype=tl.int32)
    count = tl.zeros([], dtype=tl.int32)
    c = tl.zeros([], dtype=tl.int32)
    while (c < w) & (count < max_keep):
        # the removed bits of boxes 32c .. 32c+31, as one scalar word
        word = tl.sum(tl.where(offs == c, removed, 0), axis=0)
        for b in tl.static_range(32):
            i = c * 32 + b
            ok = i < n
            v = tl.load(valid_ptr + g * n + i, mask=ok, other=0)
            row_base = mask_ptr + (g * n + i) * w
            row = tl.load(row_base + offs, mask=(offs < w) & ((offs * 0 + i) < n), other=0)
            own = tl.load(row_base + c, mask=ok, other=0)
            kept = ok & (v != 0) & (((word >> b) & 1) == 0)
            removed = removed | tl.where(kept, row, 0)
            word = word | tl.where(kept, own, 0)
            count += kept.to(tl.int32)
            tl.store(keep_ptr + g * n + i, kept, mask=ok)
        c += 1


def nms_keep_triton(
    boxes: Tensor,
    valid: Tensor,
    classes: Tensor,
    iou_threshold: float,
    max_keep: int,
    *,
    wrap=None,
) -> Tensor:
    """(G, N, 4) float32 boxes sorted by score per group, (G, N) bool, (G, N) int32 classes ->
    (G, N) bool keep, exact up to the group's first ``max_keep`` kept boxes, False after.

    ``wrap`` is ``torch.library.wrap_triton`` when called inside the registered op, so that
    torch.compile can trace the launches.
    """
    num_groups, n, _ = boxes.shape
    w = triton.cdiv(n, 32)
    boxes = boxes.contiguous().float()
    valid = valid.contiguous()
    classes = classes.contiguous().to(torch.int32)
    mask = torch.empty((num_groups, n, w), dtype=torch.int32, device=boxes.device)
    keep = torch.zeros((num_groups, n), dtype=torch.bool, device=boxes.device)
    if num_groups == 0 or n == 0:
        return keep
    launch = wrap or (lambda kernel: kernel)
    launch(_iou_mask_kernel)[(num_groups, triton.cdiv(n, BLOCK_ROWS), w)](
        boxes, classes, mask, n, w, iou_threshold, BLOCK_R=BLOCK_ROWS
    )
    w_pad = max(32, triton.next_power_of_2(w))
    launch(_nms_scan_kernel)[(num_groups,)](
        mask, valid, keep, n, w, max_keep, W_PAD=w_pad, num_warps=1 if w_pad <= 32 else 4
    )
    return keep


@torch.library.triton_op("rpnkit::nms_keep", mutates_args=())
def nms_keep_op(
    boxes: Tensor, valid: Tensor, classes: Tensor, iou_threshold: float, max_keep: int
) -> Tensor:
    """The registered op: capturable in CUDA graphs and traceable by torch.compile."""
    return nms_keep_triton(
        boxes, valid, classes, iou_threshold, max_keep, wrap=torch.library.wrap_triton
    )
