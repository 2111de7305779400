"""Anchors fitted to a dataset's boxes: ``fit_anchors`` and the search behind it, and
``kmeans_iou``.

Anchors in the preset's layout (each level keeps its number of sizes, one on an FPN level, and
of ratios; the sizes increase with the stride, level after level; the levels share the ratios,
h / w in ``RATIO_RANGE``), so the model's head keeps its shape. A coordinate ascent over the
sizes and ratios, from the preset's anchors and from a k-means start (distance 1 - IoU of
boxes sharing a centre, as YOLOv2), maximises the boxes whose best anchor reaches the RPN's
positive IoU, scored on the anchor grids themselves, and may not leave any COCO size range
with fewer boxes reached at any of ``THRESHOLDS`` than the preset's anchors reach (counts per
range: a box may trade places with another of its range). When nothing beats the preset, its
anchors are kept.

Shape glossary:
    N: GT boxes    L: levels    M: fitted sizes, over all levels    S: sizes of one level
    R: ratios    C: candidate values of one size or ratio    K: k-means centres
    G: COCO size ranges    T: IoU thresholds
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..modeling.anchors import AnchorConfig, LevelAnchors
from .anchor_coverage import THRESHOLDS, GTSample, best_anchor_iou, box_placement, centred_iou
from .recall import AREA_RANGES


def _wh_iou(wh: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(N, 2), (K, 2) widths and heights of boxes sharing a centre -> (N, K) IoU."""
    inter = np.minimum(wh[:, None, 0], centres[None, :, 0]) * np.minimum(
        wh[:, None, 1], centres[None, :, 1]
    )
    area = wh[:, 0:1] * wh[:, 1:2] + (centres[:, 0] * centres[:, 1])[None, :]
    return inter / (area - inter)


def kmeans_iou(wh: np.ndarray, k: int, *, seed: int = 0, iterations: int = 300) -> np.ndarray:
    """k-means over (width, height) with distance 1 - IoU; k-means++ start; medians as centres.
    Returns (k, 2) centres sorted by area."""
    if len(wh) < k:
        raise ValueError(f"cannot fit {k} anchors to {len(wh)} boxes: need at least {k} boxes")
    rng = np.random.default_rng(seed)
    centres = [wh[rng.integers(len(wh))]]
    for _ in range(1, k):  # k-means++: far (in 1 - IoU) boxes are likelier new centres
        d = 1 - _wh_iou(wh, np.array(centres)).max(axis=1)
        centres.append(
            wh[rng.choice(len(wh), p=d / d.sum()) if d.sum() > 0 else rng.integers(len(wh))]
        )
    centres = np.array(centres, dtype=np.float64)
    assign = None
    for _ in range(iterations):
        new = _wh_iou(wh, centres).argmax(axis=1)
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        for c in range(k):
            members = wh[assign == c]
            if len(members):
                centres[c] = np.median(members, axis=0)
    return centres[np.argsort(centres[:, 0] * centres[:, 1])]


def _level_scale(level: LevelAnchors) -> float:
    if level.shapes:
        return float(np.exp(np.mean([0.5 * np.log(w * h) for w, h in level.shapes])))
    return float(np.exp(np.mean(np.log(level.sizes))))


SIZE_STEP = 2**0.25  # fitted sizes increase by at least this factor, level after level
RATIO_STEP = 2**0.25  # and the ratios too
RATIO_RANGE = (0.25, 4.0)  # h / w; YOLO's k-means anchors for COCO span about 0.5-2.5
MIN_SIDE = 2.0  # px, the smallest fitted size
SIZE_DECIMALS, RATIO_DECIMALS = 1, 2  # the fitted config's sizes in px and ratios
GRID = 24  # candidate values of a size or ratio per sweep
SWEEPS = 8
PENALTIES = (0.25, 1.0, 4.0, 16.0)  # per box lost, in the annealed ascents before the full one
SEARCH_BOXES = 20_000  # the search scores a seeded sample of this many boxes; the check all


def _anchor_shapes(sizes: np.ndarray, ratios: np.ndarray, round_base: bool) -> np.ndarray:
    """(S,), (R,) -> (S, R, 2) widths and heights, as ``base_anchors`` makes them."""
    w = sizes[:, None] / np.sqrt(ratios)[None]  # (S, R)
    h = sizes[:, None] * np.sqrt(ratios)[None]
    shapes = np.stack([w, h], axis=2)
    return 2 * np.round(shapes / 2) if round_base else shapes


