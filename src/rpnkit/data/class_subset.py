"""A dataset's boxes of some classes only, every other object unlabelled: how OLN (Kim et al.,
RA-L 2022) trains on its *seen* classes (the 20 VOC classes of COCO) before measuring
proposals for the others (``evaluation.open_world``). ``rpnkit train --classes`` and
``DataConfig.classes`` use it.

The other objects are left out, not made ignore regions: to the model they are background,
as in OLN's protocol.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from .records import DatasetIndex

# COCO's names of the 20 PASCAL VOC classes (VOC: aeroplane, diningtable, motorbike,
# pottedplant, sofa, tvmonitor).
VOC_CLASSES_IN_COCO = (
    "airplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "dining table", "dog", "horse", "motorcycle", "person", "potted plant", "sheep", "couch",
    "train", "tv",
)  # fmt: skip
VOC = "voc"  # the name that stands for VOC_CLASSES_IN_COCO


def seen_class_names(seen: str | Sequence[str]) -> tuple[str, ...]:
    """The seen classes: comma-separated names (``"person,car"``) or a sequence of them;
    ``"voc"`` stands for the 20 VOC classes in COCO's naming (``VOC_CLASSES_IN_COCO``)."""
    names = seen.split(",") if isinstance(seen, str) else list(seen)
    out: list[str] = []
    for name in (n.strip() for n in names):
        for one in VOC_CLASSES_IN_COCO if name.lower() == VOC else (name,):
            if one and one not in out:
                out.append(one)
    if not out:
        raise ValueError(f"no seen class names in {seen!r}")
    return tuple(out)


def keep_classes(index: DatasetIndex, names: Sequence[str]) -> DatasetIndex:
    """The index with the boxes of the classes ``names`` only: the others become unlabelled
    (absent, not ignore regions), as OLN trains on the seen classes. Unknown names raise."""
    unknown = sorted(set(names) - set(index.class_names))
    if unknown:
        raise ValueError(f"classes {unknown} are not among {index.source}'s classes")
    wanted = np.array([False, *(n in set(names) for n in index.class_names)])
    records = []
    for r in index.records:
        keep = wanted[np.asarray(r.labels, dtype=np.int64)]
        records.append(
            dataclasses.replace(
                r,
                boxes=r.boxes[keep],
                labels=r.labels[keep],
                ignore=r.ignore[keep],
                areas=r.areas[keep],
            )
        )
    return dataclasses.replace(index, records=records)


def only_classes(index: DatasetIndex, names: Sequence[str]) -> DatasetIndex:
    """``keep_classes``, then the index's classes are ``names`` alone, in that order (labels
    1..len(names), by name): a model trained on it has those classes. A name the index lacks
    (a validation split without that class) is not an error here: it just labels no box."""
    present = [n for n in names if n in set(index.class_names)]
    kept = keep_classes(index, present)
    # old label (1..K; 0 unused) -> its position in ``names``
    new_label = np.zeros(len(index.class_names) + 1, dtype=np.int64)
    position = {n: i + 1 for i, n in enumerate(names)}
    for old, name in enumerate(index.class_names, start=1):
        new_label[old] = position.get(name, 0)
    records = [
        dataclasses.replace(r, labels=new_label[np.asarray(r.labels, dtype=np.int64)])
        for r in kept.records
    ]
    return dataclasses.replace(kept, records=records, class_names=list(names))
