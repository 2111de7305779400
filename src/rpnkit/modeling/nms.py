"""Non-maximum suppression over many groups at once, with fixed-shape inputs and outputs.

``nms_keep`` takes (G, N, 4) boxes already sorted by decreasing score within each group and a
(G, N) validity mask, and returns a (G, N) keep mask: greedy NMS run independently in every group
(one group per image, or per (image, level)), optionally only between boxes of the same class.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor
from torchvision.ops import batched_nms


def nms_keep(
    boxes: Tensor,
    valid: Tensor,
    iou_threshold: float,
    *,
    classes: Tensor | None = None,
    max_keep: int | None = None,
) -> Tensor:
    """(G, N, 4) xyxy sorted by score within each group, (G, N) bool -> (G, N) bool keep mask.

    A box is kept if it is valid and no kept, higher-ranked box of its group (and of its class,
    when (G, N) integer ``classes`` are given) overlaps it with IoU > ``iou_threshold``.

    ``max_keep``: the caller uses at most this many kept boxes per group, so the scan may stop
    once a group has that many; the mask is exact up to the group's ``max_keep``-th kept box and
    may be False after it. On CUDA this runs rpnkit's Triton kernel (two launches, no sync);
    elsewhere torchvision's ``batched_nms`` (exact everywhere).
    """
    if classes is None:
        classes = torch.zeros(valid.shape, dtype=torch.int32, device=valid.device)
    limit = boxes.shape[1] if max_keep is None else int(max_keep)
    if boxes.is_cuda and _triton_op() is not None:
        return _triton_op()(boxes, valid, classes, float(iou_threshold), limit)
    if torch.compiler.is_compiling():
        # torch.compile sees an opaque op of fixed output shape instead of torchvision's
        # variable-length result: the graph does not break here
        return nms_mask(boxes, valid, classes, float(iou_threshold), limit)
    return _nms_keep_torchvision(boxes, valid, classes, iou_threshold)


@torch.library.custom_op("rpnkit::nms_mask", mutates_args=())
def nms_mask(
    boxes: Tensor, valid: Tensor, classes: Tensor, iou_threshold: float, max_keep: int
) -> Tensor:
    """``nms_keep`` as an op with a fixed-shape result, (G, N, 4), (G, N), (G, N) -> (G, N)
    bool: what ``torch.compile`` (on the CPU) and ``torch.export`` see, and what rpnkit.export
    translates to ONNX's NonMaxSuppression. Its kernel is ``nms_keep`` itself."""
    return nms_keep(boxes, valid, iou_threshold, classes=classes, max_keep=max_keep)


@nms_mask.register_fake
def _(boxes: Tensor, valid: Tensor, classes: Tensor, iou_threshold: float, max_keep: int):
    return torch.empty_like(valid)


@functools.cache
def _triton_op():
    """The registered Triton NMS op, or None where Triton cannot be imported."""
    try:
        from .kernels.nms_triton import nms_keep_op
    except ImportError:  # no Triton: CPU-only installs
        return None
    return nms_keep_op


def _nms_keep_torchvision(
    boxes: Tensor, valid: Tensor, classes: Tensor, iou_threshold: float
) -> Tensor:
    """Reference path through torchvision's ``batched_nms`` kernel.

    GPU->CPU sync: selecting the valid boxes (``nonzero``) and the kernel's variable-length
    output both need the host to learn a size. Harmless on the CPU.
    """
    num_groups, n = valid.shape
    flat_idx = valid.reshape(-1).nonzero().squeeze(1)  # sync: output size is data-dependent
    group = torch.div(flat_idx, n, rounding_mode="floor")
    # one batched_nms group per (group, class)
    cls = classes.reshape(-1)[flat_idx].to(torch.int64)
    num_classes = int(cls.max()) + 1 if len(cls) else 1
    # torchvision sorts by score: a descending rank keeps our order (ties impossible).
    rank = (n - (flat_idx - group * n)).to(torch.float32)
    kept = batched_nms(
        boxes.reshape(-1, 4)[flat_idx].float(), rank, group * num_classes + cls, iou_threshold
    )
    keep = torch.zeros(num_groups * n, dtype=torch.bool, device=boxes.device)
    keep[flat_idx[kept]] = True
    return keep.view(num_groups, n)
