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

Fitting: k-means over the boxes' (width, height) with distance 1 - IoU of boxes sharing a
centre (as YOLOv2), k = the configuration's anchors per position summed over levels; each
cluster goes to the level whose anchors are closest in scale, every level keeping at least one.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from ..config import config_to_dict
from ..data.readers import DatasetIndex
from ..data.transforms import resize_scale, resized_size
from ..modeling.anchors import AnchorConfig, AnchorGenerator, LevelAnchors
from ..modeling.boxes import box_iou
from ..modeling.presets import ModelConfig
from ..modeling.sizes import feature_sizes
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
    index: DatasetIndex, *, short: int = 800, max_size: int = 1333, tile_size: int | None = None
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
        tile = max(32, min(1024, short // 32 * 32))
        return (
            f"{text} They are large enough at native resolution: train and infer on tiles "
            f"(rpnkit train --tile-size {tile}; propose/detect/eval --tile-size {tile}), or "
            f"resize to {resize}."
        )
    return (
        f"{text} Even native resolution is too coarse for them: upscale about {needed:.1f}x "
        f"the original, to {resize}, or fit smaller anchors (--fit)."
    )


def _ceil32(value: float) -> int:
    return int(math.ceil(value / 32) * 32)


def _resize_advice(
    sample: GTSample, needed: float, short: int, max_size: int | None
) -> tuple[str, str]:
    """The resize that scales the median image by ``needed``: a shorter side, with a cap on
    the longer side that lets it apply when ``max_size`` would stop it; and a note when
    ``max_size`` already caps the resize asked for (the median image's shorter side is then
    less than ``short``: a larger ``short`` alone would change nothing)."""
    resized = np.array(sample.sizes, dtype=np.float64).reshape(-1, 2)  # (I, 2) h, w
    if sample.originals:
        original = np.array(sample.originals, dtype=np.float64).reshape(-1, 2)
    else:  # a sample made by hand: the sizes read back from the resize
        original = resized / np.asarray(sample.scales or [1.0] * len(resized))[:, None]
    shorts, longs = original.min(axis=1), original.max(axis=1)
    short_needed = _ceil32(float(np.median(shorts)) * needed)
    long_needed = _ceil32(short_needed * float(np.median(longs / shorts)))
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
        f" --max-size {max_size} caps the resize: the median image's shorter side is "
        f"{median_short:.0f} px, not the {short} of --short-side."
    )
    return advice, note


def best_anchor_iou(config: AnchorConfig, sample: GTSample, *, chunk: int = 1 << 16) -> np.ndarray:
    """(N,) each GT box's best IoU with the anchors of its (padded) image."""
    generator = AnchorGenerator(config)
    best = np.zeros(len(sample.boxes), np.float32)
    for i, (h, w) in enumerate(sample.sizes):
        rows = np.nonzero(sample.image == i)[0]
        if len(rows) == 0:
            continue
        anchors = generator(feature_sizes(h, w, config.strides))  # padded as collate pads
        gt = torch.from_numpy(sample.boxes[rows])
        top = torch.zeros(len(rows))
        for start in range(0, len(anchors), chunk):  # bounded memory
            top = torch.maximum(top, box_iou(gt, anchors[start : start + chunk]).max(dim=1).values)
        best[rows] = top.numpy()
    return best


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


def fit_anchors(config: AnchorConfig, sample: GTSample, *, seed: int = 0) -> AnchorConfig:
    """Anchors fitted to ``sample``: as many shapes as ``config`` has per position in all, each
    on the level of the nearest scale, every level keeping at least one."""
    k = sum(config.num_anchors_per_level)
    wh = np.stack(
        [sample.boxes[:, 2] - sample.boxes[:, 0], sample.boxes[:, 3] - sample.boxes[:, 1]], 1
    )
    centres = kmeans_iou(wh.astype(np.float64), k, seed=seed)
    scales = np.log([_level_scale(lv) for lv in config.levels])
    sizes = 0.5 * np.log(centres[:, 0] * centres[:, 1])
    level_of = np.abs(sizes[:, None] - scales[None, :]).argmin(axis=1)
    for level in range(len(config.levels)):  # every level needs at least one anchor: take
        if (level_of == level).any():  # the nearest cluster from a level that can spare one
            continue
        counts = np.bincount(level_of, minlength=len(config.levels))
        spare = counts[level_of] > 1
        distance = np.where(spare, np.abs(sizes - scales[level]), np.inf)
        level_of[distance.argmin()] = level
    levels = tuple(
        LevelAnchors(
            stride=lv.stride,
            shapes=tuple(
                (round(float(w), 1), round(float(h), 1)) for w, h in centres[level_of == i]
            ),
        )
        for i, lv in enumerate(config.levels)
    )
    return dataclasses.replace(config, levels=levels)


def describe_anchors(config: AnchorConfig) -> str:
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
            k = sum(anchors.num_anchors_per_level)
            lines.append(f"\nfitted anchors (k-means, distance 1 - IoU, k = {k}):")
            lines += [describe_anchors(self.fitted), format_coverage(self.coverage_fitted)]
        return "\n".join(lines)


def anchor_report(
    model: ModelConfig,
    index: DatasetIndex,
    *,
    short: int = 800,
    max_size: int = 1333,
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
        report.fitted = fit_anchors(model.rpn.anchors, sample, seed=seed)
        report.coverage_fitted = coverage_table(sample, best_anchor_iou(report.fitted, sample))
    return report


def _no_boxes(index: DatasetIndex) -> str:
    """Why a dataset gives no box to measure the anchors on: no image was read (the first
    skip, and where a CSV's images are looked for), or its images have no (usable) box."""
    if not index.records:
        issues = index.image_issues
        text = f"{index.source}: no image could be read"
        text += f" ({len(issues)} skipped; first: {issues[0]})" if issues else ""
        text += ": no box to check the anchors on"
        missing = bool(issues) and all("image file not found" in line for line in issues)
        if missing and index.source.endswith(".csv"):
            text += "; a CSV's images are looked for beside it: give --images DIR"
        return text
    return (
        f"{index.source}: none of its {len(index.records)} image(s) has a box (crowd regions "
        "not counted): no box to check the anchors on"
    )
