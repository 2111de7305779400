"""Per-image results in original-image pixels, and COCO-style results JSON in and out.

COCO results entries are ``{"file_name", "image_id", "bbox": [x, y, w, h], "score"}`` (and
``category_id``, ``category_name`` for detections), boxes rounded to 0.01 px and scores to
1e-5: what ``rpnkit propose`` and ``detect`` write, what pycocotools' ``loadRes`` reads, and
what the alternating schedule's steps 2 and 4 read back.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .paths import output_file


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
        """One COCO results entry per proposal: ``image_id``, ``file_name``, ``bbox`` [x, y,
        w, h] in original pixels (rounded to 0.01 px), ``score`` (to 1e-5)."""
        return self.encoded().entries()

    def encoded(self) -> EncodedEntries:
        """The entries as ``write_coco_results`` writes them (``encode_entries``)."""
        return encode_entries(self.image_id, self.file_name, self.boxes, self.scores)


@dataclass
class DetectionResult:
    """One image's detections: ``boxes`` (D, 4) xyxy in original pixels, ``scores`` (D,),
    ``labels`` (D,) in 1..K, named by ``class_names[label - 1]``; written with the
    ``category_id`` ``category_ids[label - 1]`` (a COCO JSON's, when the images came from
    one), else the label."""

    image_id: int | str
    file_name: str
    boxes: Tensor
    scores: Tensor
    labels: Tensor
    class_names: tuple[str, ...]
    image_size: tuple[int, int]
    source: Path | None = None
    category_ids: tuple[int | str, ...] | None = None

    @property
    def names(self) -> list[str]:
        """Each detection's class name, in the order of ``boxes``."""
        return self._classes()["category_name"]

    def to_coco_results(self) -> list[dict]:
        """One COCO results entry per detection: ``image_id``, ``file_name``, ``bbox`` [x, y,
        w, h] in original pixels (rounded to 0.01 px), ``score`` (to 1e-5), ``category_id``
        and ``category_name``."""
        return self.encoded().entries()

    def encoded(self) -> EncodedEntries:
        """The entries as ``write_coco_results`` writes them (``encode_entries``)."""
        return encode_entries(
            self.image_id, self.file_name, self.boxes, self.scores, **self._classes()
        )

    def _classes(self) -> dict[str, list]:
        labels = [int(k) for k in self.labels.tolist()]
        ids = self.category_ids
        return {
            "category_id": [ids[k - 1] for k in labels] if ids else labels,
            "category_name": [self.class_names[k - 1] for k in labels],
        }


def to_coco_results(results: Iterable[ProposalResult | DetectionResult]) -> list[dict]:
    """The COCO results entries of many images (or of one result alone)."""
    return [entry for result in each_result(results, "to_coco_results") for entry in
            result.to_coco_results()]  # fmt: skip


def each_result(results, where: str) -> Iterable[ProposalResult | DetectionResult]:
    """``results`` one by one (one result alone too), a TypeError naming ``where`` for
    anything that is not a ``ProposalResult`` or a ``DetectionResult``."""
    if isinstance(results, (ProposalResult, DetectionResult)):
        results = [results]
    if not isinstance(results, Iterable) or isinstance(results, (str, bytes, dict)):
        raise TypeError(f"{where}: expected results (model.propose's or detect's), got "
                        f"{type(results).__name__}")  # fmt: skip
    return _checked(results, where)


def _checked(results: Iterable, where: str) -> Iterable[ProposalResult | DetectionResult]:
    for n, result in enumerate(results):
        if not isinstance(result, (ProposalResult, DetectionResult)):
            raise TypeError(
                f"{where} takes ProposalResult and DetectionResult (model.propose's or "
                f"detect's): result {n}, got {type(result).__name__}"
            )
        yield result


def coco_entries(image_id, file_name: str, boxes, scores, **per_box) -> list[dict]:
    """COCO results entries for (K, 4) xyxy boxes (host tensors or arrays): ``bbox`` as
    [x, y, w, h] rounded to 0.01 px, ``score`` to 1e-5; ``per_box`` (more fields): K values
    each."""
    return encode_entries(image_id, file_name, boxes, scores, **per_box).entries()


def encode_entries(image_id, file_name: str, boxes, scores, **per_box) -> EncodedEntries:
    """One image's entries as an ``EncodedEntries``, every field's count checked. The numbers
    are rounded when first read (``rows``): in the background writer's process, not in the
    thread that launches the model."""
    boxes = _floating(boxes).reshape(-1, 4)
    scores = _floating(scores).reshape(-1)
    fields = tuple((name, list(values)) for name, values in per_box.items())
    for name, values in [("score", scores), *fields]:
        if len(values) != len(boxes):
            raise ValueError(f"{len(values)} values of {name!r} for {len(boxes)} boxes")
    return EncodedEntries(image_id, file_name, boxes, scores, fields)


