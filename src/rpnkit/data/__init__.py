"""Datasets and batching. Items are dicts with ``image`` (3, H, W) float RGB in [0, 1],
``boxes`` (N, 4) xyxy pixels, ``labels`` (N,), ``ignore`` (N,) bool, ``image_id``, ``file_name``."""

from .batching import Batch, collate
from .synthetic import SyntheticShapes

__all__ = ["Batch", "SyntheticShapes", "collate"]
