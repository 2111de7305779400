"""Per-image results in original-image pixels, and COCO-style results JSON in and out.

COCO results entries are ``{"file_name", "image_id", "bbox": [x, y, w, h], "score"}`` (and
``category_id``, ``category_name`` for detections), boxes rounded to 0.01 px and scores to
1e-5: what ``rpnkit propose`` and ``detect`` write, what pycocotools' ``loadRes`` reads, and
what the alternating schedule's steps 2 and 4 read back.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
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
        return [self.class_names[int(k) - 1] for k in self.labels.tolist()]

    def to_coco_results(self) -> list[dict]:
        return coco_entries(
            self.image_id,
            self.file_name,
            self.boxes,
            self.scores,
            category_id=[int(k) for k in self.labels.tolist()],
            category_name=self.names,
        )


def to_coco_results(results: Iterable[ProposalResult | DetectionResult]) -> list[dict]:
    """The COCO results entries of many images."""
    return [entry for result in results for entry in result.to_coco_results()]


def coco_entries(image_id, file_name: str, boxes, scores, **per_box) -> list[dict]:
    """COCO results entries for (K, 4) xyxy boxes (host tensors): ``bbox`` as [x, y, w, h],
    rounded; ``scores`` and ``per_box`` (more fields): K values each. Converted to Python
    numbers once per image (``tolist``), not element by element."""
    boxes = _floating(boxes).reshape(-1, 4)
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    scores = _floating(scores).reshape(-1).tolist()
    fields = [("score", scores), *per_box.items()]
    for name, values in fields:
        if len(values) != len(xywh):
            raise ValueError(f"{len(values)} values of {name!r} for {len(xywh)} boxes")
    return [
        {
            "file_name": file_name,
            "image_id": image_id,
            "bbox": [round(v, 2) for v in bbox],
            "score": round(score, 5),
            **{name: values[i] for name, values in fields[1:]},
        }
        for i, (bbox, score) in enumerate(zip(xywh, scores))
    ]


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
