"""Per-image results in original-image pixels, and COCO-style results JSON in and out.

COCO results entries are ``{"file_name", "image_id", "bbox": [x, y, w, h], "score"}`` (and
``category_id``, ``category_name`` for detections), boxes rounded to 0.01 px and scores to
1e-5: what ``rpnkit propose`` and ``detect`` write, what pycocotools' ``loadRes`` reads, and
what the alternating schedule's steps 2 and 4 read back.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


@dataclass
class ProposalResult:
    """One image's proposals: ``boxes`` (K, 4) xyxy in original pixels, best first, and
    ``scores`` (K,); ``image_size`` is the original (height, width); ``source`` the file the
    image came from (None for images given in memory)."""

    image_id: int | str
    file_name: str
    boxes: Tensor
    scores: Tensor
    image_size: tuple[int, int]
    source: Path | None = None

    def to_coco_results(self) -> list[dict]:
        return coco_entries(self.image_id, self.file_name, self.boxes, self.scores)

    def to_coco_json(self) -> list[str]:
        """``to_coco_results`` as each entry's JSON text (``coco_entries_json``)."""
        return coco_entries_json(self.image_id, self.file_name, self.boxes, self.scores)


@dataclass
class DetectionResult:
    """One image's detections: ``boxes`` (D, 4) xyxy in original pixels, ``scores`` (D,),
    ``labels`` (D,) in 1..K, named by ``class_names[label - 1]``."""

    image_id: int | str
    file_name: str
    boxes: Tensor
    scores: Tensor
    labels: Tensor
    class_names: tuple[str, ...]
    image_size: tuple[int, int]
    source: Path | None = None

    @property
    def names(self) -> list[str]:
        return self._classes()["category_name"]

    def to_coco_results(self) -> list[dict]:
        return coco_entries(
            self.image_id, self.file_name, self.boxes, self.scores, **self._classes()
        )

    def to_coco_json(self) -> list[str]:
        """``to_coco_results`` as each entry's JSON text (``coco_entries_json``)."""
        return coco_entries_json(
            self.image_id, self.file_name, self.boxes, self.scores, **self._classes()
        )

    def _classes(self) -> dict[str, list]:
        labels = [int(k) for k in self.labels.tolist()]
        return {
            "category_id": labels,
            "category_name": [self.class_names[k - 1] for k in labels],
        }


def to_coco_results(results: Iterable[ProposalResult | DetectionResult]) -> list[dict]:
    """The COCO results entries of many images."""
    return [entry for result in results for entry in result.to_coco_results()]


def coco_entries(image_id, file_name: str, boxes, scores, **per_box) -> list[dict]:
    """COCO results entries for (K, 4) xyxy boxes (host tensors or arrays): ``bbox`` as
    [x, y, w, h] rounded to 0.01 px, ``score`` to 1e-5; ``per_box`` (more fields): K values
    each. Converted to Python numbers once per image, not element by element."""
    rows, fields = _rounded(boxes, scores, per_box)
    return [
        {
            "file_name": file_name,
            "image_id": image_id,
            "bbox": row[:4],
            "score": row[4],
            **{name: values[i] for name, values in fields},
        }
        for i, row in enumerate(rows.tolist())
    ]


def coco_entries_json(image_id, file_name: str, boxes, scores, **per_box) -> list[str]:
    """``coco_entries`` as JSON text, one string per entry, written directly (3x faster than
    building the dicts and encoding them: ``rpnkit detect`` and ``propose`` write hundreds of
    entries per batch on the thread that launches the model). Non-finite numbers, which JSON
    cannot spell, go through ``json.dumps`` as before (NaN, Infinity)."""
    rows, fields = _rounded(boxes, scores, per_box)
    if not rows.isfinite().all():
        return [json.dumps(e) for e in coco_entries(image_id, file_name, boxes, scores, **per_box)]
    head = f'{{"file_name": {json.dumps(file_name)}, "image_id": {json.dumps(image_id)}, "bbox": ['
    spelled = [(json.dumps(name), _spelled(values)) for name, values in fields]
    return [
        f'{head}{x!r}, {y!r}, {w!r}, {h!r}], "score": {score!r}'
        + "".join(f", {name}: {values[i]}" for name, values in spelled)
        + "}"
        for i, (x, y, w, h, score) in enumerate(rows.tolist())
    ]


