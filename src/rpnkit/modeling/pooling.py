"""RoI pooling over pyramid levels: each RoI pooled on its own level with torchvision's
RoIAlign or RoIPool.

On CUDA, RoIAlign runs once for all levels, on one canvas that holds every level side by side,
with no GPU->CPU sync (``pool_on_canvas``). RoIPool, and RoIAlign on the CPU (no sync to save
there, and the canvas costs 1.4x the loop), keep the level-by-level loop, which reads the
slice lengths on the host (``pool_sorted_by_level``) and is an opaque op for ``torch.compile``
(``pool_by_level``).

Shape glossary:
    N : RoIs (all images);  L : pooled levels;  ch : channels;  S : pooled size
    B : images;  H_l, W_l : level l's feature map;  Hc, Wc : the canvas
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
    # GPU->CPU sync: the slice lengths (torchvision's pooler syncs once per level). RoIAlign
    # avoids it on one canvas (pool_on_canvas); RoIPool, the paper's, keeps this loop.
    counts = torch.bincount(levels, minlength=len(features)).tolist()
    sorted_rois = rois[order]
    pooled, start = [], 0
    for feature, stride, count in zip(features, strides, counts):
        pooled.append(pool(feature, sorted_rois[start : start + count], stride))
        start += count
    by_level = torch.cat(pooled)  # (N, ch, S, S) in level order
    return torch.empty_like(by_level).index_copy(0, order, by_level)


# --- RoIAlign on one canvas, without a sync -------------------------------------------------------
# Every level is copied into one canvas and each RoI moved to its level's place on it, so that a
# single roi_align (spatial_scale 1) pools all levels: no slice lengths, no host read, and
# torch.compile traces it (torchvision's kernels have fake and backward implementations).
#
# Layout, zeros elsewhere: level 0 (the largest) at the origin, untranslated, so its RoIs sample
# the same points as on the level itself; levels 1..L-1 stacked in a second column. Each level
# is framed by its edge rows and columns repeated ("replicate"), then a zero gap. Levels of
# 4x4, 2x2 and 1x1 (A, B, C; a, b, c their frames; . zeros):
#
#     A A A A a . b b b b .
#     A A A A a . b B B b .
#     A A A A a . b B B b .
#     A A A A a . b b b b .
#     a a a a a . . . . . .
#     . . . . . . c c c . .
#     . . . . . . c C c . .
#     . . . . . . c c c . .
#     . . . . . . . . . . .
#
# Why the frame: torchvision's roi_align (aligned=False) reads a sample at y in [H-1, H] as row
# H-1 and one at y in [-1, 0) as row 0 (x likewise). On the canvas such a sample interpolates
# between the edge row and its copy: the same value. Level 0 needs no top or left frame, as
# roi_align's own clamp at the canvas edge does the same there. RoIs inside the image never
# sample beyond that (proposals are clipped, and H_l = ceil(padded / stride)); a sample more
# than a pixel outside its level reads 0 in torchvision's but here blends the frame with the
# zero gap (a RoI smaller than a feature pixel is widened to one, so a tiny box at the very
# bottom or right of a feature map can), and further out, another level.


def canvas_layout(
    sizes: Sequence[tuple[int, int]],
) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """Each level's (H_l, W_l) -> the (row, col) of its first pixel on the canvas, and the
    canvas' (Hc, Wc). Shapes only: nothing is read from the device."""
    (h0, w0), rest = sizes[0], sizes[1:]
    origins, height, width = [(0, 0)], h0 + 2, w0 + 2  # level 0, its frame, a gap
    top, left = 0, w0 + 2  # the second column
    for h, w in rest:
        origins.append((top + 1, left + 1))  # inside the frame
        top += h + 3
        # sym_max: under torch.compile with dynamic sizes, no guard on which is larger
        width = torch.sym_max(width, left + w + 3)
    return origins, (torch.sym_max(height, top), width)


def _canvas_index(
    sizes: Sequence[tuple[int, int]],
    origins: Sequence[tuple[int, int]],
    canvas_size: tuple[int, int],
    device: torch.device,
) -> Tensor:
    """(Hc * Wc,) int64: for each canvas pixel, the pixel it copies in the levels flattened one
    after the other, a frame pixel its edge's, a gap the zero appended after the last level.
    Built on the device (a table copied from host memory would make the host wait)."""
    total = sum(h * w for h, w in sizes)
    index = torch.full(canvas_size, total, dtype=torch.int64, device=device)
    start = 0
    for level, ((h, w), (row, col)) in enumerate(zip(sizes, origins)):
        pad = 1 if level > 0 else 0  # level 0 has no top or left frame
        rows = torch.arange(-pad, h + 1, device=device).clamp(0, h - 1)  # frame: the edge again
        cols = torch.arange(-pad, w + 1, device=device).clamp(0, w - 1)
        index[row - pad : row + h + 1, col - pad : col + w + 1] = start + rows[:, None] * w + cols
        start += h * w
    return index.flatten()