@dataclass
class _Search:
    """What the fit scores: boxes (``wh`` (N, 2)) placed on each level's grid (``offsets``, per
    level (N, 2), see ``box_placement``), the level of each fitted size (``level_of`` (M,),
    level-major), the IoU at which a box counts as matched, the boxes of each COCO size range
    (``groups`` (G, N)) and ``floor`` (T, G): the boxes the preset's anchors reach at each of
    ``THRESHOLDS`` (and ``threshold``) in each range, which the fit must keep."""

    wh: np.ndarray
    offsets: list[np.ndarray]
    level_of: np.ndarray
    threshold: float
    round_base: bool
    groups: np.ndarray
    floor: np.ndarray
    penalty: float | None = None  # per box short of floor; None: N + 1

    def level_iou(self, level: int, sizes: np.ndarray, ratios: np.ndarray) -> np.ndarray:
        """(N, S, R) IoU of each box with the level's nearest anchor of each size and ratio."""
        shapes = _anchor_shapes(sizes, ratios, self.round_base).reshape(-1, 2)  # (S*R, 2)
        iou = centred_iou(self.wh, self.offsets[level], shapes)
        return iou.reshape(len(self.wh), len(sizes), len(ratios))  # (N, S*R) -> (N, S, R)

    def table(self, sizes: np.ndarray, ratios: np.ndarray) -> np.ndarray:
        """(N, M, R) IoU of each box with each fitted size (on its level) at each ratio."""
        per_level = [
            self.level_iou(level, sizes[self.level_of == level], ratios)
            for level in range(len(self.offsets))
        ]
        return np.concatenate(per_level, axis=1)

    def score(self, best: np.ndarray) -> np.ndarray:
        """(N, C) best IoUs of C candidates -> (C,) the boxes matched, plus their mean best IoU
        (under 1: it only breaks ties), less ``penalty`` for every box short of ``floor`` (by
        default N + 1: any loss there outweighs every gain)."""
        reached = _reached(self.groups, best, self.threshold)  # (T, G, C)
        shortfall = (self.floor[..., None] - reached).clip(min=0).sum(axis=(0, 1))
        matched = (best >= self.threshold).sum(axis=0)
        penalty = len(best) + 1 if self.penalty is None else self.penalty
        return matched + best.mean(axis=0) - penalty * shortfall


def _reached(groups: np.ndarray, best: np.ndarray, threshold: float) -> np.ndarray:
    """(G, N) boxes of each size range, (N, ...) best IoUs -> (T, G, ...) the boxes of each
    range whose best IoU reaches each of ``THRESHOLDS`` and ``threshold``."""
    thresholds = sorted(set(THRESHOLDS) | {threshold})
    flat = best.reshape(len(best), -1)  # (N, ...) -> (N, C)
    counts = [groups.astype(np.int64) @ (flat >= t) for t in thresholds]  # (G, C) each
    return np.stack(counts).reshape(len(thresholds), len(groups), *best.shape[1:])


def _candidates(values: np.ndarray, i: int, step: float, bounds: tuple, decimals: int):
    """Values for ``values[i]`` that keep ``values`` increasing by ``step``: the current one
    first (ties keep it), a grid between the neighbours and a fine one around it, rounded to
    ``decimals`` as the fitted config keeps them."""
    lo = values[i - 1] * step if i > 0 else bounds[0]
    hi = values[i + 1] / step if i + 1 < len(values) else bounds[1]
    grid = np.geomspace(lo, hi, GRID) if lo < hi else np.zeros(0)
    fine = values[i] * 2.0 ** (np.arange(-4, 5) / 64)
    found = np.round(np.concatenate([grid, fine]), decimals)
    found = found[(found >= lo) & (found <= hi)]
    return np.concatenate([values[i : i + 1], found])


def _take_best(values: np.ndarray, i: int, candidates: np.ndarray, scores: np.ndarray) -> bool:
    best = int(np.argmax(scores))  # the first of equals: the current value on a tie
    values[i] = candidates[best]
    return best != 0


