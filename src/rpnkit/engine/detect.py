"""Running a trained Faster R-CNN: load it from a checkpoint, detect objects in images, folders
or datasets, and measure mAP."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..config import config_from_dict, config_to_dict
from ..data import DetectionDataset
from ..evaluation.detection import ImageDetections, ImageTruth, coco_map, voc_map
from ..evaluation.recall import batched_outputs, to_original_pixels
from ..modeling.detector import DetectorConfig, FasterRCNN
from .checkpoint import load_checkpoint

KIND = "faster-rcnn"


def detector_checkpoint_config(config: DetectorConfig, class_names: list[str]) -> dict:
    """What a detector checkpoint stores as its config."""
    return {"kind": KIND, "detector": config_to_dict(config), "class_names": list(class_names)}


def is_detector_checkpoint(config: dict) -> bool:
    return isinstance(config, dict) and config.get("kind") == KIND


def load_detector(
    path: str | Path, device: torch.device | str = "cpu", *, fold_bn: bool = False
) -> tuple[FasterRCNN, DetectorConfig, list[str]]:
    """A FasterRCNN, its config and class names from a checkpoint of ``rpnkit train --model
    faster-rcnn``. Nothing in the file is executed. ``fold_bn``: see ``fold_for_inference``."""
    state = load_checkpoint(path)
    if not is_detector_checkpoint(state["config"]):
        raise ValueError(
            f"{path}: not a Faster R-CNN checkpoint (train one with --model "
            "faster-rcnn); proposal checkpoints go to rpnkit propose"
        )
    config = config_from_dict(DetectorConfig, state["config"]["detector"], where=f"{path} config")
    backbone = dataclasses.replace(config.model.backbone, weights=None)  # all in the checkpoint
    bare = dataclasses.replace(config, model=dataclasses.replace(config.model, backbone=backbone))
    model = FasterRCNN(bare)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise ValueError(f"{path}: the weights do not fit the detector config: {err}") from err
    model = model.to(device).eval()
    if fold_bn:
        from .runtime import fold_for_inference

        fold_for_inference(model)
    return model, config, list(state["config"]["class_names"])


@torch.no_grad()
def run_detector(
    model: FasterRCNN,
    dataset: DetectionDataset,
    *,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> Iterator[tuple[dict, np.ndarray, np.ndarray, np.ndarray]]:
    """For each readable image: (item, boxes (D, 4) xyxy in original pixels, scores, labels)."""
    model.to(device).eval()
    for items, _, out in batched_outputs(
        model, dataset, batch_size=batch_size, device=device, progress=progress, desc="detecting"
    ):
        for item, (boxes, scores, labels) in zip(items, out.detections.per_image()):
            boxes = boxes.cpu() * to_original_pixels(item)
            yield item, boxes.numpy(), scores.cpu().numpy(), labels.cpu().numpy()


def evaluate_detector(
    model: FasterRCNN,
    dataset: DetectionDataset,
    class_names: list[str],
    *,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict:
    """COCO mAP (pycocotools) and VOC mAP (07 11-point and area) with per-class AP tables."""
    truths, detections = [], []
    for item, boxes, scores, labels in run_detector(
        model, dataset, batch_size=batch_size, device=device, progress=progress
    ):
        oh, ow = item["orig_size"]
        gt = (item["boxes"] * to_original_pixels(item)).numpy()
        truths.append(
            ImageTruth(
                gt, item["labels"].numpy(), item["ignore"].numpy(), item["areas"].numpy(), ow, oh
            )
        )
        detections.append(ImageDetections(boxes, scores, labels))
    coco, coco_per_class, pr = coco_map(truths, detections, class_names)
    voc07, voc_per_class = voc_map(truths, detections, class_names, use_07_metric=True)
    voc_area, _ = voc_map(truths, detections, class_names, use_07_metric=False)
    return {
        **coco,
        "VOC07_mAP50": voc07,
        "VOC_area_mAP50": voc_area,
        "per_class_AP": coco_per_class,
        "per_class_VOC07_AP50": voc_per_class,
        "pr_curves": pr,
    }
