"""Which anchors can overlap a box: an index of anchors for the exact sparse matcher.

An anchor and a GT box have IoU > 0 only if they overlap, and each of a crowded image's 1,500
small GT boxes overlaps about two thousand of the ~270k anchors of an 800x1333 FPN image. The
dense matcher computes all A x G IoU values anyway; ``AnchorIndex`` instead lists, for every box,
the anchors that can overlap it (its candidate pairs), for any set of anchors: no grid layout is
assumed and none is passed in, though grids are the fast case.

How. Anchors are grouped into size classes (width and height rounded to quarter octaves: on an
FPN grid, one class per level and shape). Every anchor of class k is at most W_k wide and H_k
high, so an anchor overlapping the box (gx1, gy1, gx2, gy2) has gx1 - W_k < x1 < gx2 and
gy1 - H_k < y1 < gy2: a range of the class's columns (its distinct x1 values) and, in each of
them, a range of its rows (distinct y1 values). Anchors are sorted by (class, column, row), so a
column is a contiguous block and a (box, column) pair -- a segment -- is a contiguous run of
candidates. Where a column holds every row of its class once (every column of a grid), the run
is found by arithmetic; elsewhere by a binary search.

Candidates are a superset: anchors of a class narrower than W_k, or touching the box edge to
edge, come along and get IoU 0, as they do in the dense matrix. No overlapping pair is ever
missed: the bounds are searched in float64, where anchor and box coordinates of float32 or
float64 compare exactly, and the lower bounds are widened by a relative 1e-9.

Shape glossary:
    A  : anchors;  A' : anchors with positive width and height (the indexed ones; the others
         overlap nothing)
    K  : size classes;  X : columns, distinct (class, x1);  NX, NY : distinct x1, y1 values
    M  : query boxes;  Q = M * K : (box, class) queries;  S : segments;  P : candidate pairs
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

# Size classes are quarter octaves: an anchor at most 2^(1/8) narrower than its class's widest.
_CLASS_STEPS_PER_OCTAVE = 4
# Lower search bounds are widened by this much, relative to the coordinates, so that float64
# rounding in gx1 - W_k can never drop an overlapping anchor (it only adds candidates).
_RELATIVE_SLACK = 1e-9


@dataclass(frozen=True)
class AnchorIndex:
    """Anchors sorted by (size class, x1, y1), with what a box query needs.

    The anchors of column j are ``perm[col_begin[j] : col_begin[j + 1]]``, sorted by row.
    """

    perm: Tensor  # (A',) int64: anchor indices in sorted order
    coords: Tensor  # (4, A') the anchors in that order, coordinate-major, in their dtype
    max_w: Tensor  # (K,) float64: widest anchor of each class
    max_h: Tensor  # (K,) float64: tallest anchor of each class
    xs: Tensor  # (NX,) float64: distinct x1, sorted
    ys: Tensor  # (NY,) float64: distinct y1, sorted
    column_keys: Tensor  # (X,) int64, sorted: class * NX + rank of x1
    row_keys: Tensor  # (R,) int64, sorted: class * NY + rank of y1 (the rows of every class)
    class_rows: Tensor  # (K + 1,) int64: class k's rows are row_keys[class_rows[k]:...[k + 1]]
    col_begin: Tensor  # (X + 1,) int64: first sorted position of each column
    irregular: Tensor  # (X + 1,) int64: columns before j that lack rows or repeat them
    sorted_keys: Tensor  # (A',) int64, sorted: column * rows_max + row within class
    rows_max: int
    num_anchors: int  # A

    @property
    def num_classes(self) -> int:
        return self.max_w.shape[0]

    @property
    def num_indexed(self) -> int:
        """A'."""
        return self.perm.shape[0]


def take_boxes(coords: Tensor, idx: Tensor) -> Tensor:
    """(4, N) coordinate-major boxes, (P,) indices -> (P, 4) boxes, as a view of a (4, P)
    tensor: each coordinate contiguous, so the per-axis IoU arithmetic runs on dense rows (a
    row gather of (N, 4) boxes is about twice as slow)."""
    return coords.index_select(1, idx).t()