@dataclass(frozen=True, eq=False)
class EncodedEntries:
    """One image's COCO results entries: ``boxes`` (K, 4) xyxy and ``scores`` (K,) as given
    (host arrays, floating; not copied: the writer pickles or formats them at once), rounded
    into ``rows``, and the per-box ``fields`` as (name, K values). Small to pickle (20 bytes a
    float32 box): what the background results writer receives (``engine/writing.py``)."""

    image_id: int | str
    file_name: str
    boxes: np.ndarray
    scores: np.ndarray
    fields: tuple[tuple[str, list], ...] = ()

    @functools.cached_property
    def rows(self) -> np.ndarray:
        """(K, 5) float64 [x, y, w, h, score]: box numbers rounded to 0.01, scores to 1e-5.
        Widths in the boxes' own dtype (float16, 32 or 64; ``encode_entries`` widens bfloat16
        and integers to float32), then float64, where a float32's x 100 is exact: rounded as
        Python's ``round(v, 2)`` rounds it (float64 inputs may differ at exact decimal ties);
        ``np.round`` rounds half to even, as ``round``."""
        boxes = self.boxes
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).astype(np.float64)
        scores = self.scores.astype(np.float64)[:, None]
        return np.concatenate([np.round(xywh * 100) / 100, np.round(scores * 1e5) / 1e5], 1)

    def __len__(self) -> int:
        return len(self.scores)

    def entries(self, *, rounded: bool = True) -> list[dict]:
        """The entries as dicts; ``rounded=False``: the numbers as they are, [x, y, w, h]
        from the boxes in float64, where x + w gives x2 back (scoring results in memory
        exactly as the model's own evaluation does)."""
        rows = self.rows if rounded else self._exact_rows()
        return [
            {
                "file_name": self.file_name,
                "image_id": self.image_id,
                "bbox": row[:4],
                "score": row[4],
                **{name: values[i] for name, values in self.fields},
            }
            for i, row in enumerate(rows.tolist())
        ]

    def _exact_rows(self) -> np.ndarray:
        boxes = self.boxes.astype(np.float64)
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
        return np.concatenate([xywh, self.scores.astype(np.float64)[:, None]], 1)

    def text(self) -> str:
        """The entries as ``json.dumps`` writes each, joined by ", ": one %-formatting of all
        of them. ``json.dumps`` spells a float by its ``repr``; these are hundredths (boxes)
        and hundred-thousandths (scores), whose ``repr`` is read from tables (``_decimals``: the
        whole text 2x faster), else ``repr`` is used. NaN and infinities, which JSON
        cannot spell, go through ``json.dumps`` itself (NaN, Infinity)."""
        if not np.isfinite(self.rows).all():
            return ", ".join(json.dumps(entry) for entry in self.entries())
        table = _decimals(self.rows)
        numbers = '%d%s, %d%s, %d%s, %d%s], "score": %s'
        if table is None:
            table, numbers = self.rows.astype(object), '%r, %r, %r, %r], "score": %r'
        if self.fields:  # each entry's numbers, then its fields' texts
            spelled = np.array([_spelled(values) for _, values in self.fields], dtype=object)
            table = np.concatenate([table, spelled.reshape(len(self.fields), -1).T], axis=1)
        head = (
            f'{{"file_name": {json.dumps(self.file_name)}, "image_id": {json.dumps(self.image_id)}'
        )
        entry = (
            head.replace("%", "%%")
            + ', "bbox": ['
            + numbers
            + "".join(f", {json.dumps(name).replace('%', '%%')}: %s" for name, _ in self.fields)
            + "}"
        )
        return ", ".join([entry] * len(self.rows)) % tuple(table.reshape(-1).tolist())


_FRACTIONS = np.array(
    [".0" if f == 0 else f".{f // 10}" if f % 10 == 0 else f".{f:02d}" for f in range(100)],
    dtype=object,
)  # repr's ending of a number of whole hundredths, by its hundredths


@functools.cache
def _score_texts() -> np.ndarray:
    """``repr(k / 1e5)`` for k in 0..100,000 (built once per process: 30 ms, 6 MB)."""
    return np.array([repr(k / 1e5) for k in range(100_001)], dtype=object)


def _decimals(rows: np.ndarray) -> np.ndarray | None:
    """(K, 9) objects for the %-format ``%d%s`` x 4, ``%s``: each box number's whole part and
    ``repr``'s ending for its hundredths, and the score's ``repr``; None where the tables do
    not give ``repr``'s text: a negative number or -0.0, a coordinate of 1e9 or more (``repr``
    turns to exponents long after), a score above 1."""
    boxes, scores = rows[:, :4], rows[:, 4]
    if np.signbit(rows).any() or (boxes >= 1e9).any() or (scores > 1).any():
        return None
    whole, hundredths = np.divmod(np.rint(boxes * 100).astype(np.int64), 100)
    table = np.empty((len(rows), 9), dtype=object)
    table[:, 0:8:2] = whole
    table[:, 1:8:2] = _FRACTIONS[hundredths]
    table[:, 8] = _score_texts()[np.rint(scores * 1e5).astype(np.int64)]
    return table


def _spelled(values: Sequence) -> list[str]:
    """Each value's JSON text, each distinct value encoded once (class ids and names repeat;
    keyed by type too: 1 and True are equal keys, not equal JSON)."""
    known = {(type(v), v): json.dumps(v) for v in values}
    return [known[type(v), v] for v in values]


def _floating(values) -> np.ndarray:
    """A host array of floats (integer coordinates or scores still written as floats; other
    sequences as ``torch.as_tensor`` reads them: Python floats as float32)."""
    if not isinstance(values, np.ndarray):
        values = torch.as_tensor(values)
        if values.dtype not in (torch.float16, torch.float32, torch.float64):
            values = values.float()
        return values.numpy(force=True)  # detached, on the host
    return values if np.issubdtype(values.dtype, np.floating) else values.astype(np.float32)


def write_json(path: str | Path, data, *, indent: int | None = None) -> Path:
    """Write ``data`` as JSON, atomically (a temporary file renamed; removed if the writing
    fails). Its folders are made; a folder at ``path``, or a file in the place of one of its
    folders, is a ``ValueError`` (``run_folder.output_file``)."""
    path = output_file(path, what="JSON")
    text = json.dumps(data, indent=indent) + ("\n" if indent is not None else "")
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise ValueError(f"{path}: cannot write the JSON there ({err})") from err
        raise
    return path
