"""Running a network over a labelled dataset and measuring it: proposal recall (COCO-style,
``evaluation.recall``), recall on classes never seen in training (``evaluate_novel_classes``,
OLN's protocol: ``evaluation.open_world``, on batches the runtime runs) or detection mAP
(pycocotools and VOC, ``evaluation.detection``); and, with no network at all, the recall of
stored proposals (``evaluate_stored_proposals``) and the mAP of stored detections
(``evaluate_stored_detections``): COCO results files from rpnkit or anything else."""

from __future__ import annotations

import contextlib
import json
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..data import DataNote, DatasetIndex, SkippedSample, read_dataset
from ..data.dataset import caller_of_package
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
from .device import resolve_device
from .results import DetectionResult, ProposalResult
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
    workers: int = 0,
    batches: Iterable | None = None,
) -> RecallReport:
    """Proposal recall of an RPN (or a detector's first stage) on ``dataset``, or on the
    (metas, proposals) of ``batches`` when given (the runtime's: sliced inference, raised
    limits).

    Size ranges use the items' ``areas`` (COCO's, in original pixels) when they have them, else
    the box areas brought back to original pixels."""
    if batches is None:
        batches = _proposal_batches(
            network, dataset, batch_size, device, progress, precision, workers
        )
    columns, kept = _collect(batches, keep=max(max_dets))
    return _recall_report(columns, kept, max_dets)


def _proposal_batches(network, dataset, batch_size, device, progress, precision, workers):
    """(metas, proposals) of ``network``'s first stage over ``dataset``."""
    forward = proposal_forward(network)
    return _network_batches(
        network, forward, "evaluating", dataset, batch_size, device, progress, precision, workers
    )


