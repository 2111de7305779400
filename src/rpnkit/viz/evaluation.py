"""Pictures of an evaluation: recall curves for proposals, precision-recall for detections."""

from __future__ import annotations

from pathlib import Path

from ..engine.evaluate import DetectionReport, RecallReport
from .charts import plot_precision_recall, plot_recall_curves


def plot_evaluation(report: RecallReport | DetectionReport, folder: str | Path) -> Path:
    """``recall.png`` (recall against proposals and against IoU) for a recall report,
    ``precision_recall.png`` for a detection report, in ``folder``."""
    folder = Path(folder)
    if isinstance(report, DetectionReport):
        path = folder / "precision_recall.png"
        plot_precision_recall(report.metrics["pr_curves"], path)
        return path
    by_proposals, by_iou = report.curves()
    path = folder / "recall.png"
    plot_recall_curves({"model": by_proposals}, path, by_iou={"model": by_iou})
    return path
