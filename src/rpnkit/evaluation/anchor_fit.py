"""Anchor diagnostics: how well a dataset's boxes can be covered by an anchor configuration, and
anchors fitted to the dataset.

A GT box's best-anchor IoU is the upper bound of what the RPN can be taught for it: below the
matcher's 0.7 it only gets a positive through the low-quality rule, below 0.3 that positive is
an anchor that hardly overlaps it. Boxes are taken as the training pipeline sees them (resized
to the training scale); size ranges use COCO's areas in original pixels.

Scale: when many boxes are under half the smallest anchor's side at training scale (no anchor
reaches 0.25 IoU with them), ``scale_advice`` says so and recommends a scale that brings them
to it: native-resolution tiles (``--tile-size``) when the objects are large enough in the
original pixels, or a longer shorter side (with a cap on the longer side that lets it apply:
``max_size`` stops the resize of wide images, and the advice says when it already does).

Fitting: anchors in the preset's layout (each level keeps its number of sizes, one on an FPN
level, and of ratios; the sizes increase with the stride, level after level; the levels share
the ratios, h / w in ``RATIO_RANGE``), so the model's head keeps its shape. A coordinate ascent
over the sizes and ratios, from the preset's anchors and from a k-means start (distance 1 -
IoU of boxes sharing a centre, as YOLOv2), maximises the boxes whose best anchor reaches the
RPN's positive IoU, scored on the anchor grids themselves, and may not leave any COCO size
range with fewer boxes reached at any of ``THRESHOLDS`` than the preset's anchors reach (counts
per range: a box may trade places with another of its range). When nothing beats the preset,
its anchors are kept and the report says so.

Shape glossary:
    N: GT boxes    L: levels    M: fitted sizes, over all levels    R: ratios
    C: candidate values of one size or ratio    G: COCO size ranges    T: IoU thresholds
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from ..config import config_to_dict
from ..data.config import none_readable
from ..data.records import DatasetIndex
from ..data.transforms import DEFAULT_MAX_SIZE, DEFAULT_SHORT_SIDE, resize_scale, resized_size
from ..modeling.anchors import AnchorConfig, LevelAnchors, base_anchors
from ..modeling.presets import ModelConfig
from ..modeling.rpn import RPNConfig
from ..modeling.sizes import SIZE_DIVISIBLE, feature_sizes, padded_size
from .recall import AREA_RANGES

THRESHOLDS = (0.7, 0.5, 0.3)


@dataclass
class GTSample:
    """Every usable (non-ignore) GT box of a dataset at training scale: ``boxes`` (N, 4) xyxy,
    ``areas`` (N,) original-pixel areas, ``image`` (N,) index into ``files`` and ``sizes``
    ((height, width) of each resized image)."""

    boxes: np.ndarray
    areas: np.ndarray
    image: np.ndarray
    files: list[str]
    sizes: list[tuple[int, int]]
    scales: list[float] = dataclasses.field(default_factory=list)  # resize factor per image
    originals: list[tuple[int, int]] = dataclasses.field(default_factory=list)  # (h, w) read


def collect_gt(
    index: DatasetIndex,
    *,
    short: int = DEFAULT_SHORT_SIDE,
    max_size: int = DEFAULT_MAX_SIZE,
    tile_size: int | None = None,
) -> GTSample:
    """The boxes as training sees them: resized, or with ``tile_size`` at native resolution
    for the images larger than a tile (``data.tiling``; anchors cover the whole image)."""
    boxes, areas, image, files, sizes, scales, originals = [], [], [], [], [], [], []
    for i, r in enumerate(index.records):
        scale = resize_scale(r.height, r.width, short, max_size)
        if tile_size is not None and max(r.height, r.width) > tile_size:
            scale = 1.0
        keep = ~r.ignore
        boxes.append(r.boxes[keep] * scale)
        areas.append(r.areas[keep])
        image.append(np.full(int(keep.sum()), i))
        files.append(r.file_name)
        sizes.append(resized_size(r.height, r.width, scale))
        scales.append(scale)
        originals.append((r.height, r.width))
    return GTSample(
        np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32),
        np.concatenate(areas) if areas else np.zeros(0, np.float32),
        np.concatenate(image) if image else np.zeros(0, np.int64),
        files,
        sizes,
        scales,
        originals,
    )


# a box under half the smallest anchor's side has IoU < 0.25 with it, under the matcher's 0.3
TOO_SMALL = 0.5
ADVISE_FRACTION = 0.1  # advise when at least this share of the boxes is too small
TARGET = 1 / math.sqrt(2)  # bring the 10th-percentile box to this fraction of the anchor


def smallest_anchor(config: AnchorConfig) -> float:
    """The side (square root of the area) of the configuration's smallest anchor."""
    sides = [math.sqrt(w * h) for lv in config.levels for w, h in lv.shapes]
    sides += [float(s) for lv in config.levels for s in lv.sizes if not lv.shapes]
    return min(sides)


