"""Every export workaround of rpnkit, in one place: the graph twins of the inference steps
whose sizes rpnkit reads on the host.

rpnkit's own inference path is built for a live device. It caches anchor grids and top-k index
tables per feature size, keyed by Python ints; on the CPU, NMS runs torchvision's kernel on the
valid boxes (``nonzero``, a variable-length result); the RoI pooler reads its per-level slice
lengths on the host. A graph for ``torch.export`` or ONNX has symbolic sizes instead: each of
those steps would either freeze the sizes of the example input into the graph or fail on a
data-dependent shape. The modeling functions take those steps as keyword arguments whose
defaults are rpnkit's own path:

- ``select_proposals(top_per_level=, nms=)``,
- ``postprocess_detections(nms=)`` and ``postprocess_localization(nms=)``,
- ``MultiLevelRoIPooler.forward(pool_levels=)``.

``ExportableModel`` (``model.py``) passes the twins below. Anchors need no hook: it calls
``AnchorGenerator.grid_anchors`` (pure tensor ops) itself instead of the cached ``forward``.
Nor does the backbone: ``static_same_padding`` fixes EfficientNet-Lite's size-dependent
padding in the export's own copy. Nothing in modeling branches on tracing, and its normal
path is unchanged.

**Anchors** (``graph_anchors``): each level's grid comes from its feature map's symbolic
(H_l, W_l): ``arange`` over the width and height, times the stride, plus the level's base
anchors (constants). So the graph works at any image size.

**The Cascade RPN's positions** (``graph_anchor_grid``): ``cascade_rpn.anchor_grid`` is cached
per feature size on the host; its twin builds the same columns (level, column, row, stride) from
the symbolic sizes, as the anchors. Stage 2's adaptive convolution is ``sampled_conv2d``
(``GridSample`` and a matmul) in the export, whatever ``CascadeConfig.adaptive_conv`` says:
torchvision's ``deform_conv2d`` has no ONNX op. ``ExportableModel`` asks for it through
``CascadeRPNHead.stage2(mode="sampled")``.

**Per-level top-k** (``graph_level_top_k``): every level takes exactly ``pre_nms_top_n`` slots
(a level with fewer anchors is padded with -inf logits, and those slots are invalid). So the
slot count, and with it the proposal count K = min(post_nms_top_n, L * pre_nms_top_n), is the
same for every image size. rpnkit's own path takes min(pre_nms_top_n, anchors) per level, so
its K can be smaller on small images. The valid proposals are the same.

**NMS** (``graph_nms``): the custom op ``rpnkit::nms_mask`` (``modeling.nms``, where
torch.compile uses it too), with ``nms_keep``'s fixed (G, N)
keep-mask contract. In ``torch.export`` its kernel is rpnkit's ``nms_keep`` itself (Triton on
CUDA, torchvision's kernel on the CPU), so the exported program gives rpnkit's results. In
ONNX it becomes one ``NonMaxSuppression`` node. Its batch axis is the G groups: (image, level)
for proposals, images for detections. Its class axis holds the classes. Scores are the boxes'
ranks (N - position), so the node keeps rpnkit's order exactly, ties included. A ``ScatterND``
then turns the selected indices back into the (G, N) mask. Why this and not a fixed-iteration
NMS written in tensor ops: that needs the (N, N) IoU matrix of every group. That is 1,000^2
per (image, level) for the RPN and 5,000^2 per image for detections (100 MB). It also needs N
sequential iterations to be exact in the worst case, or a loop whose trip count depends on the
data. ``NonMaxSuppression`` is exact greedy NMS (suppressed at IoU > threshold, as
torchvision), does O(N * kept) work, and is a standard op that ONNX Runtime, TensorRT and
OpenVINO run natively. ``max_keep`` becomes its per-class output cap. ``nms_keep``'s contract
already allows that: the mask is exact up to the group's ``max_keep``-th kept box.

**RoI pooling** (``graph_pool_levels``): each level selects its RoIs with ``nonzero``, pools
them and scatters the results back (``index_put``). The shapes are data-dependent but need no
host read: in ``torch.export`` they are unbacked sizes, in ONNX ``NonZero`` / ``RoiAlign`` /
``ScatterND``. Every RoI is pooled once, on its own level, as in rpnkit's path.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..modeling.anchors import AnchorConfig, AnchorGenerator
from ..modeling.backbones.efficientnet_lite import Conv2dSame
from ..modeling.cascade_rpn import AnchorGrid
from ..modeling.nms import nms_mask

# --- the backbone -------------------------------------------------------------------------------


def static_same_padding(backbone: nn.Module) -> nn.Module:
    """``backbone``, or a copy of it whose ``Conv2dSame`` layers (EfficientNet-Lite's
    TensorFlow "same" padding) have their padding fixed.

    ``Conv2dSame`` computes its padding on every call from the input size, with
    ``math.ceil(ih / stride)``. torch.export turns that float ceiling into symbolic expressions
    that nest through the network's 16 blocks, and simplifying them takes sympy many minutes.
    On an input whose sides are multiples of the stride, "same" padding is a constant,
    max(k - s, 0) per axis (left/top gets the smaller half). Every input of the graph is such
    an input: the graph pads its images to multiples of 32 first (``model.pad_batch``). The
    copy keeps the original for ``ExportableModel.reference``."""
    if not any(isinstance(m, Conv2dSame) for m in backbone.modules()):
        return backbone
    backbone = copy.deepcopy(backbone)
    for parent in list(backbone.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv2dSame):
                setattr(parent, name, _fixed_padding(child))
    return backbone


def _fixed_padding(conv: Conv2dSame) -> nn.Sequential:
    (kh, kw), (sh, sw) = conv.weight.shape[-2:], conv.stride
    ph, pw = max(kh - sh, 0), max(kw - sw, 0)
    fixed = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        (kh, kw),
        stride=conv.stride,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
    )
    fixed.weight, fixed.bias = conv.weight, conv.bias
    return nn.Sequential(nn.ZeroPad2d((pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)), fixed)


# --- anchors ----------------------------------------------------------------------------------


def graph_anchors(generator: AnchorGenerator, features: Sequence[Tensor]) -> Tensor:
    """(A_total, 4) xyxy float32 anchors from the feature maps' (symbolic) sizes, uncached."""
    return torch.cat(
        [
            generator.grid_anchors(level, f.shape[-2], f.shape[-1], device=f.device)
            for level, f in enumerate(features)
        ]
    )


