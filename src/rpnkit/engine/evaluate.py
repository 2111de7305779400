"""Running a network over a labelled dataset and measuring it: proposal recall (COCO-style,
``evaluation.recall``) or detection mAP (pycocotools and VOC, ``evaluation.detection``)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..evaluation.detection import (
    ImageDetections,
    ImageTruth,
    coco_map,
    format_detection_metrics,
    voc_map,
)
from ..evaluation.recall import (
    MAX_DETS,
    MatchTable,
    format_recall_table,
    match_proposals,
    pad_boxes,
    pad_cat,
    proposal_recall_summary,
    recall_vs_iou,
    recall_vs_proposals,
)
from ..modeling.detector import FasterRCNN
from ..modeling.structures import GroundTruth
from .runner import detection_forward, proposal_forward, run_batches, to_original_pixels

CURVE_KS = (1, 3, 10, 30, 100, 300, 1000)


@dataclass
class RecallReport:
    """Proposal recall of a model on a dataset: the summary ``metrics`` (AR@k, recall@k@0.5 and
    @0.7, per size), the match ``table`` (per-image recall) and, per image, its proposal boxes
    and its counted GT boxes (network-input pixels, on the CPU) for pictures."""

    metrics: dict[str, float]
    table: MatchTable
    kept: list[tuple[Tensor, Tensor]]

    def format(self) -> str:
        return format_recall_table(self.metrics, MAX_DETS)

    def curves(self, ks: Sequence[int] = CURVE_KS) -> tuple[dict, dict]:
        """Recall against the number of proposals, and against the IoU threshold."""
        preds, pred_valid = pad_boxes([p for p, _ in self.kept])
        gts, gt_valid = pad_boxes([g for _, g in self.kept])
        ks = [k for k in ks if k <= max(MAX_DETS)]
        return recall_vs_proposals(self.table, ks), recall_vs_iou(preds, pred_valid, gts, gt_valid)


@dataclass
class DetectionReport:
    """COCO box AP (pycocotools), VOC mAP@0.5 (07 11-point and area), per-class AP tables and
    precision-recall curves, as one dict of ``metrics``."""

    metrics: dict

    def format(self) -> str:
        return format_detection_metrics(self.metrics)


@torch.no_grad()
def evaluate_proposals(
    network: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    max_dets: Sequence[int] = MAX_DETS,
    progress: bool = True,
    precision: contextlib.AbstractContextManager | None = None,
    workers: int = 0,
) -> RecallReport:
    """Proposal recall of an RPN (or a detector's first stage) on ``dataset``.

    Size ranges use the items' ``areas`` (COCO's, in original pixels) when they have them, else
    the box areas brought back to original pixels."""
    device = torch.device(device)
    network.to(device).eval()
    columns: dict[str, list[Tensor]] = {k: [] for k in ("boxes", "valid", "gt", "mask", "crowd")}
    areas, kept, k = [], [], max(max_dets)
    for metas, proposals in run_batches(
        proposal_forward(network),
        dataset,
        batch_size=batch_size,
        device=device,
        progress=progress,
        desc="evaluating",
        precision=precision,
        workers=workers,
    ):
        t = _ground_truth(metas)
        columns["boxes"].append(proposals.boxes[:, :k])
        columns["valid"].append(proposals.valid[:, :k])
        columns["gt"].append(t.boxes)
        columns["mask"].append(t.mask)
        columns["crowd"].append(t.ignore)
        areas.append(_original_areas(metas, t.mask.shape))
        for i in range(len(metas)):
            counted = t.mask[i] & ~t.ignore[i]
            kept.append((proposals.boxes[i, : int(proposals.num[i])], t.boxes[i][counted]))
    if not kept:
        raise ValueError("no readable images to evaluate")
    table = match_proposals(*(pad_cat(columns[c]) for c in columns), pad_cat(areas))
    return RecallReport(proposal_recall_summary(table, max_dets), table, kept)


def _ground_truth(metas: list[dict]) -> GroundTruth:
    """The batch's GT as the dataset gave it, padded, on the CPU."""
    return GroundTruth.from_lists(
        [m["boxes"] for m in metas], [m["labels"] for m in metas], [m["ignore"] for m in metas]
    )


def _original_areas(metas: list[dict], shape: torch.Size) -> Tensor:
    """(B, G) GT areas in original pixels: COCO's when the items carry them."""
    area = torch.zeros(shape, dtype=torch.float64)
    for i, it in enumerate(metas):
        g = len(it["boxes"])
        if "areas" in it:
            area[i, :g] = it["areas"].double()
        else:
            b = it["boxes"].double()
            area[i, :g] = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) / it.get("scale", 1.0) ** 2
    return area


@torch.no_grad()
def evaluate_detections(
    detector: FasterRCNN,
    dataset: Dataset,
    class_names: Sequence[str],
    *,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
    progress: bool = True,
    precision: contextlib.AbstractContextManager | None = None,
    workers: int = 0,
) -> DetectionReport:
    """COCO mAP (pycocotools) and VOC mAP (07 11-point and area) with per-class AP tables."""
    device = torch.device(device)
    detector.to(device).eval()
    truths, detections = [], []
    for metas, found in run_batches(
        detection_forward(detector),
        dataset,
        batch_size=batch_size,
        device=device,
        progress=progress,
        desc="detecting",
        precision=precision,
        workers=workers,
    ):
        for meta, (boxes, scores, labels) in zip(metas, found.per_image()):
            factors = to_original_pixels(meta)
            oh, ow = meta["orig_size"]
            gt = (meta["boxes"] * factors).numpy()
            ignore, areas = meta["ignore"].numpy(), meta["areas"].numpy()
            truths.append(ImageTruth(gt, meta["labels"].numpy(), ignore, areas, ow, oh))
            detections.append(
                ImageDetections((boxes * factors).numpy(), scores.numpy(), labels.numpy())
            )
    coco, coco_per_class, pr = coco_map(truths, detections, class_names)
    voc07, voc_per_class = voc_map(truths, detections, class_names, use_07_metric=True)
    voc_area, _ = voc_map(truths, detections, class_names, use_07_metric=False)
    return DetectionReport(
        {
            **coco,
            "VOC07_mAP50": voc07,
            "VOC_area_mAP50": voc_area,
            "per_class_AP": coco_per_class,
            "per_class_VOC07_AP50": voc_per_class,
            "pr_curves": pr,
        }
    )