def _network_batches(
    network, forward, desc, dataset, batch_size, device, progress, precision, workers
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
        workers=workers,
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
    workers: int = 0,
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
            workers,
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
    return _detection_report(truths, detections, class_names)


def _detection_report(
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


# ---------------------------------------------------------------- stored proposals

MAX_REPORTED = 10  # malformed results entries reported one by one; the rest in one line


@dataclass
class StoredProposals:
    """A COCO results file matched to a dataset's images: per record of the index (in its
    order) the boxes (K, 4) float32 xyxy in original pixels, best first, and their scores;
    ``results`` entries were read, ``unknown_results`` of them for images the dataset does
    not hold, ``bad_results`` malformed; ``notes`` says so in lines (warned as they arise).
    Images without results count as images with no proposals."""

    source: str
    boxes: list[np.ndarray]
    scores: list[np.ndarray]
    results: int = 0
    unknown_results: int = 0
    bad_results: int = 0
    notes: list[str] = field(default_factory=list)
    other_results: int = 0

    def by_file_name(self, index: DatasetIndex) -> dict[str, np.ndarray]:
        """File name -> boxes, for the images that have any (``DetectionDataset``'s
        ``proposals``)."""
        return {r.file_name: b for r, b in zip(index.records, self.boxes) if len(b)}

    def describe(self) -> str:
        """One line: ``results.json: 5000 results for 5 of 6 images (1 without any); 7 for
        images not in the dataset; 1 malformed``."""
        without = sum(1 for b in self.boxes if not len(b))
        text = f"{self.source}: {self.results} results for {len(self.boxes) - without} of "
        text += f"{len(self.boxes)} images" + (f" ({without} without any)" if without else "")
        if self.other_results:
            text += f"; {self.other_results} for the dataset's other images, left out"
        if self.unknown_results:
            text += f"; {self.unknown_results} for images not in the dataset"
        if self.bad_results:
            text += f"; {self.bad_results} malformed"
        return text


Results = str | Path | Iterable[ProposalResult | DetectionResult | dict]
"""Stored results: a COCO results file, or results in memory (``model.propose``'s or
``detect``'s, or COCO results entries)."""


def _results_entries(results: Results) -> tuple[str, list]:
    """(what to call them in messages, COCO results entries) of stored results."""
    if not isinstance(results, (str, Path)):
        if isinstance(results, (ProposalResult, DetectionResult)):
            results = [results]
        if not isinstance(results, Iterable) or isinstance(results, (bytes, dict)):
            raise TypeError(
                "stored results must be a COCO results file, or a list of ProposalResult / "
                f"DetectionResult or of COCO results entries, got {type(results).__name__}"
            )
        entries = []
        for result in results:  # a result's entries, its numbers unrounded
            known = isinstance(result, (ProposalResult, DetectionResult))
            entries.extend(result.encoded().entries(rounded=False) if known else [result])
        return "the results given", entries
    path = Path(results)
    try:
        entries = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read the results: {err}") from err
    if not isinstance(entries, list):
        raise ValueError(
            f"{path}: expected a list of COCO results entries ({{image_id or file_name, "
            f"bbox [x, y, w, h], score}}), got a {type(entries).__name__}"
        )
    return str(path), entries


def _number(value) -> bool:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return ok and math.isfinite(value)


def _result_entry(entry) -> tuple[float, list[float]] | str:
    """``(score, xyxy box)`` of a results entry, or why it is not one."""
    if not isinstance(entry, dict):
        return f"expected an object, got a {type(entry).__name__}"
    name, image_id = entry.get("file_name"), entry.get("image_id")
    if not (isinstance(name, str) and name) and not _is_key(image_id):
        return "neither a 'file_name' nor an 'image_id'"
    if image_id is not None and not _is_key(image_id):  # unhashable: no image has it
        return f"'image_id' {json.dumps(image_id)[:30]} is not an integer or a string"
    bbox = entry.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_number(v) for v in bbox):
        return f"'bbox' {json.dumps(bbox)[:60]} is not 4 finite numbers [x, y, w, h]"
    x, y, w, h = (float(v) for v in bbox)
    if w < 0 or h < 0:
        return f"'bbox' {bbox} has a negative width or height"
    if not _number(entry.get("score")):
        return f"'score' {json.dumps(entry.get('score'))[:30]} is not a finite number"
    return float(entry["score"]), [x, y, x + w, y + h]


def _is_key(value) -> bool:
    """An image or category id as COCO writes them: an integer or a string."""
    return isinstance(value, int | str) and not isinstance(value, bool)


def _image_keys(index: DatasetIndex) -> tuple[dict, dict]:
    """File name -> record position, image id -> record position (the first of each). A file
    name that several images share (``a/1.jpg``, ``b/1.jpg``) names none: their results are
    matched by image id."""
    by_name: dict[str, int | None] = {}
    by_id: dict = {}
    for i, record in enumerate(index.records):
        by_name[record.file_name] = None if record.file_name in by_name else i
        by_id.setdefault(record.image_id, i)
    return by_name, by_id


@dataclass
class _Matched:
    """Results entries given to a dataset's images: per record, its entries as parsed;
    ``bad``: a line per malformed entry; ``unknown``: image key -> its results, for images
    not in the dataset; ``others``: results for the whole dataset's other images."""

    found: list[list]
    bad: list[str] = field(default_factory=list)
    unknown: dict = field(default_factory=dict)
    others: int = 0


def _match_entries(path: str, entries: list, index: DatasetIndex, whole, parse) -> _Matched:
    """Each entry parsed (``parse``: its value, or a string saying why it is malformed) and
    given to its image: by file name (its last part) where one image of ``index`` has it,
    else by image id; ``whole``'s other images are told apart from unknown ones."""
    by_name, by_id = _image_keys(index)
    other_names, other_ids = _image_keys(whole) if whole is not None else ({}, {})
    matched = _Matched([[] for _ in index.records])
    for n, entry in enumerate(entries):
        parsed = parse(entry)
        if isinstance(parsed, str):
            matched.bad.append(f"{path}: entry {n}: {parsed}")
            continue
        name = entry.get("file_name")
        by_file = isinstance(name, str) and bool(name)
        by_file = by_file and by_name.get(Path(name).name, 0) is not None  # else shared
        key = Path(name).name if by_file else entry.get("image_id")
        i = (by_name if by_file else by_id).get(key)
        if i is not None:
            matched.found[i].append(parsed)
        elif key in (other_names if by_file else other_ids):
            matched.others += 1
        else:
            matched.unknown[key] = matched.unknown.get(key, 0) + 1
    return matched


def _note(notes: list[str], line: str) -> None:
    notes.append(line)
    warnings.warn(f"skipped {line}", SkippedSample, stacklevel=caller_of_package())


def read_stored_proposals(
    path: Results,
    index: DatasetIndex,
    *,
    top: int | None = None,
    whole: DatasetIndex | None = None,
) -> StoredProposals:
    """The proposals of a COCO results file for the images of ``index``: entries with a
    ``file_name`` are matched by file name (its last part; by ``image_id`` where several
    images share it), the others by ``image_id`` (COCO's image ids for a COCO dataset;
    rpnkit's own ids for the other formats).
    Results for images not in ``index`` are counted and reported in one line, malformed
    entries one by one (the first ``MAX_REPORTED``); none matched at all is an error. Each
    image keeps its ``top`` best results (all by default); category ids are ignored.
    ``whole``: the dataset that ``index`` is part of (a split's held-out images): results for
    its other images are left out without a word (counted in ``other_results``). ``path``
    may also be results in memory (``Results``)."""
    path, entries = _results_entries(path)
    matched = _match_entries(path, entries, index, whole, _result_entry)
    stored = _stored(path, matched.found, top)
    _report_unmatched(stored, matched, index, len(entries))
    return stored


def _stored(path: str, found: list[list], top: int | None) -> StoredProposals:
    """Each image's results sorted by score (stable: a tie keeps the file's order)."""
    boxes, scores = [], []
    for results in found:
        s = np.array([score for score, _ in results], np.float64)
        b = np.array([box for _, box in results], np.float32).reshape(-1, 4)
        order = np.argsort(-s, kind="stable")[:top]
        boxes.append(b[order])
        scores.append(s[order])
    return StoredProposals(str(path), boxes, scores)


def _report_unmatched(stored: StoredProposals, matched: _Matched, index, results: int) -> None:
    """Counts the results, reports the malformed ones one by one (the first
    ``MAX_REPORTED``) and those for images not in ``index`` in one line; none for an image of
    ``index`` is an error."""
    bad, unknown = matched.bad, matched.unknown
    stored.results, stored.bad_results = results, len(bad)
    stored.other_results, stored.unknown_results = matched.others, sum(unknown.values())
    for line in bad[:MAX_REPORTED]:
        _note(stored.notes, line)
    if len(bad) > MAX_REPORTED:
        _note(stored.notes, f"{stored.source}: {len(bad) - MAX_REPORTED} more malformed entries")
    if unknown:
        first = next(iter(unknown))
        _note(
            stored.notes,
            f"{stored.source}: {stored.unknown_results} result(s) for {len(unknown)} image(s) "
            f"not in {index.source} (first: {first!r})",
        )
    if stored.results == 0:  # a model that found nothing: scored as such, as a checkpoint is
        line = f"{stored.source}: no results: every image scores as found nothing"
        stored.notes.append(line)
        warnings.warn(line, DataNote, stacklevel=caller_of_package())  # the caller's line
    elif not any(matched.found):
        raise ValueError(
            f"{stored.source}: none of its {stored.results} results is for an image of "
            f"{index.source}" + (f" (first: {next(iter(unknown))!r})" if unknown else "")
        )


# ---------------------------------------------------------------- stored detections


@dataclass
class StoredDetections(StoredProposals):
    """A COCO results file of detections matched to a dataset's images and classes, as
    ``StoredProposals`` (boxes (D, 4) float64 xyxy in original pixels, best first) with, per
    record, the ``labels`` (D,) in 1..K of the dataset's classes; ``unknown_categories``
    results were for images of the dataset but of a class it does not have (left out)."""

    labels: list[np.ndarray] = field(default_factory=list)
    unknown_categories: int = 0

    def describe(self) -> str:
        """``StoredProposals.describe``, and ``; 3 of classes not in the dataset``."""
        text = super().describe()
        if self.unknown_categories:
            text += f"; {self.unknown_categories} of classes not in the dataset"
        return text


def _detection_entry(entry) -> tuple[float, list[float], tuple[str, int | str]] | str:
    """``(score, xyxy box, category)`` of a results entry, the category being
    ``("category_name", name)`` when the entry has a name, else ``("category_id", id)``; or
    why the entry is not one."""
    parsed = _result_entry(entry)
    if isinstance(parsed, str):
        return parsed
    name, category = entry.get("category_name"), entry.get("category_id")
    if name is not None:
        if not (isinstance(name, str) and name):
            return f"'category_name' {json.dumps(name)[:30]} is not a class name"
        return (*parsed, ("category_name", name))
    if category is None:
        return "neither a 'category_id' nor a 'category_name'"
    if not _is_key(category):
        return f"'category_id' {json.dumps(category)[:30]} is not an integer or a string"
    return (*parsed, ("category_id", category))


def category_labels(index: DatasetIndex) -> dict[tuple[str, int | str], int]:
    """What a detection's category means in ``index``: ``("category_name", name)`` and
    ``("category_id", id)`` -> label in 1..K. Ids are a COCO JSON's own category ids for a
    COCO dataset, else 1..K in the order of ``index.class_names`` (what ``rpnkit detect``
    writes)."""
    labels: dict[tuple[str, int | str], int] = {}
    for k, name in enumerate(index.class_names, start=1):
        labels.setdefault(("category_name", name), k)
    if index.categories is None:
        labels.update({("category_id", k): k for k in range(1, len(index.class_names) + 1)})
    elif list(index.class_names) == [name for _, name in index.categories]:  # its own classes
        labels.update({("category_id", c): k for k, (c, _) in enumerate(index.categories, 1)})
    else:  # read against other class names: by name
        for category, name in index.categories:
            if ("category_name", name) in labels:
                labels[("category_id", category)] = labels[("category_name", name)]
    return labels


def _describe_categories(index: DatasetIndex) -> str:
    """What category ids and names ``index`` knows, for a message."""
    names = ", ".join(repr(n) for n in index.class_names[:5])
    names += ", ..." if len(index.class_names) > 5 else ""
    ids = "its COCO JSON's category ids" if index.categories is not None else "1..K in that order"
    return f"category_name one of {names}, else category_id {ids}"


def read_stored_detections(
    path: Results,
    index: DatasetIndex,
    *,
    top: int | None = None,
    whole: DatasetIndex | None = None,
) -> StoredDetections:
    """The detections of a COCO results file (``rpnkit detect``'s, detectron2's, mmdet's) for
    the images and classes of ``index``: images matched as ``read_stored_proposals`` matches
    them, classes by ``category_name`` when an entry has one, else by ``category_id``
    (``category_labels``). Malformed entries and results for unknown images are reported as
    for proposals; results of classes the dataset does not have in one line, left out; none
    of a known image, or none of those of a known class, is an error. Each image keeps its
    ``top`` best results (all by default)."""
    path, entries = _results_entries(path)
    matched = _match_entries(path, entries, index, whole, _detection_entry)
    labels = category_labels(index)
    found, unknown = [], {}
    for results in matched.found:
        found.append([(s, box, labels[c]) for s, box, c in results if c in labels])
        for *_, category in results:
            if category not in labels:
                unknown[category] = unknown.get(category, 0) + 1
    stored = _stored_detections(path, found, top)
    _report_unmatched(stored, matched, index, len(entries))
    stored.unknown_categories = sum(unknown.values())
    if unknown:
        kind, first = next(iter(unknown))
        line = f"{path}: {stored.unknown_categories} result(s) of {len(unknown)} class(es) not "
        line += f"in {index.source} (first: {kind} {first!r}; it has "
        _note(stored.notes, f"{line}{_describe_categories(index)})")
    if stored.results and not any(found):
        raise ValueError(
            f"{path}: none of its results for the images of {index.source} is of one of its "
            f"classes ({_describe_categories(index)})"
        )
    return stored


def _stored_detections(path: str, found: list[list], top: int | None) -> StoredDetections:
    """Each image's (score, box, label) results sorted by score (stable: a tie keeps the
    file's order), its best ``top``."""
    boxes, scores, labels = [], [], []
    for results in found:
        s = np.array([score for score, _, _ in results], np.float64)
        order = np.argsort(-s, kind="stable")[:top]
        boxes.append(np.array([box for _, box, _ in results], np.float64).reshape(-1, 4)[order])
        scores.append(s[order])
        labels.append(np.array([k for _, _, k in results], np.int64)[order])
    return StoredDetections(str(path), boxes, scores, labels=labels)


def _record_truth(record) -> ImageTruth:
    """A record's GT as it was read: original pixels."""
    return ImageTruth(
        record.boxes, record.labels, record.ignore, record.areas, record.width, record.height
    )


def evaluate_stored_detections(
    results: Results | StoredDetections,
    data,
    *,
    max_detections: int | None = None,
    split: str = "val",
) -> DetectionReport:
    """COCO mAP (pycocotools) and VOC mAP with per-class AP tables, as ``evaluate_detections``
    measures a Faster R-CNN, of stored detections: a COCO results file
    (``read_stored_detections``) or results in memory (``Results``) against a dataset (its
    path, a ``DatasetIndex`` or a ``DetectionDataset``) and its classes, compared in
    original pixels from the dataset's records (no image is decoded). Each image's best
    ``max_detections`` count (all by default; pycocotools then counts 100 per image and
    class). A path is read at ``split``, as ``Predictor`` reads one (``read_dataset``)."""
    index = _dataset_index(data, split)
    if not index.records:
        raise ValueError(f"{index.source}: no images to evaluate")
    if not isinstance(results, StoredDetections):
        results = read_stored_detections(results, index, top=max_detections)
    elif len(results.boxes) != len(index.records):
        raise ValueError(
            f"{results.source}: read for {len(results.boxes)} images, not the "
            f"{len(index.records)} of {index.source}"
        )
    truths = [_record_truth(record) for record in index.records]
    detections = [
        ImageDetections(b[:max_detections], s[:max_detections], k[:max_detections])
        for b, s, k in zip(results.boxes, results.scores, results.labels)
    ]
    report = _detection_report(truths, detections, index.class_names)
    report.notes, report.unknown_results = list(results.notes), results.unknown_results
    return report


def _dataset_index(data, split: str) -> DatasetIndex:
    """The dataset to score against: a ``DatasetIndex``, a ``DetectionDataset``'s, or a
    dataset's path read at ``split`` (other options through ``read_dataset``)."""
    if isinstance(data, (str, Path)):
        return read_dataset(data, split=split)
    if isinstance(data, DatasetIndex):
        return data
    index = getattr(data, "index", None)
    if isinstance(index, DatasetIndex):
        return index
    raise TypeError(
        "the dataset must be a path, a DatasetIndex or a DetectionDataset, got "
        f"{type(data).__name__}"
    )


def evaluate_stored_proposals(
    results: Results | StoredProposals,
    data,
    *,
    max_dets: Sequence[int] = MAX_DETS,
    device: torch.device | str = "cpu",
    split: str = "val",
) -> RecallReport:
    """Proposal recall, as ``evaluate_proposals`` measures it, of stored proposals: a COCO
    results file (``read_stored_proposals``) or results in memory (``Results``) against a
    dataset (its path, a ``DatasetIndex`` or a ``DetectionDataset``), compared in original
    pixels from the dataset's records (no image is decoded). Each image's best
    ``max(max_dets)`` results count. A path is read at ``split``, as ``Predictor`` reads one
    (``read_dataset``)."""
    index = _dataset_index(data, split)
    if not index.records:
        raise ValueError(f"{index.source}: no images to evaluate")
    if not isinstance(results, StoredProposals):
        results = read_stored_proposals(results, index, top=max(max_dets))
    device = resolve_device(device)
    k = max(max_dets)
    preds, valid = pad_boxes([torch.from_numpy(b[:k].astype(np.float32)) for b in results.boxes])
    gts, mask = pad_boxes([torch.from_numpy(r.boxes) for r in index.records])
    crowd = torch.zeros(mask.shape, dtype=torch.bool)
    areas = torch.zeros(mask.shape, dtype=torch.float64)
    for i, record in enumerate(index.records):
        crowd[i, : len(record.ignore)] = torch.from_numpy(record.ignore)
        areas[i, : len(record.areas)] = torch.from_numpy(record.areas).double()
    inputs = (preds, valid, gts, mask, crowd, areas)
    table = match_proposals(*(t.to(device) for t in inputs))
    kept = [
        (torch.from_numpy(b[:k].astype(np.float32)), torch.from_numpy(r.boxes[~r.ignore]))
        for b, r in zip(results.boxes, index.records)
    ]
    metrics = proposal_recall_summary(table, max_dets)
    return RecallReport(metrics, table, kept, list(results.notes), results.unknown_results)
