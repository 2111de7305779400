"""Stored results scored with no network at all: COCO results files (rpnkit's, detectron2's,
mmdet's) or results in memory, of proposals (``read_stored_proposals``, their recall:
``evaluate_stored_proposals``) or detections (``read_stored_detections``, their mAP:
``evaluate_stored_detections``), matched to a dataset's images and classes and compared in
original pixels from its records."""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data import DataNote, DatasetIndex, SkippedSample, read_dataset
from ..data.records import caller_of_package, listed
from ..data.splits import ImageNames
from ..evaluation.detection import ImageDetections, ImageTruth
from ..evaluation.recall import MAX_DETS, match_proposals, pad_boxes, proposal_recall_summary
from .device import resolve_device
from .evaluate import DetectionReport, RecallReport, detection_report
from .results import DetectionResult, ProposalResult

# ---------------------------------------------------------------- stored proposals

MAX_REPORTED = 10  # malformed results entries reported one by one; the rest in one line


@dataclass
class StoredProposals:
    """A COCO results file matched to a dataset's images: per record of the index (in its
    order) the boxes (K, 4) float32 xyxy in original pixels, best first, and their scores;
    ``results`` entries were read, ``unknown_results`` of them for images the dataset does
    not hold, ``ambiguous_results`` of a file name several of its images have (and no image
    id), ``bad_results`` malformed; ``notes`` says so in lines (warned as they arise).
    Images without results count as images with no proposals."""

    source: str
    boxes: list[np.ndarray]
    scores: list[np.ndarray]
    results: int = 0
    unknown_results: int = 0
    bad_results: int = 0
    notes: list[str] = field(default_factory=list)
    other_results: int = 0
    ambiguous_results: int = 0

    def by_path(self, index: DatasetIndex) -> dict[str, np.ndarray]:
        """Image path -> boxes, for the images that have any (``DetectionDataset``'s
        ``proposals``: by path, as images of one file name may be several)."""
        return {str(r.path): b for r, b in zip(index.records, self.boxes) if len(b)}

    def describe(self) -> str:
        """One line: ``results.json: 5000 results for 5 of 6 images (1 without any); 7 for
        images not in the dataset; 1 malformed``; when most images have no proposal (not
        all), a hint that the file may be of one split (not for detections, which a score
        threshold leaves out of many images)."""
        without = sum(1 for b in self.boxes if not len(b))
        text = f"{self.source}: {self.results} results for {len(self.boxes) - without} of "
        text += f"{len(self.boxes)} images" + (f" ({without} without any" if without else "")
        most = without and 2 * without > len(self.boxes) > without  # most images, not all
        if most and not isinstance(self, StoredDetections):
            text += ": a file of one split? give its --split or --split-file"
        text += ")" if without else ""
        if self.other_results:
            text += f"; {self.other_results} for the dataset's other images, left out"
        if self.unknown_results:
            text += f"; {self.unknown_results} for images not in the dataset"
        if self.ambiguous_results:
            text += f"; {self.ambiguous_results} of a file name several images have"
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


class _Images:
    """The images that results are matched to: ``index``'s, within ``whole`` (the dataset it
    is part of; results for its other images are told apart from unknown ones). A file name
    finds its image by the longest trailing part of it that an image's path ends with (the
    full relative path ``a/img.jpg``, else the file name ``img.jpg``: ``ImageNames.find``)."""

    def __init__(self, index: DatasetIndex, whole: DatasetIndex | None) -> None:
        records = list(whole.records) if whole is not None else []
        seen = {os.path.normpath(r.path) for r in records}
        records += [r for r in index.records if os.path.normpath(r.path) not in seen]
        position = {os.path.normpath(r.path): i for i, r in enumerate(index.records)}
        self.position = [position.get(os.path.normpath(r.path)) for r in records]
        self.names = ImageNames(records)
        self.by_id: dict = {}  # image id -> position in index (the first of each)
        for i, record in enumerate(index.records):
            self.by_id.setdefault(record.image_id, i)
        self.other_ids = {r.image_id for r in records} - set(self.by_id)

    def locate(self, entry: dict) -> tuple[str, object]:
        """Where a results entry goes: ``("found", position in index)``, ``("other", None)``
        (an image of ``whole`` only), ``("unknown", its file name or image id)``, or
        ``("shared", the images' names)`` (a file name several images have, and no image
        id of one of them). By file name when the entry has one (by image id among the images
        of that name where several have it), else by image id."""
        name, image_id = entry.get("file_name"), entry.get("image_id")
        if isinstance(name, str) and name:
            found = self.names.find(name)
            if not found:
                return "unknown", name
            if len(found) == 1:
                i = self.position[found[0]]
                return ("found", i) if i is not None else ("other", None)
            return self._among(found, image_id, name)
        if image_id in self.by_id:
            return "found", self.by_id[image_id]
        return ("other", None) if image_id in self.other_ids else ("unknown", image_id)

    def _among(self, found: list[int], image_id, name: str) -> tuple[str, object]:
        """Which of the images ``found`` for a shared file name an entry's ``image_id`` means:
        one of them only (an id of an image of another name is no match: a list of files of
        one name from two folders numbers them by position)."""
        if image_id in self.by_id:
            if self.by_id[image_id] in {self.position[j] for j in found}:
                return "found", self.by_id[image_id]
            return "unknown", f"{name} (image_id {image_id} is an image of another name)"
        if image_id in self.other_ids:
            return "other", None
        return "shared", tuple(self.names.names[j] for j in found)


