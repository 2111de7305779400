"""Image transforms that carry the boxes along. Each takes and returns an (H, W, 3) uint8
image and (N, 4) xyxy boxes, plus a numpy Generator for the random ones, and reports the
resize factor so that sizes in original-image pixels (the paper's 16 px minimum) can follow."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image


def resize_scale(height: int, width: int, short: int, max_size: int) -> float:
    """The factor that brings the shorter side to ``short`` without the longer exceeding
    ``max_size``: the one formula for the network's input size (training, inference and the
    anchor diagnostics)."""
    return min(short / min(height, width), max_size / max(height, width))


def resized_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(height, width) of an image resized by ``scale``, at least one pixel each."""
    return max(1, round(height * scale)), max(1, round(width * scale))


@dataclass(frozen=True)
class ResizeShortest:
    """Scale so that the shorter side is ``short`` without the longer exceeding ``max_size``
    (detectron2's and torchvision's 800 / 1333). ``short`` may list choices, drawn at random
    (multi-scale training)."""

    short: int | Sequence[int] = 800
    max_size: int = 1333

    def __call__(self, image, boxes, rng):
        h, w = image.shape[:2]
        short = self.short
        if not isinstance(short, int):
            short = int(rng.choice(list(short)))
        scale = resize_scale(h, w, short, self.max_size)
        new_h, new_w = resized_size(h, w, scale)
        return _resize(image, boxes, new_w, new_h), scale


@dataclass(frozen=True)
class ResizeFixed:
    """Scale to exactly ``size`` = (height, width), as the paper's 800 x 800 setting."""

    size: tuple[int, int] = (800, 800)

    def __call__(self, image, boxes, rng):
        h, w = image.shape[:2]
        new_h, new_w = self.size
        return _resize(image, boxes, new_w, new_h), float(np.sqrt(new_h * new_w / (h * w)))


@dataclass(frozen=True)
class HorizontalFlip:
    probability: float = 0.5

    def __call__(self, image, boxes, rng):
        if rng.random() >= self.probability:
            return (image, boxes), 1.0
        w = image.shape[1]
        flipped = boxes.copy()
        flipped[:, 0] = w - boxes[:, 2]
        flipped[:, 2] = w - boxes[:, 0]
        return (np.ascontiguousarray(image[:, ::-1]), flipped), 1.0


def _resize(image, boxes, new_w: int, new_h: int):
    h, w = image.shape[:2]
    if (new_w, new_h) == (w, h):
        return image, boxes
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    scaled = boxes * np.array([new_w / w, new_h / h, new_w / w, new_h / h], dtype=np.float32)
    return resized, scaled


@dataclass(frozen=True)
class Compose:
    transforms: tuple = ()

    def __call__(self, image, boxes, rng):
        scale = 1.0
        for t in self.transforms:
            (image, boxes), s = t(image, boxes, rng)
            scale *= s
        return (image, boxes), scale


def train_transforms(short=800, max_size=1333, flip=0.5) -> Compose:
    return Compose((ResizeShortest(short, max_size), HorizontalFlip(flip)))


def eval_transforms(short=800, max_size=1333) -> Compose:
    return Compose((ResizeShortest(short, max_size),))
