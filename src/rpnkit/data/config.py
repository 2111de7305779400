"""Where a run's images and boxes come from and how they are sized: one typed config for the
training set, the validation set and their shared resize and flip settings."""

from __future__ import annotations

from dataclasses import dataclass

from .dataset import DetectionDataset
from .readers import DatasetIndex, read_dataset
from .transforms import eval_transforms, train_transforms


@dataclass(frozen=True)
class DataConfig:
    """``data`` and ``val_data`` are dataset paths (COCO JSON, VOC folder, YOLO data.yaml;
    format detected unless ``format`` is given); ``split`` names a COCO JSON or a YOLO key,
    ``split_file`` selects VOC images. Images are resized to shorter side ``short_side`` with
    the longer at most ``max_size``, and flipped with probability ``flip`` in training. Bad
    samples are skipped with a warning, or stop the run with ``strict``."""

    data: str
    split: str = "train"
    split_file: str | None = None
    val_data: str | None = None
    val_split: str = "val"
    val_split_file: str | None = None
    format: str | None = None
    short_side: int = 800
    max_size: int = 1333
    flip: float = 0.5
    strict: bool = False

    def read_train(self) -> DatasetIndex:
        return read_dataset(
            self.data,
            split=self.split,
            fmt=self.format,
            split_file=self.split_file,
            strict=self.strict,
        )

    def read_val(self) -> DatasetIndex | None:
        if self.val_data is None:
            return None
        return read_dataset(
            self.val_data,
            split=self.val_split,
            fmt=self.format,
            split_file=self.val_split_file,
            strict=self.strict,
        )

    def train_dataset(self, index: DatasetIndex, *, seed: int, proposals=None) -> DetectionDataset:
        transforms = train_transforms(self.short_side, self.max_size, self.flip)
        return DetectionDataset(
            index, transforms, strict=self.strict, seed=seed, proposals=proposals
        )

    def eval_dataset(self, index: DatasetIndex) -> DetectionDataset:
        return DetectionDataset(index, eval_transforms(self.short_side, self.max_size))