def _descend(search: _Search, sizes: np.ndarray, ratios: np.ndarray, bounds) -> tuple:
    """Coordinate ascent of ``search.score``: each size, then each ratio, set to its best
    value between its neighbours' (both stay increasing), until a sweep changes nothing."""
    sizes, ratios = sizes.copy(), ratios.copy()
    levels = range(len(search.offsets))
    for _ in range(SWEEPS):
        changed = False
        for i in range(len(sizes)):
            others = np.delete(search.table(sizes, ratios), i, axis=1)  # (N, M-1, R)
            rest = others.max(axis=(1, 2), initial=0.0)  # (N,) without size i
            values = _candidates(sizes, i, SIZE_STEP, bounds[0], SIZE_DECIMALS)
            trial = search.level_iou(search.level_of[i], values, ratios).max(axis=2)  # (N, C)
            changed |= _take_best(sizes, i, values, search.score(np.maximum(rest[:, None], trial)))
        for j in range(len(ratios)):
            others = np.delete(search.table(sizes, ratios), j, axis=2)  # (N, M, R-1)
            rest = others.max(axis=(1, 2), initial=0.0)  # (N,) without ratio j
            values = _candidates(ratios, j, RATIO_STEP, bounds[1], RATIO_DECIMALS)
            trial = np.max(  # (L, N, S_l, C) -> (L, N, C) -> (N, C)
                [
                    search.level_iou(lv, sizes[search.level_of == lv], values).max(1)
                    for lv in levels
                ],
                axis=0,
            )
            changed |= _take_best(ratios, j, values, search.score(np.maximum(rest[:, None], trial)))
        if not changed:
            break
    best = search.table(sizes, ratios).max(axis=(1, 2), initial=0.0)
    return sizes, ratios, float(search.score(best[:, None])[0])


def _increasing(values, step: float) -> np.ndarray:
    """Sorted, each at least ``step`` times the one before it."""
    out = np.sort(np.asarray(values, dtype=np.float64))
    for i in range(1, len(out)):
        out[i] = max(out[i], out[i - 1] * step)
    return out