def _rounded(boxes, scores, per_box: dict) -> tuple[Tensor, list[tuple[str, Sequence]]]:
    """(K, 5) float64 [x, y, w, h, score] per box, rounded, and ``per_box``'s fields as
    (name, values), every count checked."""
    boxes = _floating(boxes).reshape(-1, 4).double()
    scores = _floating(scores).reshape(-1).double()
    fields = list(per_box.items())
    for name, values in [("score", scores), *fields]:
        if len(values) != len(boxes):
            raise ValueError(f"{len(values)} values of {name!r} for {len(boxes)} boxes")
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)
    rounded = torch.cat([(xywh * 100).round() / 100, (scores[:, None] * 1e5).round() / 1e5], 1)
    return rounded, fields


def _spelled(values: Sequence) -> list[str]:
    """Each value's JSON text, each distinct value encoded once (class ids and names repeat)."""
    known = {v: json.dumps(v) for v in set(values)}
    return [known[v] for v in values]


def _floating(values) -> Tensor:
    """A tensor of floats (integer coordinates or scores still written as floats)."""
    values = torch.as_tensor(values)
    return values if values.is_floating_point() else values.float()


def write_json(path: str | Path, data, *, indent: int | None = None) -> Path:
    """Write ``data`` as JSON, atomically (a temporary file renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=indent) + ("\n" if indent is not None else ""))
    tmp.replace(path)
    return path


class CocoResultsWriter:
    """A COCO results JSON written as the results arrive (``with CocoResultsWriter(path) as
    out: out.add(result)``): each image's entries encoded when it comes, none held, into a
    temporary file renamed into place on a clean exit and removed on an error, so a file at
    ``path`` is always whole. The text is ``json.dumps`` of ``to_coco_results``'s list."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.entries = 0
        self._tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        self._file = None

    def __enter__(self) -> CocoResultsWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self._tmp.open("w")
        self._file.write("[")
        return self

    def add(self, result: ProposalResult | DetectionResult) -> None:
        texts = result.to_coco_json()
        if texts:
            self._file.write((", " if self.entries else "") + ", ".join(texts))
            self.entries += len(texts)

    def __exit__(self, kind, error, trace) -> None:
        if kind is None:
            self._file.write("]")
        self._file.close()
        if kind is None:
            self._tmp.replace(self.path)
        else:
            self._tmp.unlink(missing_ok=True)


def write_coco_results(path: str | Path, results: Iterable[ProposalResult | DetectionResult]):
    """Every result's entries into the COCO results JSON ``path`` as they come; ``path``."""
    with CocoResultsWriter(path) as out:
        for result in results:
            out.add(result)
    return out.path


def load_proposals(path: str | Path) -> dict[str, np.ndarray]:
    """COCO results JSON -> file name -> (K, 4) xyxy boxes in original pixels, best first."""
    path = Path(path)
    try:
        entries = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read the proposals: {err}") from err
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of COCO results entries")
    grouped: dict[str, list[tuple[float, list[float]]]] = defaultdict(list)
    for i, entry in enumerate(entries):
        try:
            x, y, w, h = (float(v) for v in entry["bbox"])
            grouped[str(entry["file_name"])].append((float(entry["score"]), [x, y, x + w, y + h]))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"{path}: entry {i} is not a proposal with file_name, bbox [x, y, w, h] and "
                f"score: {err}"
            ) from err
    return {
        name: np.array([b for _, b in sorted(found, key=lambda t: -t[0])], np.float32)
        for name, found in grouped.items()
    }