def graph_anchor_grid(anchors: AnchorConfig, features: Sequence[Tensor]) -> AnchorGrid:
    """``cascade_rpn.anchor_grid`` from the feature maps' (symbolic) sizes, uncached: the
    Cascade RPN's positions (one anchor each, in the anchors' order), (A,) each."""
    parts = []
    for level, (f, lv) in enumerate(zip(features, anchors.levels)):
        h, w = f.shape[-2], f.shape[-1]
        ys = torch.arange(h, device=f.device, dtype=torch.float32)
        xs = torch.arange(w, device=f.device, dtype=torch.float32)
        row, col = torch.meshgrid(ys, xs, indexing="ij")  # (H, W) each
        col, row = col.reshape(-1), row.reshape(-1)  # (H*W,): row-major, as the anchors
        parts.append(
            (
                torch.full_like(col, level, dtype=torch.int64),
                col,
                row,
                torch.full_like(col, float(lv.stride)),
                torch.full_like(col, 1.0) * w,
                torch.full_like(col, 1.0) * h,
            )
        )
    log_sizes = [math.log2(lv.sizes[0]) for lv in anchors.levels]
    bounds = [(a + b) / 2 for a, b in itertools.pairwise(log_sizes)]
    device = features[0].device
    columns = [torch.cat(c) for c in zip(*parts)]
    return AnchorGrid(*columns, bounds=torch.tensor(bounds, device=device))


def level_sizes(generator: AnchorGenerator, features: Sequence[Tensor]) -> list:
    """Anchors per level, H_l * W_l * A_l, as (symbolic) ints."""
    return [
        f.shape[-2] * f.shape[-1] * a for f, a in zip(features, generator.num_anchors_per_level)
    ]


# --- step 1 of select_proposals ----------------------------------------------------------------