def _layout(config: AnchorConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``config``'s sizes (M,) level-major, the level of each (M,) and the ratios (R,) its
    levels share (a level of explicit shapes: one size, their mean scale, and their h / w)."""
    sizes, level_of, ratios = [], [], []
    for i, level in enumerate(config.levels):
        if level.shapes:
            own = [_level_scale(level)]
            ratios.append(sorted(h / w for w, h in level.shapes))
        else:
            own = sorted(level.sizes)
            ratios.append(sorted(level.ratios))
        sizes += own
        level_of += [i] * len(own)
    if len({len(r) for r in ratios}) > 1:
        raise ValueError(
            "anchors are fitted with one set of ratios for every level, but these levels have "
            f"{[len(r) for r in ratios]} ratios (or shapes) each"
        )
    shared = np.exp(np.log(np.array(ratios)).mean(axis=0))  # (L, R) -> (R,)
    return np.asarray(sizes, np.float64), np.asarray(level_of), shared


def _search(search: _Search, sizes: np.ndarray, ratios: np.ndarray, seed: int) -> tuple:
    """The best of the coordinate ascents from the preset's sizes and ratios and from a k-means
    start (sizes: the clusters' scales; ratios: quantiles of the boxes' h / w), each ascent
    plain and annealed; the bounds of the sizes reach from half the smallest box (at least
    ``MIN_SIDE``) to twice the largest."""
    starts = [(_increasing(sizes, SIZE_STEP), _increasing(ratios, RATIO_STEP))]
    if len(search.wh) >= len(sizes):
        centres = kmeans_iou(search.wh, len(sizes), seed=seed)  # (M, 2) by area
        aspect = search.wh[:, 1] / search.wh[:, 0]
        quantiles = np.quantile(aspect, (np.arange(len(ratios)) + 0.5) / len(ratios))
        starts.append(
            (
                _increasing(np.sqrt(centres.prod(axis=1)).clip(min=MIN_SIDE), SIZE_STEP),
                _increasing(quantiles.clip(*RATIO_RANGE), RATIO_STEP),
            )
        )
    sides = np.sqrt(search.wh.prod(axis=1))
    all_sizes = np.concatenate([s for s, _ in starts])
    all_ratios = np.concatenate([r for _, r in starts])
    bounds = (
        (
            min(max(MIN_SIDE, 0.5 * sides.min()), all_sizes.min()),
            max(2 * sides.max(), all_sizes.max()),
        ),
        (min(RATIO_RANGE[0], all_ratios.min()), max(RATIO_RANGE[1], all_ratios.max())),
    )
    results = [_descend(search, s, r, bounds) for s, r in starts]
    results += [_anneal(search, s, r, bounds) for s, r in starts]
    sizes, ratios, _ = max(results, key=lambda result: result[2])  # the first of equals
    return sizes, ratios


def _anneal(search: _Search, sizes: np.ndarray, ratios: np.ndarray, bounds) -> tuple:
    """Ascents with a growing price on the boxes lost (``PENALTIES``, then the full one): a
    loss that a later move makes good can be taken on the way, which an ascent that never
    loses a box cannot do."""
    for penalty in PENALTIES:
        sizes, ratios, _ = _descend(
            dataclasses.replace(search, penalty=penalty), sizes, ratios, bounds
        )
    return _descend(search, sizes, ratios, bounds)


def _same_scale(search: _Search, strides: list[int], scale: float) -> np.ndarray:
    """(L,) one size per level, the same number of strides on every level (a Cascade RPN's
    anchors, square): the best scale on a grid and then around it, ``scale`` on a tie. Scales
    are multiples of 1/8: size / stride gives the scale back exactly, as the Cascade RPN
    checks."""
    one = np.ones(1)

    def scores(scales: np.ndarray) -> np.ndarray:
        per_level = [  # (N, C, 1) -> (N, C) per level
            search.level_iou(level, scales * stride, one)[:, :, 0]
            for level, stride in enumerate(strides)
        ]
        return search.score(np.max(per_level, axis=0))

    eighths = np.geomspace(0.5, 32, 4 * GRID)
    scales = np.concatenate([[scale], np.round(eighths * 8) / 8])
    scale = scales[np.argmax(scores(scales))]
    scales = np.concatenate([[scale], np.round(scale * 2.0 ** (np.arange(-8, 9) / 64) * 8) / 8])
    return scales[np.argmax(scores(scales))] * np.asarray(strides, np.float64)


def _build(
    config: AnchorConfig, sizes, level_of: np.ndarray, ratios, decimals: int | None
) -> AnchorConfig:
    """``config`` with these sizes (M,) on their levels and these ratios on every level, sizes
    rounded to ``decimals`` (None: as they are)."""
    levels = tuple(
        LevelAnchors(
            stride=level.stride,
            sizes=tuple(
                float(s) if decimals is None else round(float(s), decimals)
                for s in sizes[level_of == i]
            ),
            ratios=tuple(round(float(r), RATIO_DECIMALS) for r in ratios),
        )
        for i, level in enumerate(config.levels)
    )
    return dataclasses.replace(config, levels=levels)


def fit_anchors(
    config: AnchorConfig,
    sample: GTSample,
    *,
    threshold: float = 0.7,
    seed: int = 0,
    same_scale: bool = False,
) -> AnchorConfig:
    """Anchors fitted to ``sample`` in ``config``'s layout: every level keeps its number of
    sizes (one on an FPN level) and of ratios, the sizes increase with the stride, level after
    level, and the levels share the ratios (h / w). With ``same_scale``, one square anchor per
    level, the same number of strides wide on all (a Cascade RPN's).

    The search maximises the boxes whose best anchor reaches ``threshold`` (the RPN's positive
    IoU; their mean best IoU breaks ties) without any COCO size range having fewer boxes at
    any of ``THRESHOLDS`` than ``config``'s anchors reach (counts per range); it starts from
    ``config``'s anchors and from a k-means one (``seed``, which also draws the boxes searched
    when there are over ``SEARCH_BOXES``). ``config`` itself comes back when the fit does not
    match more of ``sample``'s boxes at ``threshold`` or a range's count falls."""
    wh, offsets = box_placement(config, sample)
    groups = np.stack(
        [(sample.areas >= lo) & (sample.areas <= hi) for lo, hi in AREA_RANGES.values()]
    )
    before = best_anchor_iou(config, sample)
    rows = np.nonzero(wh.prod(axis=1) > 0)[0]  # a box without area matches nothing
    if len(rows) > SEARCH_BOXES:
        rows = np.random.default_rng(seed).choice(rows, SEARCH_BOXES, replace=False)
    if len(rows) == 0:
        return config
    sizes, level_of, ratios = _layout(config)
    floor = _reached(groups[:, rows], before[rows], threshold)  # (T, G)
    search = _Search(
        wh[rows], [o[rows] for o in offsets], level_of, threshold, config.round_base,
        groups[:, rows], floor,
    )  # fmt: skip
    if same_scale:
        if len(sizes) != len(config.levels):
            raise ValueError("same_scale fits one size per level: give one per level")
        scale = float(np.exp(np.mean(np.log(sizes / np.asarray(config.strides)))))
        sizes, ratios = _same_scale(search, config.strides, scale), np.ones(1)
    else:
        sizes, ratios = _search(search, sizes, ratios, seed)
    fitted = _build(config, sizes, level_of, ratios, None if same_scale else SIZE_DECIMALS)
    # the search saw a sample, rounded values come after it: check on every box
    after = best_anchor_iou(fitted, sample)
    kept = (_reached(groups, after, threshold) >= _reached(groups, before, threshold)).all()
    better = (after >= threshold).sum() > (before >= threshold).sum()
    return fitted if kept and better else config