@dataclass
class _Matched:
    """Results entries given to a dataset's images: per record, its entries as parsed;
    ``bad``: a line per malformed entry; ``unknown``: image key -> its results, for images
    not in the dataset; ``others``: results for the whole dataset's other images;
    ``shared``: (file name, the images that have it) -> its results, for entries of a file
    name several images have and no image id."""

    found: list[list]
    bad: list[str] = field(default_factory=list)
    unknown: dict = field(default_factory=dict)
    others: int = 0
    shared: dict = field(default_factory=dict)


def _match_entries(path: str, entries: list, index: DatasetIndex, whole, parse) -> _Matched:
    """Each entry parsed (``parse``: its value, or a string saying why it is malformed) and
    given to its image (``_Images.locate``)."""
    images = _Images(index, whole)
    matched = _Matched([[] for _ in index.records])
    for n, entry in enumerate(entries):
        parsed = parse(entry)
        if isinstance(parsed, str):
            matched.bad.append(f"{path}: entry {n}: {parsed}")
            continue
        where, key = images.locate(entry)
        if where == "found":
            matched.found[key].append(parsed)
        elif where == "other":
            matched.others += 1
        else:
            table = matched.unknown if where == "unknown" else matched.shared
            key = key if where == "unknown" else (entry["file_name"], key)
            table[key] = table.get(key, 0) + 1
    return matched


