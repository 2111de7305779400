"""Tiled training for large images with small objects (aerial, satellite, microscopy, documents).

An image larger than the tile on either side is not shrunk to the training size (which would
shrink its 10-40 px objects below the smallest anchor): a random ``size`` x ``size`` window of
it is cut at native resolution instead, a new one at every epoch. Boxes are clipped to the
window; a clipped box is kept when at least ``min_visible`` of its area remains and both its
sides are at least ``MIN_REMNANT`` px, else dropped. Crowd and difficult regions (``ignore``)
are kept whenever a remnant of that size remains: they only keep anchors from being negatives.

Boxes are xyxy in pixels; a window is (x0, y0, x1, y1) in image pixels, x1 and y1 exclusive.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np

from .records import Record

MIN_REMNANT = 2.0  # px: a clipped box narrower or lower than this is a remnant, dropped
MIN_TILE = 32  # one padding block (modeling.sizes.SIZE_DIVISIBLE)


@dataclass(frozen=True)
class TileConfig:
    """Tiles of ``size`` x ``size`` px at native resolution for the images larger than that;
    a box is kept when at least ``min_visible`` of its area lies in the tile."""

    size: int = 512
    min_visible: float = 0.5

    def __post_init__(self) -> None:
        size = self.size
        if not (isinstance(size, Integral) and not isinstance(size, bool) and size >= MIN_TILE):
            raise ValueError(f"TileConfig.size must be an integer >= {MIN_TILE}, got {size!r}")
        v = self.min_visible
        ok = isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)
        if not (ok and 0 < v <= 1):
            raise ValueError(f"TileConfig.min_visible must be a fraction in (0, 1], got {v!r}")

    def applies(self, height: int, width: int) -> bool:
        """Whether an image of this size is tiled (larger than a tile on either side)."""
        return height > self.size or width > self.size


def random_window(
    height: int, width: int, size: int, rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): a ``size`` x ``size`` window at a uniformly random place inside an
    image of ``height`` x ``width`` (a side shorter than ``size`` is kept whole)."""
    x0 = int(rng.integers(0, width - size + 1)) if width > size else 0
    y0 = int(rng.integers(0, height - size + 1)) if height > size else 0
    return x0, y0, min(width, x0 + size), min(height, y0 + size)


def clip_to_window(boxes: np.ndarray, window: tuple[int, int, int, int]) -> tuple[np.ndarray, ...]:
    """(N, 4) xyxy image pixels -> (N, 4) clipped and shifted into the window's pixels, (N,)
    fraction of each box's area inside the window, and (N,) whether both clipped sides reach
    ``MIN_REMNANT``."""
    x0, y0, x1, y1 = window
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    low = np.array([x0, y0, x0, y0], np.float32)
    high = np.array([x1, y1, x1, y1], np.float32)
    clipped = np.clip(boxes, low, high) - low
    side = clipped[:, 2:] - clipped[:, :2]  # (N, 2) clipped width and height
    full = np.maximum(boxes[:, 2:] - boxes[:, :2], 0).prod(axis=1)
    visible = np.where(full > 0, side.clip(min=0).prod(axis=1) / np.maximum(full, 1e-12), 0.0)
    return clipped, visible.astype(np.float32), (side >= MIN_REMNANT).all(axis=1)


def crop_boxes(
    boxes: np.ndarray,
    window: tuple[int, int, int, int],
    min_visible: float,
    ignore: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The boxes a tile keeps: (M, 4) xyxy in the window's pixels and the (N,) bool mask of
    the kept ones. ``ignore`` regions need only a remnant, not ``min_visible``."""
    clipped, visible, sized = clip_to_window(boxes, window)
    enough = visible >= min_visible - 1e-6  # 1e-6: a box exactly half inside is half visible
    if ignore is not None:
        enough |= np.asarray(ignore, bool)
    keep = sized & enough
    return clipped[keep], keep


def crop_record(
    image: np.ndarray, record: Record, window: tuple[int, int, int, int], min_visible: float
) -> tuple[np.ndarray, Record]:
    """The (h, w, 3) window of ``image`` and ``record`` cut to it: boxes clipped and shifted,
    remnants dropped with their labels, areas scaled by the fraction left."""
    x0, y0, x1, y1 = window
    boxes, keep = crop_boxes(record.boxes, window, min_visible, record.ignore)
    _, visible, _ = clip_to_window(record.boxes, window)
    cropped = dataclasses.replace(
        record,
        width=x1 - x0,
        height=y1 - y0,
        boxes=boxes,
        labels=record.labels[keep],
        ignore=record.ignore[keep],
        areas=(record.areas[keep] * visible[keep]).astype(np.float32),
    )
    return np.ascontiguousarray(image[y0:y1, x0:x1]), cropped


def crop_extra(boxes: np.ndarray, window: tuple[int, int, int, int]) -> np.ndarray:
    """Extra boxes (precomputed proposals) cut to a window: every remnant is kept."""
    clipped, _, sized = clip_to_window(boxes, window)
    return clipped[sized]
