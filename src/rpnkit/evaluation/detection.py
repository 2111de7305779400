"""Detection mAP: COCO's through pycocotools, and Pascal VOC's (2007 11-point and area forms).

Detections and ground truth are per image, xyxy in original-image pixels, class ids 1..K.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


@dataclass
class ImageDetections:
    """One image: ``boxes`` (N, 4) xyxy, ``scores`` (N,), ``labels`` (N,) in 1..K."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


@dataclass
class ImageTruth:
    """One image: ``boxes`` (G, 4) xyxy, ``labels`` (G,), ``ignore`` (G,) bool (crowd or VOC
    difficult), ``areas`` (G,) (COCO's mask areas when known), ``width``, ``height``."""

    boxes: np.ndarray
    labels: np.ndarray
    ignore: np.ndarray
    areas: np.ndarray
    width: int
    height: int


def coco_map(
    truths: Sequence[ImageTruth],
    detections: Sequence[ImageDetections],
    class_names: Sequence[str],
    *,
    max_dets: int = 100,
) -> tuple[dict[str, float], dict[str, float], dict[str, list]]:
    """COCO box AP through pycocotools: the six summary numbers, AP (IoU 0.5:0.95) per class
    (NaN for a class without GT), and precision-recall curves (COCO's 101 recall points) at
    IoU 0.5 and 0.75, averaged over the classes that have GT, and per class at IoU 0.5."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, results = [], [], []
    for i, (t, d) in enumerate(zip(truths, detections)):
        images.append({"id": i + 1, "width": int(t.width), "height": int(t.height)})
        for g, (box, label) in enumerate(zip(t.boxes, t.labels)):
            x1, y1, x2, y2 = (float(v) for v in box)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": int(label),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": float(t.areas[g]),
                    "iscrowd": int(bool(t.ignore[g])),
                }
            )
        for box, score, label in zip(d.boxes, d.scores, d.labels):
            x1, y1, x2, y2 = (float(v) for v in box)
            results.append(
                {
                    "image_id": i + 1,
                    "category_id": int(label),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(score),
                }
            )
    categories = [{"id": k + 1, "name": n} for k, n in enumerate(class_names)]
    gt = COCO()
    # "info" and "licenses": pycocotools 2.0.10 copies them in loadRes
    gt.dataset = {
        "info": {},
        "licenses": [],
        "images": images,
        "annotations": anns,
        "categories": categories,
    }
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints as it goes
        gt.createIndex()
        if not results:
            empty = {"recall": [], "precision@0.5": [], "precision@0.75": [], "per_class@0.5": {}}
            return dict.fromkeys(COCO_STATS, 0.0), {n: float("nan") for n in class_names}, empty
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = dict(zip(COCO_STATS, (float(v) for v in ev.stats[:6])))
    precision = ev.eval["precision"][:, :, :, 0, -1]  # (T, R, K): area "all", largest maxDets
    per_class = {}
    for k, name in enumerate(class_names):
        p = precision[:, :, k]
        per_class[name] = float(p[p > -1].mean()) if (p > -1).any() else float("nan")
    return stats, per_class, _pr_curves(ev, class_names)


def _pr_curves(ev, class_names: Sequence[str]) -> dict[str, list]:
    """Precision at COCO's 101 recall points (area "all", the largest maxDets)."""
    precision = ev.eval["precision"][:, :, :, 0, -1]  # (T, 101, K)
    thresholds = list(np.round(ev.params.iouThrs, 2))

    def mean_over_classes(t: int) -> list[float]:
        p = precision[thresholds.index(t)]  # (101, K)
        has = (p > -1).all(axis=0)
        return [float(v) for v in p[:, has].mean(axis=1)] if has.any() else []

    per_class = {
        name: [float(v) for v in precision[thresholds.index(0.5), :, k]]
        for k, name in enumerate(class_names)
        if (precision[thresholds.index(0.5), :, k] > -1).all()
    }
    return {
        "recall": [float(r) for r in ev.params.recThrs],
        "precision@0.5": mean_over_classes(0.5),
        "precision@0.75": mean_over_classes(0.75),
        "per_class@0.5": per_class,
    }


