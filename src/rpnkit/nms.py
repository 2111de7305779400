"""Non-maximum suppression over many groups at once, with fixed-shape inputs and outputs.

``nms_keep`` takes (G, N, 4) boxes already sorted by decreasing score within each group and a
(G, N) validity mask, and returns a (G, N) keep mask: greedy NMS run independently in every group
(one group per image, or per (image, level)).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor
from torchvision.ops import batched_nms


def nms_keep(boxes: Tensor, valid: Tensor, iou_threshold: float) -> Tensor:
    """(G, N, 4) xyxy sorted by score within each group, (G, N) bool -> (G, N) bool keep mask.

    A box is kept if it is valid and no kept, higher-ranked box of its group overlaps it with
    IoU > ``iou_threshold``. On CUDA this runs rpnkit's Triton kernel (two launches, no sync);
    elsewhere torchvision's ``batched_nms``.
    """
    if boxes.is_cuda and _triton_op() is not None:
        return _triton_op()(boxes, valid, float(iou_threshold))
    return _nms_keep_torchvision(boxes, valid, iou_threshold)


@functools.cache
def _triton_op():
    """The registered Triton NMS op, or None where Triton cannot be imported."""
    try:
        from .kernels.nms_triton import nms_keep_op
    except ImportError:  # no Triton: CPU-only installs
        return None
    return nms_keep_op


def _nms_keep_torchvision(boxes: Tensor, valid: Tensor, iou_threshold: float) -> Tensor:
    """Reference path through torchvision's ``batched_nms`` kernel.

    GPU->CPU sync: selecting the valid boxes (``nonzero``) and the kernel's variable-length
    output both need the host to learn a size. Harmless on the CPU.
    """
    num_groups, n = valid.shape
    flat_idx = valid.reshape(-1).nonzero().squeeze(1)  # sync: output size is data-dependent
    group = torch.div(flat_idx, n, rounding_mode="floor")
    # torchvision sorts by score: a descending rank keeps our order (ties impossible).
    rank = (n - (flat_idx - group * n)).to(torch.float32)
    kept = batched_nms(boxes.reshape(-1, 4)[flat_idx].float(), rank, group, iou_threshold)
    keep = torch.zeros(num_groups * n, dtype=torch.bool, device=boxes.device)
    keep[flat_idx[kept]] = True
    return keep.view(num_groups, n)