def build_canvas(
    features: Sequence[Tensor],
    origins: Sequence[tuple[int, int]],
    size: tuple[int, int],
    dtype: torch.dtype,
) -> Tensor:
    """[(B, ch, H_l, W_l)] -> (B, ch, Hc, Wc) in ``dtype``: each level framed at its origin
    (``canvas_layout``), zeros elsewhere. The gradient flows back to every level."""
    # One gather from the flattened levels, whose backward is one index_add; copying each
    # level into a zero canvas instead would clone the whole canvas' gradient once per copy
    # in the backward (autograd's CopySlices).
    b, ch = features[0].shape[:2]
    sizes = [(f.shape[2], f.shape[3]) for f in features]
    zero = features[0].new_zeros((b, ch, 1))
    flat = torch.cat([f.flatten(2) for f in features] + [zero], dim=2).to(dtype)
    index = _canvas_index(sizes, origins, size, flat.device)
    return flat.index_select(2, index).view(b, ch, *size)


def _per_level(levels: Tensor, table: Sequence[Sequence[float]], dtype: torch.dtype) -> Tensor:
    """(N,) levels, a host table (L, k) -> (N, k): each RoI's row. The table is filled on the
    device: a tensor copied from host memory makes the host wait for the stream (a sync)."""
    values = [levels.new_full((), v, dtype=dtype) for row in table for v in row]
    return torch.stack(values).view(len(table), -1)[levels]


def canvas_rois(
    rois: Tensor,
    levels: Tensor,
    strides: Sequence[int],
    origins: Sequence[tuple[int, int]],
) -> Tensor:
    """(N, 5) RoIs (image index, xyxy in input pixels), (N,) levels -> (N, 5) (image index,
    xyxy in canvas pixels): scaled by the level's 1 / stride, moved to its origin."""
    table = [(1.0 / s, col, row) for s, (row, col) in zip(strides, origins)]
    scale, x0, y0 = _per_level(levels, table, rois.dtype).unbind(1)  # (N,) each
    offset = torch.stack([x0, y0, x0, y0], dim=1)  # (N, 4)
    # level 0: times a power of two plus 0, exact; elsewhere one rounding of the sum
    return torch.cat([rois[:, :1], rois[:, 1:] * scale[:, None] + offset], dim=1)


def pool_on_canvas(
    features: Sequence[Tensor],
    strides: Sequence[int],
    rois: Tensor,
    levels: Tensor,
    *,
    size: int,
    sampling_ratio: int,
) -> Tensor:
    """RoIAlign of each RoI on its level, all levels in one call: [(B, ch, H_l, W_l)], (N, 5)
    RoIs, (N,) levels -> (N, ch, S, S) in the features' dtype. Pooled in the RoIs' dtype, as
    torchvision's autocast wrapper pools. Equal to ``pool_sorted_by_level`` with RoIAlign for
    RoIs within a pixel of their level's map (see above): exactly on level 0 but at its last
    row and column (the clamp's interpolation rounds differently), and to the rounding of the
    moved RoIs' coordinates on the other levels."""
    origins, canvas_size = canvas_layout([tuple(f.shape[-2:]) for f in features])
    canvas = build_canvas(features, origins, canvas_size, rois.dtype)
    moved = canvas_rois(rois, levels, strides, origins)
    # a fixed sampling ratio: with 0 (adaptive, ceil(RoI size / S) samples), moving a RoI can
    # change its float32 width by one step and so the number of samples (MultiLevelRoIPooler
    # loops over levels then)
    pooled = roi_align(canvas, moved, size, spatial_scale=1.0, sampling_ratio=sampling_ratio)
    return pooled.to(features[0].dtype)


# --- the same step as an op, for torch.compile ---------------------------------------------------
# The slice lengths above are read on the host, which torch.compile cannot trace (a graph
# break). As an op with a fixed output shape, (N, ch, S, S), the pooler is one opaque node
# instead; its backward is a second op, torchvision's backward kernels level by level.
# MultiLevelRoIPooler uses it where it loops (RoIPool, and RoIAlign on the CPU); on CUDA the
# canvas traces as it is.


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