def graph_level_top_k(
    pred_objectness: Tensor, level_sizes: Sequence, pre_nms_top_n: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``rpn.level_top_k`` for symbolic level sizes: exactly ``pre_nms_top_n`` slots per
    level, a level with fewer anchors padded with -inf logits in invalid slots.

    (B, A_total) logits -> (B, L, k) logits, (B, L, k) flat anchor indices, (L, k) slot
    validity, (L*k,) slot levels.
    """
    k = int(pre_nms_top_n)
    num_images, total = pred_objectness.shape
    device = pred_objectness.device
    pad = torch.full((num_images, k), float("-inf"), device=device, dtype=pred_objectness.dtype)
    slots = torch.arange(k, device=device)
    logits, index, slot_valid, start = [], [], [], 0
    for n in level_sizes:
        level_logits = pred_objectness[:, start : start + n]  # (B, n_l)
        values, pos = torch.cat([level_logits, pad], dim=1).topk(k, dim=1)  # (B, k)
        logits.append(values)
        index.append((pos + start).clamp(max=total - 1))  # padding slots: any real anchor
        slot_valid.append(slots < n)
        start = start + n
    slot_level = torch.arange(len(level_sizes), device=device).repeat_interleave(k)
    return torch.stack(logits, 1), torch.stack(index, 1), torch.stack(slot_valid), slot_level


# --- NMS ----------------------------------------------------------------------------------------


def graph_nms(
    boxes: Tensor,
    valid: Tensor,
    iou_threshold: float,
    *,
    classes: Tensor | None = None,
    max_keep: int | None = None,
) -> Tensor:
    """``nms.nms_keep``'s signature and contract, as the op ``rpnkit::nms_mask``."""
    if classes is None:
        classes = torch.zeros(valid.shape, dtype=torch.int64, device=valid.device)
    limit = boxes.shape[1] if max_keep is None else int(max_keep)
    return nms_mask(boxes.float(), valid, classes.to(torch.int64), float(iou_threshold), limit)


def nms_keep_onnx(boxes, valid, classes, iou_threshold: float, max_keep: int):
    """The ONNX translation of ``rpnkit::nms_mask`` (onnxscript, traced by the exporter):
    ``NonMaxSuppression`` with the G groups as its batch, the classes as its classes and the
    boxes' ranks as scores, then the selected indices scattered into a (G, N) mask."""
    from onnxscript import opset18 as op

    n = op.Squeeze(op.Shape(valid, start=1, end=2), [0])  # N, a scalar
    rank = op.Cast(op.Sub(n, op.Range(0, n, 1)), to=1)  # (N,) float: N .. 1, best first
    num_classes = op.Add(op.ReduceMax(classes, keepdims=0), 1)
    class_ids = op.Unsqueeze(op.Range(0, num_classes, 1), [0, 2])  # (1, C, 1)
    in_class = op.And(
        op.Equal(op.Unsqueeze(classes, [1]), class_ids), op.Unsqueeze(valid, [1])
    )  # (G, C, N)
    scores = op.Where(in_class, rank, op.Constant(value_float=0.0))  # 0: not a candidate
    selected = op.NonMaxSuppression(
        boxes,  # xyxy: the IoU is the same for (y1, x1, y2, x2), ONNX's default layout
        scores,
        op.Constant(value_ints=[max_keep]),
        op.Constant(value_floats=[iou_threshold]),
        op.Constant(value_floats=[0.0]),  # only scores > 0 are candidates
    )  # (M, 3): group, class, box
    where = op.Gather(selected, op.Constant(value_ints=[0, 2]), axis=1)  # (M, 2)
    ones = op.Expand(op.Constant(value_float=1.0), op.Shape(selected, start=0, end=1))
    zeros = op.ConstantOfShape(op.Shape(valid))  # float 0
    return op.Cast(op.ScatterND(zeros, where, ones), to=9)  # bool


def sort_stable_onnx(self, *, stable: bool | None = None, dim: int = -1, descending: bool = False):
    """The ONNX translation of ``aten.sort.stable`` (rpnkit's proposal ranking sorts stably;
    torch.onnx has no translation for it): a ``TopK`` over the whole axis, which is stable by
    the ONNX spec (of two equal values the one with the lower index comes first)."""
    from onnxscript import opset18 as op

    size = op.Shape(self, start=dim, end=dim + 1) if dim != -1 else op.Shape(self, start=-1)
    values, indices = op.TopK(self, size, axis=dim, largest=int(descending), sorted=1)
    return values, indices


def roi_pool_onnx(input, rois, spatial_scale: float, pooled_height: int, pooled_width: int):
    """The ONNX translation of ``torchvision::roi_pool`` (the paper preset's RoIPool), as
    ``MaxRoiPool``: both are Fast R-CNN's Caffe kernel (rounded RoI corners, floor/ceil bins,
    empty bins 0). torch.onnx's own translation does not match the op's signature. The op's
    second output (argmax, for the backward) is not used at inference: a placeholder."""
    from onnxscript import opset18 as op

    pooled = op.MaxRoiPool(
        input, rois, pooled_shape=[pooled_height, pooled_width], spatial_scale=spatial_scale
    )
    return pooled, op.Cast(pooled, to=6)  # int32, as torchvision's argmax


def onnx_translations() -> dict[Callable, Callable]:
    """The exporter's ``custom_translation_table``: the op defined here, the stable sort and
    RoIPool."""
    return {
        torch.ops.rpnkit.nms_mask.default: nms_keep_onnx,
        torch.ops.aten.sort.stable: sort_stable_onnx,
        torch.ops.torchvision.roi_pool.default: roi_pool_onnx,
    }


# --- RoI pooling --------------------------------------------------------------------------------


def graph_pool_levels(
    features: Sequence[Tensor],
    strides: Sequence[int],
    rois: Tensor,
    levels: Tensor,
    pool: Callable[[Tensor, Tensor, int], Tensor],
) -> Tensor:
    """``pooling.pool_sorted_by_level`` without host reads: each level's RoIs selected with
    ``nonzero``, pooled, and scattered back. (N, 5), (N,) -> (N, ch, S, S)."""
    out = None
    for level, (feature, stride) in enumerate(zip(features, strides)):
        index = (levels == level).nonzero().squeeze(1)  # (n_l,): data-dependent, no sync
        pooled = pool(feature, rois[index], stride)  # (n_l, ch, S, S)
        if out is None:
            size = (rois.shape[0], *pooled.shape[1:])
            out = torch.zeros(size, dtype=pooled.dtype, device=pooled.device)
        out = out.index_put((index,), pooled)
    return out
