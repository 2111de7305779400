"""Running a network over a labelled dataset and measuring it: proposal recall (COCO-style,
``evaluation.recall``), recall on classes never seen in training (``evaluate_novel_classes``,
OLN's protocol: ``evaluation.open_world``, on batches the runtime runs) or detection mAP
(pycocotools and VOC, ``evaluation.detection``); and the reports, which ``stored_results``
also gives for stored proposals and detections, scored with no network."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
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
from ..evaluation.open_world import (
    NOVEL_MAX_DETS,
    novel_class_recall,
    seen_class_names,
    seen_flags,
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
from ..modeling.roi_heads import Detections
from ..modeling.rpn import Proposals
from ..modeling.structures import GroundTruth
from .runner import detection_forward, proposal_forward, run_batches, to_original_pixels

CURVE_KS = (1, 3, 10, 30, 100, 300, 1000)


@dataclass
class RecallReport:
    """Proposal recall of a model on a dataset: the summary ``metrics`` (AR@k, recall@k@0.5 and
    @0.7, per size), the match ``table`` (per-image recall) and, per image, its proposal boxes
    and its counted GT boxes (network-input pixels for a model, original pixels for stored
    proposals; on the CPU) for pictures. For stored proposals, ``notes`` says what could not be
    matched (also warned) and ``unknown_results`` counts the results for images that the
    dataset does not hold."""

    metrics: dict[str, float]
    table: MatchTable
    kept: list[tuple[Tensor, Tensor]]
    notes: list[str] = field(default_factory=list)
    unknown_results: int = 0

    def format(self) -> str:
        """The recall table, and a note where the columns of larger k count fewer proposals
        than k (a model that keeps 300 per image: its AR@1000 is its AR@300)."""
        text = format_recall_table(self.metrics, MAX_DETS)
        most = max((len(boxes) for boxes, _ in self.kept), default=0)
        if 0 < most < max(MAX_DETS):
            wider = ", ".join(f"k={k}" for k in MAX_DETS if k > most)
            text += f"\n(at most {most} proposals per image: {wider} count those {most})"
        return text

    def curves(self, ks: Sequence[int] = CURVE_KS) -> tuple[dict, dict]:
        """Recall against the number of proposals, and against the IoU threshold: up to the
        most proposals an image has (a model that keeps 300 gets no point at 1000, which
        would draw its AR@300 as if measured there), that count itself the last point."""
        preds, pred_valid = pad_boxes([p for p, _ in self.kept])
        gts, gt_valid = pad_boxes([g for _, g in self.kept])
        most = min(max((len(p) for p, _ in self.kept), default=0), max(MAX_DETS))
        cap = most if most > 0 else max(MAX_DETS)
        ks = sorted({*(k for k in ks if k <= cap), cap})
        budgets = sorted({min(k, cap) for k in (100, max(MAX_DETS))})
        by_iou = recall_vs_iou(preds, pred_valid, gts, gt_valid, ks=budgets)
        return recall_vs_proposals(self.table, ks), by_iou


@dataclass
class DetectionReport:
    """COCO box AP (pycocotools), VOC mAP@0.5 (07 11-point and area), per-class AP tables and
    precision-recall curves, as one dict of ``metrics``. For stored detections, ``notes``
    says what could not be matched (also warned) and ``unknown_results`` counts the results
    for images that the dataset does not hold."""

    metrics: dict
    notes: list[str] = field(default_factory=list)
    unknown_results: int = 0

    def format(self) -> str:
        return format_detection_metrics(self.metrics)


@dataclass
class NovelClassReport:
    """Recall on classes never seen in training (OLN's protocol): ``novel`` the AR@k and
    recall@k metrics on the boxes of the classes other than ``seen``, proposals on seen-class
    objects removed before the budget, ``num_novel`` boxes counted; ``all`` the standard
    all-class ``RecallReport`` (its curves are the report's pictures)."""

    seen: tuple[str, ...]
    novel: dict[str, float]
    all: RecallReport
    max_dets: tuple[int, ...] = NOVEL_MAX_DETS

    @property
    def metrics(self) -> dict:
        return {"seen_classes": list(self.seen), "novel": self.novel, "all": self.all.metrics}

    def format(self) -> str:
        n = int(self.novel["num_novel"])
        head = (
            f"novel classes: {n} boxes of the classes other than the {len(self.seen)} seen; "
            "proposals on seen-class objects (IoU >= 0.5) removed before the budget"
        )
        novel = format_recall_table(self.novel, self.max_dets)
        return f"{head}\n{novel}\n\nall classes:\n{self.all.format()}"

    def curves(self, ks: Sequence[int] = CURVE_KS) -> tuple[dict, dict]:
        """The all-class curves (``RecallReport.curves``)."""
        return self.all.curves(ks)


@torch.no_grad()
def evaluate_proposals(
    network: nn.Module,
    dataset: Dataset | None,
    *,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    max_dets: Sequence[int] = MAX_DETS,
    progress: bool = True,
    precision: contextlib.AbstractContextManager | None = None,
    num_workers: int = 0,
    batches: Iterable | None = None,
) -> RecallReport:
    """Proposal recall of an RPN (or a detector's first stage) on ``dataset``, or on the
    (metas, proposals) of ``batches`` when given (the runtime's: sliced inference, raised
    limits).

    Size ranges use the items' ``areas`` (COCO's, in original pixels) when they have them, else
    the box areas brought back to original pixels."""
    if batches is None:
        batches = _proposal_batches(
            network, dataset, batch_size, device, progress, precision, num_workers
        )
    columns, kept = _collect(batches, keep=max(max_dets))
    return _recall_report(columns, kept, max_dets)


def _proposal_batches(network, dataset, batch_size, device, progress, precision, num_workers):
    """(metas, proposals) of ``network``'s first stage over ``dataset``."""
    forward = proposal_forward(network)
    return _network_batches(
        network,
        forward,
        "evaluating",
        dataset,
        batch_size,
        device,
        progress,
        precision,
        num_workers,
    )


def _network_batches(
    network, forward, desc, dataset, batch_size, device, progress, precision, num_workers
):
    """(metas, ``forward(batch)``) over ``dataset`` (``run_batches``), with ``network`` moved
    to ``device`` and put in eval mode."""
    device = torch.device(device)
    network.to(device).eval()
    return run_batches(
        forward,
        dataset,
        batch_size=batch_size,
        device=device,
        progress=progress,
        desc=desc,
        precision=precision,
        num_workers=num_workers,
    )


def _collect(
    batches: Iterable, keep: int | None = None
) -> tuple[dict[str, Tensor], list[tuple[Tensor, Tensor]]]:
    """The (metas, proposals) of ``batches`` as padded (I, ...) columns on the CPU: proposal
    ``boxes`` and ``valid`` (each image's best ``keep``, all by default, sorted by score), GT
    ``gt``, ``mask``, ``crowd``, ``labels`` and ``areas`` (original pixels); and per image all
    its proposals and its counted GT."""
    names = ("boxes", "valid", "gt", "mask", "crowd", "labels", "areas")
    columns: dict[str, list[Tensor]] = {k: [] for k in names}
    kept = []
    for metas, proposals in batches:
        t = _ground_truth(metas)
        boxes, valid = proposals.boxes[:, :keep], proposals.valid[:, :keep]
        row = (boxes, valid, t.boxes, t.mask, t.ignore, t.labels)
        for name, value in zip(names, row):
            columns[name].append(value)
        columns["areas"].append(_original_areas(metas, t.mask.shape))
        for i in range(len(metas)):
            counted = t.mask[i] & ~t.ignore[i]
            kept.append((proposals.boxes[i, : int(proposals.num[i])], t.boxes[i][counted]))
    if not kept:
        raise ValueError("no readable images to evaluate")
    return {k: pad_cat(v) for k, v in columns.items()}, kept


def _recall_report(columns: dict[str, Tensor], kept: list, max_dets: Sequence[int]) -> RecallReport:
    """COCO-style recall of each image's best ``max(max_dets)`` proposals."""
    k = max(max_dets)
    c = columns
    table = match_proposals(
        c["boxes"][:, :k], c["valid"][:, :k], c["gt"], c["mask"], c["crowd"], c["areas"]
    )
    return RecallReport(proposal_recall_summary(table, max_dets), table, kept)


@torch.no_grad()
def evaluate_novel_classes(
    batches: Iterable,
    class_names: Sequence[str],
    seen: str | Sequence[str],
    *,
    max_dets: Sequence[int] = NOVEL_MAX_DETS,
    all_max_dets: Sequence[int] = MAX_DETS,
) -> NovelClassReport:
    """OLN's novel-class protocol on the (metas, proposals) of ``batches`` (the runtime's
    ``Predictor.evaluate_novel_classes``: an RPN's proposals or a detector's final boxes,
    raised limits, sliced inference; labels k naming ``class_names[k - 1]``): AR@k on the
    boxes of the classes not in ``seen`` (names, or ``"voc"``: see
    ``open_world.seen_class_names``), each image's proposals on seen-class objects (IoU >= 0.5)
    removed before the budget of k, and the standard all-class recall. Every proposal an
    image has counts: keep more than ``max(max_dets)`` for the seen ones to leave room."""
    names = seen_class_names(seen)
    unknown = sorted(set(names) - set(class_names))
    if unknown:  # before any batch is drawn: a lazy one runs the network
        raise ValueError(
            f"seen classes {unknown} are not among the dataset's classes "
            f"({', '.join(list(class_names)[:5])}, ...)"
        )
    c, kept = _collect(batches)
    flags = seen_flags(c["labels"], class_names, names) & c["mask"]
    novel = novel_class_recall(
        c["boxes"], c["valid"], c["gt"], c["mask"], flags, c["crowd"], c["areas"],
        max_dets=max_dets,
    )  # fmt: skip
    report = _recall_report(c, kept, all_max_dets)
    return NovelClassReport(names, novel, report, tuple(max_dets))


def detections_as_proposals(found: Detections) -> Proposals:
    """Final boxes scored as proposals: a class-agnostic detector's (OLN's full model), best
    first, their labels dropped."""
    levels = torch.zeros(found.scores.shape, dtype=torch.int64, device=found.scores.device)
    return Proposals(found.boxes, found.scores, levels, found.num)


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
    dataset: Dataset | None,
    class_names: Sequence[str],
    *,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
    progress: bool = True,
    precision: contextlib.AbstractContextManager | None = None,
    num_workers: int = 0,
    batches: Iterable | None = None,
) -> DetectionReport:
    """COCO mAP (pycocotools) and VOC mAP (07 11-point and area) with per-class AP tables, of
    ``detector`` on ``dataset`` or of the (metas, detections) of ``batches`` when given. A
    class-agnostic detector (OLN's localization head) is scored class-agnostically: every GT
    box is of the one class "object"."""
    agnostic = detector is not None and detector.roi_heads.config.class_agnostic
    if agnostic:
        class_names = ("object",)
    if batches is None:
        batches = _network_batches(
            detector,
            detection_forward(detector),
            "detecting",
            dataset,
            batch_size,
            device,
            progress,
            precision,
            num_workers,
        )
    truths, detections = [], []
    for metas, found in batches:
        for meta, (boxes, scores, labels) in zip(metas, found.per_image()):
            factors = to_original_pixels(meta)
            oh, ow = meta["orig_size"]
            gt = (meta["boxes"] * factors).numpy()
            ignore, areas = meta["ignore"].numpy(), meta["areas"].numpy()
            gt_labels = meta["labels"].numpy()
            gt_labels = np.ones_like(gt_labels) if agnostic else gt_labels
            truths.append(ImageTruth(gt, gt_labels, ignore, areas, ow, oh))
            detections.append(
                ImageDetections((boxes * factors).numpy(), scores.numpy(), labels.numpy())
            )
    return detection_report(truths, detections, class_names)


def detection_report(
    truths: Sequence[ImageTruth],
    detections: Sequence[ImageDetections],
    class_names: Sequence[str],
) -> DetectionReport:
    """COCO mAP (pycocotools), VOC mAP (07 11-point and area), per-class AP and
    precision-recall curves of per-image detections against per-image GT (original pixels)."""
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