def _size_classes(w: Tensor, h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(A',) float64 widths and heights > 0 -> (A',) class of each anchor, (K,) widest and (K,)
    tallest anchor of each class. Classes are quarter octaves of width and height, rounded to
    the nearest, so that an FPN level's shapes (sizes and ratios of powers of 2^(1/2)) sit in
    the middle of their bins: one class per (level, shape) despite float rounding."""
    steps = _CLASS_STEPS_PER_OCTAVE
    kw = torch.round(steps * torch.log2(w)).long()
    kh = torch.round(steps * torch.log2(h)).long()
    kw, kh = kw - kw.min(), kh - kh.min()
    _, cls = torch.unique(kw * (int(kh.max()) + 1) + kh, return_inverse=True)
    num_classes = int(cls.max()) + 1
    max_w = w.new_zeros(num_classes).scatter_reduce_(0, cls, w, "amax")
    max_h = h.new_zeros(num_classes).scatter_reduce_(0, cls, h, "amax")
    return cls, max_w, max_h


def build_anchor_index(anchors: Tensor) -> AnchorIndex:
    """(A, 4) xyxy anchors (finite) -> AnchorIndex. About 0.1 s for 270k anchors; see
    ``anchor_index`` for the cached version."""
    box = anchors.double()
    w, h = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
    # an anchor without width or height has intersection 0 with every box: never a candidate
    kept = ((w > 0) & (h > 0)).nonzero().squeeze(1)
    if kept.numel() == 0:
        box = box.new_zeros((1, 4))  # a dummy that no class holds: every query finds nothing
        cls, max_w, max_h = kept, box.new_zeros(0), box.new_zeros(0)
    else:
        box = box[kept]
        cls, max_w, max_h = _size_classes(w[kept], h[kept])
    num_classes = max_w.shape[0]

    xs, x_rank = torch.unique(box[:, 0], return_inverse=True)
    ys, y_rank = torch.unique(box[:, 1], return_inverse=True)
    x_rank, y_rank = x_rank[: kept.numel()], y_rank[: kept.numel()]
    column_keys, col = torch.unique(cls * xs.numel() + x_rank, return_inverse=True)
    row_keys, row = torch.unique(cls * ys.numel() + y_rank, return_inverse=True)
    class_rows = torch.searchsorted(row_keys, torch.arange(num_classes + 1) * ys.numel())
    rows_per_class = class_rows.diff()  # (K,)
    local_row = row - class_rows[cls]  # row within the class, 0 .. rows_per_class - 1
    rows_max = int(rows_per_class.max()) if num_classes else 0
    sorted_keys, order = torch.sort(col * rows_max + local_row, stable=True)
    col_s, row_s = col[order], local_row[order]
    num_cols = column_keys.numel()
    col_begin = torch.searchsorted(col_s, torch.arange(num_cols + 1))
    # a regular column holds rows 0 .. R_k - 1 once each, so row r sits at col_begin + r
    in_place = row_s == torch.arange(col_s.numel()) - col_begin[col_s]
    misplaced = torch.zeros(num_cols, dtype=torch.bool).index_fill_(0, col_s[~in_place], True)
    short = (
        col_begin.diff()
        != rows_per_class[torch.div(column_keys, xs.numel(), rounding_mode="floor")]
    )
    irregular = torch.cat([torch.zeros(1, dtype=torch.long), (misplaced | short).long().cumsum(0)])
    perm = kept[order]
    return AnchorIndex(
        perm=perm,
        coords=anchors[perm].t().contiguous(),
        max_w=max_w,
        max_h=max_h,
        xs=xs,
        ys=ys,
        column_keys=column_keys,
        row_keys=row_keys,
        class_rows=class_rows,
        col_begin=col_begin,
        irregular=irregular,
        sorted_keys=sorted_keys,
        rows_max=rows_max,
        num_anchors=anchors.shape[0],
    )


# id(anchors) -> (weak reference to anchors, their version counter, index). The anchors of a
# feature size are one cached tensor (AnchorGenerator), so training builds each index once.
_INDEX_CACHE: dict[int, tuple[weakref.ref, int, AnchorIndex]] = {}
_INDEX_CACHE_SIZE = 8


def cached_anchor_index(anchors: Tensor) -> AnchorIndex | None:
    """The index ``anchor_index`` built for this very tensor, unmodified since; else None."""
    if anchors.is_inference():  # no version counter: cannot tell an in-place change
        return None
    hit = _INDEX_CACHE.get(id(anchors))
    if hit is not None and hit[0]() is anchors and hit[1] == anchors._version:
        return hit[2]
    return None


def anchor_index(anchors: Tensor) -> AnchorIndex:
    """``build_anchor_index``, cached per anchors tensor while it lives and is not modified."""
    index = cached_anchor_index(anchors)
    if index is not None:
        return index
    index = build_anchor_index(anchors)
    if not anchors.is_inference():
        if len(_INDEX_CACHE) >= _INDEX_CACHE_SIZE:
            _INDEX_CACHE.pop(next(iter(_INDEX_CACHE)))
        _INDEX_CACHE[id(anchors)] = (weakref.ref(anchors), anchors._version, index)
    return index


@dataclass(frozen=True)
class CandidatePlan:
    """The candidate anchors of M boxes, as per-(box, class) ranges of columns and rows.

    ``pairs_bound`` (M,) bounds each box's candidate pairs (exact where its columns are
    regular); ``segments`` (M,) counts its segments. ``chunks`` yields the pairs.
    """

    index: AnchorIndex
    col_lo: Tensor  # (M, K) first column of the class that can overlap
    col_hi: Tensor  # (M, K) one past the last
    row_lo: Tensor  # (M, K) first row (within the class) that can overlap
    row_hi: Tensor  # (M, K) one past the last
    segments: Tensor  # (M,) int64
    pairs_bound: Tensor  # (M,) int64

    def chunks(self, cap: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield (pos (P,), box (P,)): sorted anchor positions and box indices of candidate
        pairs, all pairs of a box in one chunk, boxes in increasing order; a chunk holds at
        most ``cap`` pairs and segments, or one box's."""
        cost = torch.maximum(self.segments, self.pairs_bound).tolist()
        first, total = 0, 0
        for m, c in enumerate(cost):
            if total + c > cap and m > first:
                yield self._pairs(first, m)
                first, total = m, 0
            total += c
        if cost:
            yield self._pairs(first, len(cost))

    def _pairs(self, first: int, last: int) -> tuple[Tensor, Tensor]:
        """The candidate pairs of boxes first .. last - 1: (P,) sorted positions, (P,) boxes."""
        start, length, seg_box = self._segments(first, last)
        nonempty = (length > 0).nonzero().squeeze(1)
        start, length, seg_box = start[nonempty], length[nonempty], seg_box[nonempty]
        if start.numel() == 0:
            return start, seg_box
        offset = length.cumsum(0) - length  # (S,) first pair of each segment
        num_pairs = int(offset[-1] + length[-1])
        # Positions as a running sum of steps: 1 within a segment, and at a segment's first
        # pair the jump from the previous segment's last anchor (twice as fast as expanding
        # segment numbers with repeat_interleave and gathering).
        jump = start.clone()
        jump[1:] -= start[:-1] + length[:-1] - 1
        pos = torch.ones(num_pairs, dtype=torch.int64).index_copy_(0, offset, jump).cumsum_(0)
        box_jump = seg_box.clone()
        box_jump[1:] -= seg_box[:-1]
        box = torch.zeros(num_pairs, dtype=torch.int64).index_copy_(0, offset, box_jump)
        return pos, box.cumsum_(0)

    def _segments(self, first: int, last: int) -> tuple[Tensor, Tensor, Tensor]:
        """(S,) start positions, lengths and boxes of the segments of boxes first .. last - 1."""
        ix = self.index
        k = ix.num_classes
        col_lo = self.col_lo[first:last].reshape(-1)  # (Q,)
        num_cols = (self.col_hi[first:last].reshape(-1) - col_lo).clamp(min=0)
        num_cols *= self.row_hi[first:last].reshape(-1) > self.row_lo[first:last].reshape(-1)
        query = torch.repeat_interleave(num_cols)  # (S,)
        col = col_lo[query] + torch.arange(query.numel()) - (num_cols.cumsum(0) - num_cols)[query]
        row_lo = self.row_lo[first:last].reshape(-1)[query]
        row_hi = self.row_hi[first:last].reshape(-1)[query]
        base = ix.col_begin[col]
        start, end = base + row_lo, base + row_hi
        if int(ix.irregular[-1]):  # some columns need a binary search for their rows
            odd = (ix.irregular[col + 1] > ix.irregular[col]).nonzero().squeeze(1)
            key = col[odd] * ix.rows_max
            start[odd] = torch.searchsorted(ix.sorted_keys, key + row_lo[odd])
            end[odd] = torch.searchsorted(ix.sorted_keys, key + row_hi[odd])
        return start, end - start, torch.div(query, k, rounding_mode="floor") + first


