"""A deterministic synthetic detection dataset: shapes on textured backgrounds.

Each image holds several filled shapes (rectangles, ellipses, triangles, diamonds) of many sizes
and aspect ratios on a background of gradients, stripes and noise. Image ``i`` depends only on
``(seed, i)``, so any split is reproducible and nothing is stored on disk.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

SHAPE_NAMES = ("rectangle", "ellipse", "triangle", "diamond")


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float32 texture in [0, 255]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = rng.uniform(40, 215, size=3).astype(np.float32)
    tilt = rng.uniform(-60, 60, size=(2, 3)).astype(np.float32)
    img = base + xx[..., None] * tilt[0] + yy[..., None] * tilt[1]
    # stripes at a random angle and period
    angle = rng.uniform(0, math.pi)
    period = rng.uniform(6, 40)
    phase = (xx * math.cos(angle) + yy * math.sin(angle)) * size / period
    img += np.sin(2 * math.pi * phase)[..., None] * rng.uniform(0, 25, size=3).astype(np.float32)
    img += rng.normal(0, rng.uniform(3, 12), size=img.shape).astype(np.float32)
    return img


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two xyxy boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def make_shapes_image(
    seed: int,
    index: int,
    *,
    image_size: int = 256,
    min_objects: int = 2,
    max_objects: int = 6,
    min_size: float = 12.0,
    max_size: float = 180.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (H, W, 3) uint8 RGB image, (N, 4) float32 xyxy boxes, (N,) int64 labels in 1..4."""
    rng = np.random.default_rng([seed, index])
    canvas = np.clip(_background(rng, image_size), 0, 255).astype(np.uint8)
    boxes: list[np.ndarray] = []
    shapes: list[tuple] = []
    wanted = int(rng.integers(min_objects, max_objects + 1))
    for _ in range(wanted * 20):
        if len(boxes) == wanted:
            break
        size = math.exp(rng.uniform(math.log(min_size), math.log(max_size)))
        aspect = math.exp(rng.uniform(math.log(1 / 3), math.log(3)))  # h / w
        w = min(size / math.sqrt(aspect), image_size - 2)
        h = min(size * math.sqrt(aspect), image_size - 2)
        if min(w, h) < min_size * 0.6:
            continue
        x1 = rng.uniform(0, image_size - w)
        y1 = rng.uniform(0, image_size - h)
        box = np.array([x1, y1, x1 + w, y1 + h], dtype=np.float32)
        if any(_overlap(box, b) > 0.25 for b in boxes):
            continue
        kind = int(rng.integers(len(SHAPE_NAMES)))
        fill = tuple(int(c) for c in rng.integers(0, 256, size=3))
        outline = tuple(int(c) for c in rng.integers(0, 256, size=3))
        shapes.append((box, kind, fill, outline))
        boxes.append(box)
    return _draw(canvas, shapes)


def _draw(canvas: np.ndarray, shapes: list[tuple]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shapes (box, kind, fill, outline) drawn on an (H, W, 3) uint8 canvas -> image, (N, 4)
    float32 xyxy boxes, (N,) int64 labels in 1..4."""
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    # largest first, so that a small shape is never hidden under a larger one drawn later
    shapes = sorted(shapes, key=lambda s: -float((s[0][2] - s[0][0]) * (s[0][3] - s[0][1])))
    for box, kind, fill, outline in shapes:
        x1, y1, x2, y2 = (float(v) for v in box)
        if kind == 0:
            draw.rectangle([x1, y1, x2, y2], fill=fill, outline=outline)
        elif kind == 1:
            draw.ellipse([x1, y1, x2, y2], fill=fill, outline=outline)
        elif kind == 2:
            draw.polygon([((x1 + x2) / 2, y1), (x2, y2), (x1, y2)], fill=fill, outline=outline)
        else:
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            draw.polygon([(cx, y1), (x2, cy), (cx, y2), (x1, cy)], fill=fill, outline=outline)
    boxes = [s[0] for s in shapes]
    labels = [s[1] + 1 for s in shapes]
    return (
        np.array(image),
        np.stack(boxes).astype(np.float32) if boxes else np.zeros((0, 4), np.float32),
        np.asarray(labels, dtype=np.int64),
    )


def make_dense_scene(
    seed: int,
    index: int,
    *,
    image_size: int = 2000,
    min_objects: int = 300,
    max_objects: int = 800,
    min_size: float = 10.0,
    max_size: float = 40.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A large scene crowded with small shapes (aerial or microscopy-like): hundreds of objects
    of ``min_size``-``max_size`` px (log-uniform, aspect 1:2 to 2:1) overlapping at most 0.1
    IoU. -> (H, W, 3) uint8 RGB, (N, 4) float32 xyxy boxes, (N,) int64 labels in 1..4."""
    rng = np.random.default_rng([seed, index, 1])
    canvas = np.clip(_background(rng, image_size), 0, 255).astype(np.uint8)
    wanted = int(rng.integers(min_objects, max_objects + 1))
    placed = np.zeros((0, 4), np.float32)
    for _ in range(20):  # rounds of vectorised candidates until enough fit
        if len(placed) >= wanted:
            break
        n = 2 * (wanted - len(placed))
        size = np.exp(rng.uniform(math.log(min_size), math.log(max_size), n))
        aspect = np.exp(rng.uniform(math.log(0.5), math.log(2.0), n))  # h / w
        w, h = size / np.sqrt(aspect), size * np.sqrt(aspect)
        x1, y1 = rng.uniform(0, image_size - w), rng.uniform(0, image_size - h)
        for box in np.stack([x1, y1, x1 + w, y1 + h], 1).astype(np.float32):
            if len(placed) >= wanted:
                break
            if len(placed) and _overlaps(box, placed).max() > 0.1:
                continue
            placed = np.concatenate([placed, box[None]])
    shapes = [
        (
            box,
            int(rng.integers(len(SHAPE_NAMES))),
            tuple(int(c) for c in rng.integers(0, 256, size=3)),
            tuple(int(c) for c in rng.integers(0, 256, size=3)),
        )
        for box in placed
    ]
    return _draw(canvas, shapes)


def _overlaps(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with (N, 4) boxes."""
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = (rb - lt).clip(min=0).prod(axis=1)
    area = (box[2:] - box[:2]).prod() + (boxes[:, 2:] - boxes[:, :2]).prod(axis=1)
    return inter / (area - inter)


class SyntheticShapes(Dataset):
    """``num_images`` images of shapes. Items: dict with ``image`` (3, H, W) uint8 RGB,
    ``boxes`` (N, 4) xyxy, ``labels`` (N,), ``image_id`` and ``file_name``."""

    class_names = SHAPE_NAMES

    def __init__(self, num_images: int, *, seed: int = 0, image_size: int = 256) -> None:
        self.num_images = num_images
        self.seed = seed
        self.image_size = image_size

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        image, boxes, labels = make_shapes_image(self.seed, index, image_size=self.image_size)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1),
            "boxes": torch.from_numpy(boxes),
            "labels": torch.from_numpy(labels),
            "ignore": torch.zeros(len(boxes), dtype=torch.bool),
            "areas": torch.from_numpy((boxes[:, 2:] - boxes[:, :2]).prod(axis=1)),
            "image_id": index,
            "file_name": f"shapes-{self.seed}-{index:05d}.png",
            "scale": 1.0,
            "orig_size": (self.image_size, self.image_size),
        }
