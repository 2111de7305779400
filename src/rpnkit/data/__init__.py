"""Datasets and batching. Items are dicts with ``image`` (3, H, W) uint8 RGB,
``boxes`` (N, 4) xyxy pixels, ``labels`` (N,), ``ignore`` (N,) bool, ``image_id``, ``file_name``."""

from .batching import Batch, EmptyBatch, collate
from .config import DataConfig
from .dataset import DetectionDataset, Unreadable
from .images import load_rgb, to_rgb
from .readers import detect_format, read_dataset
from .records import DataError, DataNote, DatasetIndex, Record, SkippedSample
from .sources import ImageList, index_for_input
from .splits import Split, make_split, read_split
from .synthetic import SyntheticShapes
from .transforms import (
    Compose,
    HorizontalFlip,
    ResizeFixed,
    ResizeShortest,
    eval_transforms,
    train_transforms,
)

__all__ = [
    "Batch",
    "Compose",
    "DataConfig",
    "DataError",
    "DataNote",
    "DatasetIndex",
    "DetectionDataset",
    "EmptyBatch",
    "HorizontalFlip",
    "ImageList",
    "Record",
    "ResizeFixed",
    "ResizeShortest",
    "SkippedSample",
    "Split",
    "SyntheticShapes",
    "Unreadable",
    "collate",
    "detect_format",
    "eval_transforms",
    "index_for_input",
    "load_rgb",
    "make_split",
    "read_dataset",
    "read_split",
    "to_rgb",
    "train_transforms",
]
