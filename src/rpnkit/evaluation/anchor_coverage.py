"""Anchor coverage of a dataset: each GT box's best IoU with an anchor configuration, per COCO
size range, the boxes no anchor covers, and advice when the objects are too small for the
anchors at training scale.

A GT box's best-anchor IoU is the upper bound of what the RPN can be taught for it: below the
matcher's 0.7 it only gets a positive through the low-quality rule, below 0.3 that positive is
an anchor that hardly overlaps it. Boxes are taken as the training pipeline sees them (resized
to the training scale); size ranges use COCO's areas in original pixels.

Scale: when many boxes are under half the smallest anchor's side at training scale (no anchor
reaches 0.25 IoU with them), ``scale_advice`` says so and recommends a scale that brings them
to it: native-resolution tiles (``--tile-size``) when the objects are large enough in the
original pixels, or a longer shorter side (with a cap on the longer side that lets it apply:
``max_size`` stops the resize of wide images, and the advice says when it already does).

Shape glossary:
    N: GT boxes    I: images    L: levels    K: anchor shapes    G: COCO size ranges
    T: IoU thresholds
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from ..data.records import DatasetIndex
from ..data.transforms import DEFAULT_MAX_SIZE, DEFAULT_SHORT_SIDE, resize_scale, resized_size
from ..modeling.anchors import AnchorConfig, base_anchors
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


def box_placement(config: AnchorConfig, sample: GTSample) -> tuple[np.ndarray, list[np.ndarray]]:
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


def centred_iou(wh: np.ndarray, offsets: np.ndarray, shapes: np.ndarray) -> np.ndarray:
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
    wh, offsets = box_placement(config, sample)
    best = np.zeros(len(wh))
    for level, apart in zip(config.levels, offsets):
        base = base_anchors(level, round_base=config.round_base).double().numpy()  # (A_l, 4)
        shapes = base[:, 2:] - base[:, :2]  # (A_l, 2) as the generator makes them
        for start in range(0, len(wh), chunk):  # bounded memory
            rows = slice(start, start + chunk)
            iou = centred_iou(wh[rows], apart[rows], shapes)
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