def voc_ap(recall: np.ndarray, precision: np.ndarray, *, use_07_metric: bool = False) -> float:
    """Average precision from a recall/precision curve: VOC2007's 11-point interpolation, or
    the area under the monotone precision envelope (VOC2010 on)."""
    if use_07_metric:
        return float(
            np.mean(
                [
                    precision[recall >= t].max() if (recall >= t).any() else 0.0
                    for t in np.linspace(0, 1, 11)
                ]
            )
        )
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]  # the precision envelope
    steps = np.nonzero(r[1:] != r[:-1])[0]
    return float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))


def voc_map(
    truths: Sequence[ImageTruth],
    detections: Sequence[ImageDetections],
    class_names: Sequence[str],
    *,
    iou_threshold: float = 0.5,
    use_07_metric: bool = True,
) -> tuple[float, dict[str, float]]:
    """Pascal VOC mAP: per class, detections ranked by score across images are true positives
    when they hit an unmatched GT box with IoU > ``iou_threshold``; a hit on an ignored
    (difficult) box counts neither way. Continuous-coordinate IoU (no VOC "+1"). A class
    without GT is NaN and left out of the mean; with none having GT the mean is ``NO_GT``."""
    per_class = {}
    for k, name in enumerate(class_names, start=1):
        records = []  # (score, image, box)
        for i, d in enumerate(detections):
            for box, score in zip(d.boxes[d.labels == k], d.scores[d.labels == k]):
                records.append((float(score), i, box))
        records.sort(key=lambda r: -r[0])
        gt_boxes = [t.boxes[t.labels == k] for t in truths]
        gt_ignore = [t.ignore[t.labels == k] for t in truths]
        taken = [np.zeros(len(b), bool) for b in gt_boxes]
        num_pos = sum(int((~ig).sum()) for ig in gt_ignore)
        tp, fp = np.zeros(len(records)), np.zeros(len(records))
        for n, (_, i, box) in enumerate(records):
            g = gt_boxes[i]
            if len(g) == 0:
                fp[n] = 1
                continue
            ix1 = np.maximum(g[:, 0], box[0])
            iy1 = np.maximum(g[:, 1], box[1])
            ix2 = np.minimum(g[:, 2], box[2])
            iy2 = np.minimum(g[:, 3], box[3])
            inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
            union = (
                (box[2] - box[0]) * (box[3] - box[1])
                + (g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1])
                - inter
            )
            iou = inter / np.maximum(union, 1e-12)
            j = int(iou.argmax())
            if iou[j] > iou_threshold:
                if gt_ignore[i][j]:
                    continue  # difficult: neither a hit nor a miss
                if not taken[i][j]:
                    tp[n], taken[i][j] = 1, True
                else:
                    fp[n] = 1
            else:
                fp[n] = 1
        if num_pos == 0:
            per_class[name] = float("nan")
            continue
        tp_cum, fp_cum = np.cumsum(tp), np.cumsum(fp)
        recall = tp_cum / num_pos
        precision = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
        per_class[name] = voc_ap(recall, precision, use_07_metric=use_07_metric)
    values = [v for v in per_class.values() if not np.isnan(v)]
    return (float(np.mean(values)) if values else NO_GT), per_class  # no GT: as pycocotools


def format_per_class(per_class: dict[str, float], title: str = "AP") -> str:
    """A class and its AP a line; n/a for a class without GT (NaN), as the report says it."""
    width = max([len(n) for n in per_class] + [5])
    lines = [f"{'class':<{width}}  {title:>6}"]
    for name, value in per_class.items():
        shown = f"{value:6.3f}" if not np.isnan(value) else f"{'n/a':>6}"
        lines.append(f"{name:<{width}}  {shown}")
    return "\n".join(lines)


NO_GT = -1.0  # pycocotools' value of a statistic with no GT to count (no small objects: APs)


def format_metric(value: float, width: int = 0) -> str:
    """``value`` to 3 decimals, right-aligned in ``width``; pycocotools' ``NO_GT`` as n/a."""
    return f"{'n/a' if value == NO_GT else format(value, '.3f'):>{width}}"


def format_detection_metrics(metrics: dict) -> str:
    """COCO box AP (n/a where there is no GT of that size), VOC mAP@0.5 (07 11-point and area)
    and the per-class AP table."""
    return "\n".join(
        [
            "COCO box AP: " + ", ".join(f"{k} {format_metric(metrics[k])}" for k in COCO_STATS),
            f"VOC mAP@0.5: 2007 11-point {format_metric(metrics['VOC07_mAP50'])}, "
            f"area {format_metric(metrics['VOC_area_mAP50'])}",
            format_per_class(metrics["per_class_AP"], "AP"),
        ]
    )
