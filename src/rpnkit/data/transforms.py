"""Image transforms that carry the boxes along. Each takes and returns an (H, W, 3) uint8
image and (N, 4) xyxy boxes, plus a numpy Generator for the random ones, and reports the
resize factor so that sizes in original-image pixels (the paper's 16 px minimum) can follow.

The built-in transforms also ``plan``: from the image's size alone they draw their random
choices and return the pixel step they take (``Resize``, ``Flip``, or None). The boxes follow
the plan here, on the CPU, and the pixels may follow it anywhere: in the worker (``__call__``)
or on the GPU after decoding there (``data.device_images``), with the same boxes either way."""

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
class Resize:
    """A pixel step: bilinear resizing (antialiased when shrinking) to (height, width)."""

    height: int
    width: int

    def size(self, height: int, width: int) -> tuple[int, int]:
        return self.height, self.width

    def boxes(self, boxes: np.ndarray, height: int, width: int) -> np.ndarray:
        fx, fy = self.width / width, self.height / height
        return boxes * np.array([fx, fy, fx, fy], dtype=np.float32)

    def pixels(self, image: np.ndarray) -> np.ndarray:
        if image.shape[:2] == (self.height, self.width):
            return image
        return np.asarray(Image.fromarray(image).resize((self.width, self.height), Image.BILINEAR))


@dataclass(frozen=True)
class Flip:
    """A pixel step: mirror left to right."""

    def size(self, height: int, width: int) -> tuple[int, int]:
        return height, width

    def boxes(self, boxes: np.ndarray, height: int, width: int) -> np.ndarray:
        flipped = boxes.copy()
        flipped[:, 0] = width - boxes[:, 2]
        flipped[:, 2] = width - boxes[:, 0]
        return flipped

    def pixels(self, image: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(image[:, ::-1])


def _apply(step, image, boxes):
    """``step`` (a transform's plan) applied to an image and its boxes."""
    if step is None:
        return image, boxes
    h, w = image.shape[:2]
    return step.pixels(image), step.boxes(boxes, h, w)


class Planned:
    """A transform that plans (``plan(height, width, rng) -> (pixel step or None, scale)``)
    and applies its plan to an image and its boxes when called."""

    def __call__(self, image, boxes, rng):
        step, scale = self.plan(*image.shape[:2], rng)
        return _apply(step, image, boxes), scale


@dataclass(frozen=True)
class ResizeShortest(Planned):
    """Scale so that the shorter side is ``short`` without the longer exceeding ``max_size``
    (detectron2's and torchvision's 800 / 1333). ``short`` may list choices, drawn at random
    (multi-scale training)."""

    short: int | Sequence[int] = 800
    max_size: int = 1333

    def plan(self, height: int, width: int, rng) -> tuple[Resize | None, float]:
        short = self.short
        if not isinstance(short, int):
            short = int(rng.choice(list(short)))
        scale = resize_scale(height, width, short, self.max_size)
        new_h, new_w = resized_size(height, width, scale)
        return (None if (new_h, new_w) == (height, width) else Resize(new_h, new_w)), scale


@dataclass(frozen=True)
class ResizeFixed(Planned):
    """Scale to exactly ``size`` = (height, width), as the paper's 800 x 800 setting."""

    size: tuple[int, int] = (800, 800)

    def plan(self, height: int, width: int, rng) -> tuple[Resize | None, float]:
        new_h, new_w = self.size
        scale = float(np.sqrt(new_h * new_w / (height * width)))
        return (None if (new_h, new_w) == (height, width) else Resize(new_h, new_w)), scale


@dataclass(frozen=True)
class HorizontalFlip(Planned):
    probability: float = 0.5

    def plan(self, height: int, width: int, rng) -> tuple[Flip | None, float]:
        return (Flip() if rng.random() < self.probability else None), 1.0


@dataclass(frozen=True)
class Compose:
    transforms: tuple = ()

    @property
    def plannable(self) -> bool:
        """Whether every transform can plan (the built-in ones): then the pixels may be
        transformed apart from the boxes, e.g. on the GPU."""
        return all(hasattr(t, "plan") for t in self.transforms)

    def plan(self, height: int, width: int, boxes: np.ndarray, rng):
        """(pixel steps, boxes after them, resize factor) for an image of this size: what
        ``__call__`` does, without the pixels. Needs ``plannable``."""
        steps, scale = [], 1.0
        for t in self.transforms:
            step, s = t.plan(height, width, rng)
            scale *= s
            if step is not None:
                boxes = step.boxes(boxes, height, width)
                height, width = step.size(height, width)
                steps.append(step)
        return tuple(steps), boxes, scale

    def __call__(self, image, boxes, rng):
        scale = 1.0
        for t in self.transforms:
            (image, boxes), s = t(image, boxes, rng)
            scale *= s
        return (image, boxes), scale


DEFAULT_SHORT_SIDE, DEFAULT_MAX_SIZE = 800, 1333  # the resize unless a run says otherwise


def train_transforms(short=DEFAULT_SHORT_SIDE, max_size=DEFAULT_MAX_SIZE, flip=0.5) -> Compose:
    return Compose((ResizeShortest(short, max_size), HorizontalFlip(flip)))


def eval_transforms(short=DEFAULT_SHORT_SIDE, max_size=DEFAULT_MAX_SIZE) -> Compose:
    return Compose((ResizeShortest(short, max_size),))