def scale_advice(
    config: AnchorConfig,
    sample: GTSample,
    *,
    short: int,
    max_size: int | None = None,
    tile_size: int | None = None,
) -> str | None:
    """One paragraph when at least ``ADVISE_FRACTION`` of the boxes are under ``TOO_SMALL``
    of the smallest anchor's side at training scale, recommending a tile size or a resize
    (a shorter side, and the cap on the longer side that lets it apply: ``max_size`` limits
    the resize of wide images) that brings the 10th-percentile box to ``TARGET`` of it; None
    when they fit."""
    if len(sample.boxes) == 0:
        return None
    anchor = smallest_anchor(config)
    wh = (sample.boxes[:, 2:] - sample.boxes[:, :2]).clip(min=1e-6)
    sides = np.sqrt(wh.prod(axis=1))  # at training scale
    small = float((sides < TOO_SMALL * anchor).mean())
    if small < ADVISE_FRACTION:
        return None
    scales = np.asarray(sample.scales or [1.0] * len(sample.sizes))
    typical = float(np.percentile(sides / scales[sample.image], 10))  # original pixels
    needed = TARGET * anchor / typical  # the resize factor that brings it to the anchor
    text = (
        f"objects too small for the anchors: {small:.0%} of the boxes are under half the "
        f"smallest anchor ({anchor:.0f} px) at this scale (10% of them are under {typical:.1f} "
        f"px in original pixels)."
    )
    resize, capped = _resize_advice(sample, needed, short, max_size)
    text += capped if tile_size is None else ""  # tiled, large images keep their own size
    if needed <= 1 and tile_size is None:
        tile = max(SIZE_DIVISIBLE, min(1024, short // SIZE_DIVISIBLE * SIZE_DIVISIBLE))
        return (
            f"{text} They are large enough at native resolution: train and infer on tiles "
            f"(rpnkit train --tile-size {tile}; propose/detect/eval --tile-size {tile}), or "
            f"resize to {resize}."
        )
    return (
        f"{text} Even native resolution is too coarse for them: upscale about {needed:.1f}x "
        f"the original, to {resize}, or fit smaller anchors (--fit)."
    )


def _padded_side(value: float) -> int:
    """``value`` pixels rounded up to a whole padding block, as a batch is padded."""
    return padded_size(math.ceil(value), 1)[0]


def _resize_advice(
    sample: GTSample, needed: float, short: int, max_size: int | None
) -> tuple[str, str]:
    """The resize that scales the median box's image by ``needed``: a shorter side, with a
    cap on the longer side that lets it apply when ``max_size`` would stop it; and a note when
    ``max_size`` already caps the resize asked for (that image's shorter side is then less
    than ``short``: a larger ``short`` alone would change nothing). Images count by their
    boxes: the one large image holding most of them sets the advice, not the many small ones
    around it."""
    resized = np.array(sample.sizes, dtype=np.float64).reshape(-1, 2)  # (I, 2) h, w
    if sample.originals:
        original = np.array(sample.originals, dtype=np.float64).reshape(-1, 2)
    else:  # a sample made by hand: the sizes read back from the resize
        original = resized / np.asarray(sample.scales or [1.0] * len(resized))[:, None]
    original, resized = original[sample.image], resized[sample.image]  # one row per box
    shorts, longs = original.min(axis=1), original.max(axis=1)
    short_needed = _padded_side(float(np.median(shorts)) * needed)
    long_needed = _padded_side(short_needed * float(np.median(longs / shorts)))
    if max_size is not None and long_needed > max_size:
        advice = (
            f"a shorter side of {short_needed} with the longer side up to {long_needed} "
            f"(--short-side {short_needed} --max-size {long_needed})"
        )
    else:
        advice = f"a shorter side of {short_needed} (--short-side {short_needed})"
    median_short = float(np.median(resized.min(axis=1)))
    if max_size is None or median_short >= short - 1:  # rounding: a pixel less
        return advice, ""
    note = (
        f" --max-size {max_size} caps the resize: the median box's image has a shorter side of "
        f"{median_short:.0f} px, not the {short} of --short-side."
    )
    return advice, note


def _box_placement(config: AnchorConfig, sample: GTSample) -> tuple[np.ndarray, list[np.ndarray]]:
    """The boxes' (N, 2) widths and heights and, per level, (N, 2) the x and y distances from
    each box's centre to the nearest anchor centre of its padded image's grid."""
    boxes = sample.boxes.astype(np.float64).reshape(-1, 4)
    wh = (boxes[:, 2:] - boxes[:, :2]).clip(min=0)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2  # (N, 2) x, y
    cells = [feature_sizes(h, w, config.strides) for h, w in sample.sizes]  # padded as collate
    cells = np.array(cells, dtype=np.float64).reshape(-1, len(config.strides), 2)  # (I, L, 2)
    offsets = []
    for level, stride in enumerate(config.strides):
        last = cells[sample.image, level, ::-1] - 1  # (N, 2) the last column and row
        nearest = np.clip(np.round(centre / stride - config.offset), 0, last)
        offsets.append(np.abs(centre - (nearest + config.offset) * stride))
    return wh, offsets


def _centred_iou(wh: np.ndarray, offsets: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    """(N, 2) box widths and heights, (N, 2) x and y distances of each box's centre from the
    anchors' and (K, 2) anchor widths and heights -> (N, K) IoU."""
    inter = np.ones((len(wh), len(shapes)))
    for axis in (0, 1):  # x, then y
        box, anchor = wh[:, axis, None], shapes[None, :, axis]  # (N, 1), (1, K)
        # the overlap of two segments: the shorter one, or what their distance leaves of them
        overlap = np.minimum(np.minimum(box, anchor), (box + anchor) / 2 - offsets[:, axis, None])
        inter *= overlap.clip(min=0)
    union = (wh[:, 0] * wh[:, 1])[:, None] + (shapes[:, 0] * shapes[:, 1])[None] - inter
    return inter / union


def best_anchor_iou(config: AnchorConfig, sample: GTSample, *, chunk: int = 1 << 16) -> np.ndarray:
    """(N,) each GT box's best IoU with the anchors of its (padded) image. The overlap of two
    boxes only shrinks as their centres part in x or in y, so on every level the best anchor of
    each shape is the one centred nearest the box: no grid of anchors is built."""
    wh, offsets = _box_placement(config, sample)
    best = np.zeros(len(wh))
    for level, apart in zip(config.levels, offsets):
        base = base_anchors(level, round_base=config.round_base).double().numpy()  # (A_l, 4)
        shapes = base[:, 2:] - base[:, :2]  # (A_l, 2) as the generator makes them
        for start in range(0, len(wh), chunk):  # bounded memory
            rows = slice(start, start + chunk)
            iou = _centred_iou(wh[rows], apart[rows], shapes)
            best[rows] = np.maximum(best[rows], iou.max(axis=1))
    return best.astype(np.float32)


def coverage_table(sample: GTSample, best: np.ndarray) -> dict[str, dict[str, float | None]]:
    """Per COCO size range: the number of boxes and the fraction whose best anchor reaches each
    threshold (None for a range without boxes)."""
    table = {}
    for name, (lo, hi) in AREA_RANGES.items():
        sel = (sample.areas >= lo) & (sample.areas <= hi)
        row: dict[str, float | None] = {"count": int(sel.sum())}
        for t in THRESHOLDS:
            row[f">={t}"] = float((best[sel] >= t).mean()) if sel.any() else None
        table[name] = row
    return table


def format_coverage(table: dict[str, dict[str, float]]) -> str:
    lines = [f"{'size':<8}{'boxes':>7}" + "".join(f"{'IoU>=' + str(t):>10}" for t in THRESHOLDS)]
    for name, row in table.items():
        cells = "".join(
            f"{row[f'>={t}']:10.3f}" if row[f">={t}"] is not None else f"{'-':>10}"
            for t in THRESHOLDS
        )
        lines.append(f"{name:<8}{row['count']:>7}{cells}")
    return "\n".join(lines)


def unmatched(sample: GTSample, best: np.ndarray, threshold: float = 0.3) -> list[dict]:
    """The boxes whose best anchor stays below ``threshold``, worst first."""
    out = []
    for j in np.argsort(best):
        if best[j] >= threshold:
            break
        x1, y1, x2, y2 = (float(v) for v in sample.boxes[j])
        out.append(
            {
                "file": sample.files[int(sample.image[j])],
                "box_at_training_scale": [round(x1, 1), round(y1, 1), round(x2, 1), round(y2, 1)],
                "best_iou": round(float(best[j]), 3),
            }
        )
    return out


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


def match_threshold(rpn: RPNConfig) -> float:
    """The IoU at which the RPN makes an anchor a positive: ``fg_iou_threshold``, or OLN's
    ``localization.iou_threshold``."""
    if rpn.objectness_mode == "localization":
        return rpn.localization.iou_threshold
    return rpn.fg_iou_threshold


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
    level (N, 2), see ``_box_placement``), the level of each fitted size (``level_of`` (M,),
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
        iou = _centred_iou(self.wh, self.offsets[level], shapes)
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
    wh, offsets = _box_placement(config, sample)
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


def describe_anchors(config: AnchorConfig) -> str:
    """One line per level: its sizes and ratios (h / w), then every anchor's width x height."""
    lines = []
    for lv in config.levels:
        if lv.shapes:
            shapes = ", ".join(f"{w:g}x{h:g}" for w, h in lv.shapes)
        else:
            shapes = ", ".join(
                f"{s / math.sqrt(r):.0f}x{s * math.sqrt(r):.0f}"
                for r in lv.ratios
                for s in lv.sizes
            )
            size = "size" if len(lv.sizes) == 1 else "sizes"
            sizes, ratios = (
                ", ".join(f"{v:g}" for v in values) for values in (lv.sizes, lv.ratios)
            )
            shapes = f"{size} {sizes} at ratios {ratios}: {shapes}"
        lines.append(f"  stride {lv.stride:>3}: {shapes}")
    return "\n".join(lines)


@dataclass
class AnchorReport:
    """``rpnkit anchors``: a preset's anchor coverage of a dataset at training scale, the boxes
    no anchor covers, and optionally anchors fitted to the dataset with their coverage."""

    model: ModelConfig
    short_side: int
    threshold: float
    num_boxes: int
    coverage: dict
    unmatched: list[dict]
    fitted: AnchorConfig | None = None
    coverage_fitted: dict | None = None
    advice: str | None = None  # scale_advice: the objects are too small for the anchors
    tile_size: int | None = None  # images larger than this were taken at native resolution
    max_size: int | None = None  # the cap on the longer side of the resize
    source: str | None = None  # the config file the anchors come from (None: the preset's)
    fit_iou: float | None = None  # the RPN's positive IoU, which the fit maximises the boxes at
    matched: dict | None = None  # boxes at fit_iou: {"preset": n, "fitted": n}

    @property
    def fit_improved(self) -> bool:
        """Whether the fit beat the anchors checked (else ``fitted`` is them, unchanged)."""
        return self.fitted is not None and self.fitted != self.model.rpn.anchors

    def fitted_model(self) -> ModelConfig:
        """The preset's config with the fitted anchors (for ``rpnkit train --config``)."""
        if self.fitted is None:
            raise ValueError("no fitted anchors: build the report with fit=True")
        rpn = dataclasses.replace(self.model.rpn, anchors=self.fitted)
        return dataclasses.replace(self.model, rpn=rpn)

    def to_dict(self) -> dict:
        out = {"preset": self.model.preset, "coverage": self.coverage, "unmatched": self.unmatched}
        out["advice"] = self.advice
        if self.fitted is not None:
            out["fitted_anchors"] = config_to_dict(self.fitted)
            out["coverage_fitted"] = self.coverage_fitted
            out["fit"] = {"iou": self.fit_iou, "boxes_matched": self.matched}
            out["fit"]["improved"] = self.fit_improved
        return out

    def format(self, show: int = 20) -> str:
        anchors = self.model.rpn.anchors
        whose = f"preset {self.model.preset}"
        whose = f"{self.source} ({whose})" if self.source is not None else whose
        lines = [
            f"\nanchors of {whose}:\n{describe_anchors(anchors)}",
            f"\nbest-anchor IoU of {self.num_boxes} GT boxes at training scale (shorter side "
            f"{self.short_side}"
            + (f", longer side at most {self.max_size}" if self.max_size else "")
            + (f"; native in images over {self.tile_size} px, tiled" if self.tile_size else "")
            + "): the upper bound of what the RPN can be taught",
            format_coverage(self.coverage),
            f"\n{len(self.unmatched)} box(es) with no anchor at IoU >= {self.threshold}"
            + (":" if self.unmatched else ""),
        ]
        for row in self.unmatched[:show]:
            lines.append(
                f"  {row['file']}: box {row['box_at_training_scale']} best IoU {row['best_iou']}"
            )
        if len(self.unmatched) > show:
            lines.append(f"  ... and {len(self.unmatched) - show} more (all in --json)")
        if self.advice is not None:
            lines.append(f"\n{self.advice}")
        if self.fitted is not None:
            lines += self._format_fit()
        return "\n".join(lines)

    def _format_fit(self) -> list[str]:
        n, iou = self.num_boxes, f"IoU >= {self.fit_iou:g} (the RPN's positive IoU)"
        before, after = self.matched["preset"], self.matched["fitted"]
        levels = ", ".join(f"{t:g}" for t in sorted(set(THRESHOLDS) | {self.fit_iou}))
        kept = f"no size range with fewer boxes at IoU >= {levels}"
        if not self.fit_improved:
            return [
                f"\nno fitted anchors beat the ones above: none found match more than their "
                f"{before} of {n} boxes at {iou} with {kept}. Keeping them."
            ]
        return [
            f"\nfitted anchors: {after} of {n} boxes at {iou}, against {before} for the ones "
            f"above, {kept}; in their layout (sizes increasing with the stride, "
            "ratios h / w shared by the levels):",
            describe_anchors(self.fitted),
            format_coverage(self.coverage_fitted),
        ]


def anchor_report(
    model: ModelConfig,
    index: DatasetIndex,
    *,
    short: int = DEFAULT_SHORT_SIDE,
    max_size: int = DEFAULT_MAX_SIZE,
    threshold: float = 0.3,
    fit: bool = False,
    seed: int = 0,
    tile_size: int | None = None,
    source: str | None = None,
) -> AnchorReport:
    """Coverage of ``index``'s boxes by ``model``'s anchors (at native resolution in the
    images larger than ``tile_size``, when tiled) and, with ``fit``, by anchors fitted to
    them; advice when the objects are too small for the anchors at that scale. ``source``:
    the config file ``model`` was read from, named in the report. A ValueError naming the
    dataset when it has no box to measure (no readable image, or none with a box)."""
    sample = collect_gt(index, short=short, max_size=max_size, tile_size=tile_size)
    if len(sample.boxes) == 0:
        raise ValueError(_no_boxes(index))
    best = best_anchor_iou(model.rpn.anchors, sample)
    report = AnchorReport(
        model,
        short,
        threshold,
        len(best),
        coverage_table(sample, best),
        unmatched(sample, best, threshold),
        advice=scale_advice(
            model.rpn.anchors, sample, short=short, max_size=max_size, tile_size=tile_size
        ),
        tile_size=tile_size,
        max_size=max_size,
        source=source,
    )
    if fit:
        iou = match_threshold(model.rpn)
        report.fitted = fit_anchors(
            model.rpn.anchors,
            sample,
            threshold=iou,
            seed=seed,
            same_scale=model.cascade is not None,
        )
        fitted = best_anchor_iou(report.fitted, sample)
        report.coverage_fitted = coverage_table(sample, fitted)
        report.fit_iou = iou
        report.matched = {"preset": int((best >= iou).sum()), "fitted": int((fitted >= iou).sum())}
    return report


def _no_boxes(index: DatasetIndex) -> str:
    """Why a dataset gives no box to measure the anchors on: no image was read (the first
    skip, and where a CSV's images are looked for), or its images have no (usable) box."""
    if not index.records:
        return none_readable(index, None) + " (no box to check the anchors on)"
    return (
        f"{index.source}: none of its {len(index.records)} image(s) has a box (crowd regions "
        "not counted): no box to check the anchors on"
    )