def _shared_line(source: str, shared: dict) -> str:
    """One line for the results whose file name several images have (and no image id)."""
    (name, images), more = next(iter(shared)), len(shared) - 1
    line = f"{source}: {sum(shared.values())} result(s) matched to no image: file_name "
    line += f"{name!r} names {len(images)} images ({listed(images)})"
    line += f" (and {more} more such file name(s))" if more else ""
    return line + ": give image_id or the path"


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
    ``file_name`` are matched by it, as a path first (``a/img.jpg``: the image whose path
    ends so), then by its last part (``img.jpg``) where one image has it, else by
    ``image_id``; the others by ``image_id`` (COCO's image ids for a COCO dataset; rpnkit's
    own ids for the other formats). Results for images not in ``index`` are counted and
    reported in one line, those of a file name several images have (and no ``image_id``) in
    one line, malformed entries one by one (the first ``MAX_REPORTED``); none matched at all
    is an error. Each
    image keeps its ``top`` best results (all by default); category ids are ignored.
    ``whole``: the dataset that ``index`` is part of (a split's held-out images): results for
    its other images are left out without a word (counted in ``other_results``). ``path``
    may also be results in memory (``Results``)."""
    path, entries = _results_entries(path)
    matched = _match_entries(path, entries, index, whole, _result_entry)
    boxes, scores, _ = _best_first(matched.found, top, np.float32)
    stored = StoredProposals(str(path), boxes, scores)
    _report_unmatched(stored, matched, index, len(entries))
    return stored


def _best_first(found: list[list], top: int | None, box_dtype: type) -> tuple[list, list, list]:
    """Each image's (score, xyxy box) or (score, box, label) results sorted by score (stable:
    a tie keeps the file's order), its best ``top``, as per-image columns: boxes (K, 4) of
    ``box_dtype``, scores (K,) float64 and labels (K,) int64 (empty for unlabelled results)."""
    boxes, scores, labels = [], [], []
    for results in found:
        s = np.array([r[0] for r in results], np.float64)
        order = np.argsort(-s, kind="stable")[:top]
        boxes.append(np.array([r[1] for r in results], box_dtype).reshape(-1, 4)[order])
        scores.append(s[order])
        labelled = [r[2] for r in results if len(r) > 2]
        labels.append(np.array(labelled, np.int64)[order] if labelled else np.zeros(0, np.int64))
    return boxes, scores, labels


def _report_unmatched(stored: StoredProposals, matched: _Matched, index, results: int) -> None:
    """Counts the results, reports the malformed ones one by one (the first
    ``MAX_REPORTED``), those for images not in ``index`` in one line and those of a file name
    several images have in one line; none for an image of ``index`` is an error."""
    bad, unknown = matched.bad, matched.unknown
    stored.results, stored.bad_results = results, len(bad)
    stored.other_results, stored.unknown_results = matched.others, sum(unknown.values())
    stored.ambiguous_results = sum(matched.shared.values())
    for line in bad[:MAX_REPORTED]:
        _note(stored.notes, line)
    if len(bad) > MAX_REPORTED:
        _note(stored.notes, f"{stored.source}: {len(bad) - MAX_REPORTED} more malformed entries")
    if matched.shared and any(matched.found):
        _note(stored.notes, _shared_line(stored.source, matched.shared))
    if unknown and any(matched.found):
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
    elif not any(matched.found) and matched.shared and not unknown:
        raise ValueError(_shared_line(stored.source, matched.shared))
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
    COCO dataset, else 1..K in the order of ``index.class_names`` (the dataset's own order:
    ``rpnkit detect`` numbers its checkpoint's classes, the same only when they are the
    dataset's in that order; its entries carry ``category_name``, matched first)."""
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
    names = listed(map(repr, index.class_names))
    ids = "its COCO JSON's category ids" if index.categories is not None else "1..K in that order"
    return f"category_name one of {names}, else category_id {ids}"


def _check_classed(path: str, entries: list) -> None:
    """An error, in one line, for detections of which no entry has a class (proposals)."""
    classed = ("category_id", "category_name")
    if entries and not any(
        isinstance(e, dict) and any(e.get(key) is not None for key in classed) for e in entries
    ):
        raise ValueError(
            f"{path}: none of its {len(entries)} entries has a category_id or category_name: "
            "proposals? score them with --proposals"
        )


def _note_ids_only(stored: StoredDetections, matched: _Matched, index: DatasetIndex) -> None:
    """One note when results of a dataset that is not COCO JSON give a category_id alone:
    what the ids are taken as, which the file's writer may not have meant."""
    ids_only = sum(c[0] == "category_id" for found in matched.found for *_, c in found)
    if not ids_only or index.categories is not None:
        return
    order = listed(f"{k} {n!r}" for k, n in enumerate(index.class_names, start=1))
    line = (
        f"{stored.source}: {ids_only} result(s) with a category_id and no category_name: ids "
        f"taken as 1..K in the dataset's class order ({order}), which the model that wrote "
        "them may not share (rpnkit detect numbers its checkpoint's classes); category_name "
        "avoids the ambiguity"
    )
    stored.notes.append(line)
    warnings.warn(line, DataNote, stacklevel=caller_of_package())


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
    _check_classed(path, entries)
    matched = _match_entries(path, entries, index, whole, _detection_entry)
    labels = category_labels(index)
    found, unknown = [], {}
    for results in matched.found:
        found.append([(s, box, labels[c]) for s, box, c in results if c in labels])
        for *_, category in results:
            if category not in labels:
                unknown[category] = unknown.get(category, 0) + 1
    boxes, scores, labels_per_image = _best_first(found, top, np.float64)
    stored = StoredDetections(str(path), boxes, scores, labels=labels_per_image)
    _report_unmatched(stored, matched, index, len(entries))
    _note_ids_only(stored, matched, index)
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
    split: str | None = None,
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
    report = detection_report(truths, detections, index.class_names)
    report.notes, report.unknown_results = list(results.notes), results.unknown_results
    return report


def _dataset_index(data, split: str | None) -> DatasetIndex:
    """The dataset to score against: a ``DatasetIndex``, a ``DetectionDataset``'s, or a
    dataset's path read at ``split`` (None: COCO's and YOLO's ``val``, VOC and CSV whole;
    other options through ``read_dataset``)."""
    if isinstance(data, (str, Path)):
        return read_dataset(data, split=split, default_split="val")
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
    split: str | None = None,
) -> RecallReport:
    """Proposal recall, as ``evaluate_proposals`` measures it, of stored proposals: a COCO
    results file (``read_stored_proposals``) or results in memory (``Results``) against a
    dataset (its path, a ``DatasetIndex`` or a ``DetectionDataset``), compared in original
    pixels from the dataset's records (no image is decoded). ``max_dets`` are the k of AR@k
    (pycocotools' ``maxDets``, not a cap as ``max_detections`` is): each image's best
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
