"""RoI pooling over pyramid levels: each RoI pooled on its own level with torchvision's
RoIAlign or RoIPool, and the same step as an opaque op for ``torch.compile``.

Shape glossary:
    N : RoIs (all images);  L : pooled levels;  ch : channels;  S : pooled size
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torchvision.ops import roi_align, roi_pool


def pool_level(
    feature: Tensor, rois: Tensor, stride: int, *, size: int, sampling_ratio: int, align: bool
) -> Tensor:
    """(B, ch, H, W) one level, (n, 5) RoIs (image index, xyxy in input pixels) ->
    (n, ch, S, S): RoIAlign (``align``) or the paper's RoIPool."""
    if align:
        return roi_align(
            feature, rois, size, spatial_scale=1.0 / stride, sampling_ratio=sampling_ratio
        )
    return roi_pool(feature, rois, size, spatial_scale=1.0 / stride)


def pool_sorted_by_level(
    features: Sequence[Tensor],
    strides: Sequence[int],
    rois: Tensor,
    levels: Tensor,
    pool: Callable[[Tensor, Tensor, int], Tensor],
) -> Tensor:
    """(N, 5) RoIs and (N,) their level -> (N, ch, S, S): ``pool`` run once per level. The
    RoIs are sorted by level so that each level's RoIs are one contiguous slice, each slice is
    pooled, and the results are put back in RoI order."""
    order = levels.argsort(stable=True)
    # GPU->CPU sync, the only one here: the slice lengths (torchvision's pooler syncs once
    # per level). A kernel that pools every level in one launch would remove it.
    counts = torch.bincount(levels, minlength=len(features)).tolist()
    sorted_rois = rois[order]
    pooled, start = [], 0
    for feature, stride, count in zip(features, strides, counts):
        pooled.append(pool(feature, sorted_rois[start : start + count], stride))
        start += count
    by_level = torch.cat(pooled)  # (N, ch, S, S) in level order
    return torch.empty_like(by_level).index_copy(0, order, by_level)


# --- the same step as an op, for torch.compile ---------------------------------------------------
# The slice lengths above are read on the host, which torch.compile cannot trace (a graph
# break). As an op with a fixed output shape, (N, ch, S, S), the pooler is one opaque node
# instead; its backward is a second op, torchvision's backward kernels level by level.


def _pool_in_order(
    features: list[Tensor],
    rois: Tensor,
    levels: Tensor,
    strides: list[int],
    size: int,
    sampling_ratio: int,
    align: bool,
) -> Tensor:
    def pool(feature: Tensor, level_rois: Tensor, stride: int) -> Tensor:
        return pool_level(
            feature, level_rois, stride, size=size, sampling_ratio=sampling_ratio, align=align
        )

    # in the RoIs' dtype, as torchvision's autocast wrappers pool (autocast does not reach
    # inside an op), and back to the features' dtype
    same = [f.to(rois.dtype) for f in features]
    return pool_sorted_by_level(same, strides, rois, levels, pool).to(features[0].dtype)


@torch.library.custom_op("rpnkit::pool_by_level", mutates_args=())
def pool_by_level(
    features: list[Tensor],
    rois: Tensor,
    levels: Tensor,
    strides: list[int],
    size: int,
    sampling_ratio: int,
    align: bool,
) -> Tensor:
    """``pool_sorted_by_level`` with ``pool_level`` as one op: [(B, ch, H_l, W_l)], (N, 5),
    (N,) -> (N, ch, S, S) in the features' dtype."""
    return _pool_in_order(features, rois, levels, strides, size, sampling_ratio, align)


@pool_by_level.register_fake
def _(features, rois, levels, strides, size, sampling_ratio, align):
    return features[0].new_empty((rois.shape[0], features[0].shape[1], size, size))


@torch.library.custom_op("rpnkit::pool_by_level_backward", mutates_args=())
def pool_by_level_backward(
    grad: Tensor,
    features: list[Tensor],
    rois: Tensor,
    levels: Tensor,
    strides: list[int],
    size: int,
    sampling_ratio: int,
    align: bool,
) -> list[Tensor]:
    """The gradient of ``pool_by_level`` with respect to each level's features: torchvision's
    backward kernels on each level's slice (RoIPool's argmax pooled again), in float32."""
    order = levels.argsort(stable=True)
    # the same host read of the slice lengths as the forward
    counts = torch.bincount(levels, minlength=len(features)).tolist()
    sorted_rois, sorted_grad = rois[order].float(), grad[order].float()
    grads, start = [], 0
    for feature, stride, count in zip(features, strides, counts):
        r, g = sorted_rois[start : start + count], sorted_grad[start : start + count]
        start += count
        b, c, h, w = feature.shape
        if align:
            level_grad = torch.ops.torchvision._roi_align_backward(
                g, r, 1.0 / stride, size, size, b, c, h, w, sampling_ratio, False
            )
        else:
            _, argmax = torch.ops.torchvision.roi_pool(feature.float(), r, 1.0 / stride, size, size)
            level_grad = torch.ops.torchvision._roi_pool_backward(
                g, r, argmax, 1.0 / stride, size, size, b, c, h, w
            )
        grads.append(level_grad.to(feature.dtype))
    return grads


@pool_by_level_backward.register_fake
def _(grad, features, rois, levels, strides, size, sampling_ratio, align):
    return [torch.empty_like(f) for f in features]


def _setup_context(ctx, inputs, output) -> None:
    features, rois, levels, strides, size, sampling_ratio, align = inputs
    ctx.save_for_backward(rois, levels, *features)
    ctx.settings = (list(strides), size, sampling_ratio, align)


def _backward(ctx, grad: Tensor):
    rois, levels, *features = ctx.saved_tensors
    grads = pool_by_level_backward(grad.contiguous(), features, rois, levels, *ctx.settings)
    return grads, None, None, None, None, None, None


pool_by_level.register_autograd(_backward, setup_context=_setup_context)