def plan_candidates(index: AnchorIndex, boxes: Tensor) -> CandidatePlan:
    """(M, 4) xyxy boxes (the anchors' dtype, finite) -> their CandidatePlan."""
    if index.num_classes == 0 or boxes.shape[0] == 0:  # nothing to search
        none = torch.zeros((boxes.shape[0], 0), dtype=torch.long)
        count = torch.zeros(boxes.shape[0], dtype=torch.long)
        return CandidatePlan(index, none, none, none, none, count, count)
    b = boxes.double()
    k = torch.arange(index.num_classes)
    nx, ny = index.xs.numel(), index.ys.numel()

    def lower(c1: Tensor, size: Tensor) -> Tensor:  # (M,), (K,) -> (M, K): c1 - size, widened
        low = c1[:, None] - size[None, :]
        return low - _RELATIVE_SLACK * (c1.abs()[:, None] + size[None, :])

    # ranks of the first x1 >= gx1 - W_k and of the first x1 >= gx2, then the class's columns
    x_lo = torch.searchsorted(index.xs, lower(b[:, 0], index.max_w))  # (M, K)
    x_hi = torch.searchsorted(index.xs, b[:, 2].contiguous())[:, None]  # (M, 1)
    col_lo = torch.searchsorted(index.column_keys, k * nx + x_lo)
    col_hi = torch.searchsorted(index.column_keys, k * nx + x_hi)
    y_lo = torch.searchsorted(index.ys, lower(b[:, 1], index.max_h))
    y_hi = torch.searchsorted(index.ys, b[:, 3].contiguous())[:, None]
    first_row = index.class_rows[:-1]
    row_lo = torch.searchsorted(index.row_keys, k * ny + y_lo) - first_row
    row_hi = torch.searchsorted(index.row_keys, k * ny + y_hi) - first_row

    num_cols = (col_hi - col_lo).clamp(min=0) * (row_hi > row_lo)  # (M, K)
    regular = index.irregular[col_hi] == index.irregular[col_lo]
    # regular columns: exactly num_cols * rows; otherwise every anchor of the columns
    span = index.col_begin[col_hi] - index.col_begin[col_lo.clamp(max=col_hi)]
    pairs = torch.where(regular, num_cols * (row_hi - row_lo).clamp(min=0), span)
    return CandidatePlan(
        index=index,
        col_lo=col_lo,
        col_hi=col_hi,
        row_lo=row_lo,
        row_hi=row_hi,
        segments=num_cols.sum(1),
        pairs_bound=(pairs * (num_cols > 0)).sum(1),
    )
