"""``verify_onnx``: an ONNX export run in ONNX Runtime against its checkpoint run by rpnkit in
PyTorch, on the same images at batch 1 (``rpnkit export --verify IMAGES``).

Both sides read and resize each image as ``rpnkit detect`` does (``Predictor.dataset``: the
same pixels), and work at the settings the file's metadata records as baked in: PyTorch runs
``Predictor.detect(score_threshold=, max_detections=, batch_size=1)`` (an RPN
``Predictor.propose(top=K)``), so a file exported at other settings than it says, or a
runtime that computes something else, shows. Boxes are compared in the photo's pixels.

Rows are matched, not compared in order: near-equal scores may rank either way in two
runtimes. Each PyTorch row (best first) takes the free ONNX Runtime row of its label that
overlaps it most at IoU >= ``MIN_IOU``; the pair must agree in score to ``SCORE_TOLERANCE``.
Rows left on both sides that overlap each other above the NMS threshold, of one label and
with scores within the tolerance, are a tie that NMS broke the other way (each box would
suppress the other, and which one a runtime keeps follows the order of equal scores): those
are excused while they stay a minority of an image's rows (``MAX_NEAR_TIES``), as a wrong box
decoding, say, would make every row one. A row still left is excused when it is at a cut:
its score within the tolerance of the score threshold (it may pass on one side only) or,
where the other side is full (D or K rows), of that side's last score. Any other row left is
a failure.

Tolerances, float32: scores within 1e-3, boxes at IoU >= 0.99. ONNX Runtime computes the
same float32 function with other kernels: tests/test_export.py measures scores within 6e-8
and boxes within 3e-5 px on the tiny preset, and deeper backbones at 800 px move scores by
about 1e-6 (docs/deploy.md). A mistake in what the graph computes moves them by far more: a
threshold or a limit other than the file says changes the counts, BGR pixels in place of
RGB move scores by 1e-2 and more. IoU is scale-free (a box's error grows with its size).
float16 (``--fp16``): scores within 1e-2 and IoU >= 0.9, half precision's rounding
(tests/test_export.py's check of the fp16 graph).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..data.records import IMAGE_SUFFIXES
from ..engine.runtime import load
from ..modeling.boxes import box_iou

SCORE_TOLERANCE = {"fp32": 1e-3, "fp16": 1e-2}
MIN_IOU = {"fp32": 0.99, "fp16": 0.9}
MAX_NEAR_TIES = 0.25  # ties broken the other way, excused: at most this part of an image's rows
MAX_IMAGES = 10  # the images verified: the first ones given


@dataclass
class Rows:
    """One image's valid outputs: (N, 4) xyxy boxes in the photo's pixels, (N,) scores and
    (N,) labels (None: an RPN's proposals)."""

    boxes: Tensor
    scores: Tensor
    labels: Tensor | None


@dataclass
class Verification:
    """What ``verify_onnx`` found; ``line()`` says it in one line, ``ok`` whether it is within
    the tolerance (``problems`` lists what is not, first ones first)."""

    onnx: Path
    checkpoint: Path
    what: str  # "detections" or "proposals"
    score_tolerance: float
    min_iou: float
    images: int = 0
    given: int = 0  # images given (the first MAX_IMAGES readable ones are verified)
    found: int = 0  # ONNX Runtime's rows
    expected: int = 0  # PyTorch's rows
    paired: int = 0  # rows of one found in the other (IoU >= min_iou, the same label)
    box_difference: float = 0.0  # largest coordinate difference of a pair, photo pixels
    lowest_iou: float = 1.0
    score_difference: float = 0.0
    count_mismatches: int = 0  # images whose counts differ
    label_mismatches: int = 0
    at_cut: int = 0  # rows of one side only, at the score threshold or the last row
    near_ties: int = 0  # pairs NMS broke the other way
    seconds: tuple[float, float] = (0.0, 0.0)  # ONNX Runtime's and PyTorch's, in all
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        """The one-line report."""
        of = f" (the first {self.images} of {self.given})" if self.given > self.images else ""
        per_image = [f"{s / max(self.images, 1):.2f}" for s in self.seconds]
        excused = f", {self.at_cut} at a cut" if self.at_cut else ""
        excused += f", {self.near_ties} near-tie swaps" if self.near_ties else ""
        return (
            f"verify {self.onnx.name}: ONNX Runtime {self.found} {self.what}, PyTorch "
            f"{self.expected}, on {self.images} images{of} at batch 1; {self.paired} paired: "
            f"largest box difference {self.box_difference:.3g} px (lowest IoU "
            f"{self.lowest_iou:.4f}), largest score difference {self.score_difference:.2g}; "
            f"{self.count_mismatches} count and "
            f"{self.label_mismatches} label mismatches{excused}; {per_image[0]} s and "
            f"{per_image[1]} s per image; {'OK' if self.ok else 'FAILED'} (tolerance: "
            f"scores {self.score_tolerance:g}, IoU >= {self.min_iou})"
        )

    def failure(self) -> str:
        """The one-line error of a verification beyond the tolerance."""
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        return (
            f"{self.onnx}: differs from {self.checkpoint} in PyTorch beyond the tolerance: "
            f"{self.problems[0]}{more}"
        )


def check_verify_inputs(images: str | Path | list) -> str | Path | list:
    """The images to verify on as ``Predictor.detect`` takes them (one path: a folder or an
    image; several: image files), or a one-line ValueError, before any export, for a missing
    onnxruntime, a path that is not there, or a folder among several."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ValueError('--verify needs onnxruntime: pip install -e ".[export]"') from None
    given = [images] if isinstance(images, (str, Path)) else list(images)
    for path in map(Path, given):
        if not path.exists():
            raise ValueError(f"--verify {path}: not found (give a folder or image files)")
        if len(given) > 1 and path.suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(
                f"--verify {path}: of several paths each is an image file; a folder is given alone"
            )
    return given[0] if len(given) == 1 else given


def verify_onnx(
    onnx_path: str | Path, checkpoint: str | Path, images: str | Path | list
) -> Verification:
    """``onnx_path`` (an ``rpnkit export`` of ``checkpoint``) in ONNX Runtime on the CPU
    against ``checkpoint`` in PyTorch, on the first ``MAX_IMAGES`` readable images of
    ``images`` (a folder, an image file or a list of them) at batch 1, at the settings the
    file records (module docstring)."""
    import onnxruntime as ort

    images = check_verify_inputs(images)
    onnx_path, checkpoint = Path(onnx_path), Path(checkpoint)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    settings = recorded_settings(session.get_modelmeta().custom_metadata_map, onnx_path)
    predictor = load(checkpoint, "cpu")
    if predictor.spec.kind != settings["kind"]:
        raise ValueError(
            f"{onnx_path}: an export of a {settings['kind']} model, and {checkpoint} holds a "
            f"{predictor.spec.kind}: give the checkpoint it was exported from"
        )
    dataset = predictor.dataset(images)
    items = first_items(dataset, MAX_IMAGES)
    verification = Verification(
        onnx_path,
        checkpoint,
        "detections" if settings["detector"] else "proposals",
        SCORE_TOLERANCE[settings["precision"]],
        MIN_IOU[settings["precision"]],
        given=len(dataset),
    )
    started = time.perf_counter()
    got = [onnx_rows(session, item) for item in items]
    middle = time.perf_counter()
    ref = torch_rows(predictor, [item["source"] for item in items], settings)
    verification.seconds = (middle - started, time.perf_counter() - middle)
    for item, got_rows, ref_rows in zip(items, got, ref):
        compare(item["file_name"], got_rows, ref_rows, settings, verification)
    return verification


def first_items(dataset, count: int) -> list[dict]:
    """The first ``count`` readable items of ``dataset`` (each read from its file: an
    unreadable one is left out), or a one-line ValueError where none is."""
    items = []
    for i in range(len(dataset)):
        item = dataset[i]
        if isinstance(item, dict) and item.get("source") is not None:
            items.append(item)
        if len(items) == count:
            break
    if not items:
        raise ValueError(f"--verify: no readable image among the {len(dataset)} given")
    return items


def recorded_settings(metadata: dict[str, str], path: Path) -> dict:
    """The settings the file records as baked in (``graph_metadata``), with its ``kind``,
    ``detector`` and ``precision``; a one-line ValueError for a file without them."""
    keys = ["kind", "precision", "score_threshold", "nms_threshold", "proposals_per_image"]
    try:
        settings = {key: metadata[f"rpnkit.{key}"] for key in keys}
        detector = settings["kind"] == "faster-rcnn"
        if detector:
            settings["detections_per_image"] = metadata["rpnkit.detections_per_image"]
    except KeyError as err:
        raise ValueError(
            f"{path}: its metadata has no {err.args[0]}: not an export of this rpnkit (export "
            "the checkpoint again)"
        ) from None
    numbers = {k: json.loads(v) for k, v in settings.items() if k not in ("kind", "precision")}
    width = numbers["detections_per_image"] if detector else numbers["proposals_per_image"]
    return {**settings, **numbers, "detector": detector, "width": width}


def onnx_rows(session, item: dict) -> Rows:
    """ONNX Runtime's valid rows for one dataset item (its resized (3, h, w) uint8 image),
    boxes scaled back to the photo's pixels."""
    image = item["image"]
    h, w = image.shape[1:]
    feeds = {"images": image[None].numpy(), "image_sizes": np.array([[h, w]], np.int64)}
    outputs = [torch.from_numpy(np.asarray(out)) for out in session.run(None, feeds)]
    n = int(outputs[-1][0])
    oh, ow = item["orig_size"]
    to_photo = torch.tensor([ow / w, oh / h, ow / w, oh / h])
    labels = outputs[2][0, :n] if len(outputs) == 4 else None
    return Rows(outputs[0][0, :n].float() * to_photo, outputs[1][0, :n].float(), labels)


def torch_rows(predictor, sources: list, settings: dict) -> list[Rows]:
    """rpnkit's rows in PyTorch for the same images, at batch 1 and the file's settings: the
    detections scoring at least its threshold, at most D; an RPN's best K proposals."""
    if settings["detector"]:
        results = predictor.detect(
            sources,
            score_threshold=settings["score_threshold"],
            max_detections=settings["detections_per_image"],
            batch_size=1,
        )
        return [Rows(r.boxes, r.scores, r.labels) for r in results]
    results = predictor.propose(sources, top=settings["proposals_per_image"], batch_size=1)
    return [Rows(r.boxes, r.scores, None) for r in results]


def compare(name: str, got: Rows, ref: Rows, settings: dict, found: Verification) -> None:
    """Match one image's rows (module docstring) and add what differs to ``found``."""
    found.images += 1
    found.found += len(got.scores)
    found.expected += len(ref.scores)
    found.count_mismatches += len(got.scores) != len(ref.scores)
    iou = box_iou(ref.boxes, got.boxes)  # (n_ref, n_got)
    left_ref, left_got = pair_rows(name, iou, got, ref, found)
    left_ref, left_got = near_ties(left_ref, left_got, iou, got, ref, settings, found)
    left_ref = at_cut(left_ref, ref, got, settings, found)
    left_got = at_cut(left_got, got, ref, settings, found)
    for side, rows, left, closest in (
        ("PyTorch", ref, left_ref, iou),
        ("ONNX Runtime", got, left_got, iou.T),
    ):
        for i in left:
            box = [round(v, 1) for v in rows.boxes[i].tolist()]
            near = f" (closest: IoU {float(closest[i].max()):.2f})" if closest.shape[1] else ""
            found.problems.append(
                f"{name}: {side}'s row {i} (score {float(rows.scores[i]):.4f}, box {box}) has "
                f"no counterpart{near}"
            )


def pair_rows(name: str, iou: Tensor, got: Rows, ref: Rows, found: Verification):
    """Each PyTorch row, best first, paired with the free ONNX Runtime row of its label that
    overlaps it most, at IoU >= ``MIN_IOU``; the pairs' differences added to ``found``. A row
    left whose box a left row of another label has (IoU >= ``MIN_IOU``, score within the
    tolerance) is a label mismatch. Returns the rows left on each side."""
    same = torch.ones_like(iou, dtype=torch.bool)
    if ref.labels is not None:
        same = ref.labels[:, None] == got.labels[None, :]
    free = torch.ones(len(got.scores), dtype=torch.bool)
    left_ref = []
    for i in range(len(ref.scores)):
        overlapping = (iou[i] >= found.min_iou) & same[i] & free
        if not overlapping.any():
            left_ref.append(i)
            continue
        j = int(torch.where(overlapping, iou[i], -1.0).argmax())
        free[j] = False
        found.paired += 1
        score = abs(float(got.scores[j] - ref.scores[i]))
        box = float((got.boxes[j] - ref.boxes[i]).abs().max())
        found.score_difference = max(found.score_difference, score)
        found.box_difference = max(found.box_difference, box)
        found.lowest_iou = min(found.lowest_iou, float(iou[i, j]))
        if score > found.score_tolerance:
            found.problems.append(
                f"{name}: row {i} differs by {score:.2g} in score (its box by {box:.3g} px)"
            )
    still = []
    for i in left_ref:  # the same box and score under another label
        scores = (got.scores - ref.scores[i]).abs() <= found.score_tolerance
        other = (iou[i] >= found.min_iou) & ~same[i] & scores & free
        if other.any():
            free[int(other.nonzero()[0])] = False
            found.label_mismatches += 1
            found.problems.append(f"{name}: row {i}'s label differs")
        else:
            still.append(i)
    return still, free.nonzero().flatten().tolist()


def near_ties(left_ref, left_got, iou, got: Rows, ref: Rows, settings, found: Verification):
    """Pairs of left rows that NMS broke the other way: of one label, overlapping above the
    NMS threshold, scores within the tolerance (each would suppress the other); excused while
    rare (``MAX_NEAR_TIES`` of the image's rows). Returns the rows still left."""
    allowed = max(1, int(MAX_NEAR_TIES * max(len(ref.scores), len(got.scores))))
    still, taken = [], set()
    for i in left_ref:
        options = [
            j
            for j in left_got
            if j not in taken
            and (ref.labels is None or bool(got.labels[j] == ref.labels[i]))
            and abs(float(got.scores[j] - ref.scores[i])) <= found.score_tolerance
            and float(iou[i, j]) > settings["nms_threshold"]
        ]
        if not options or len(taken) == allowed:
            still.append(i)
            continue
        taken.add(max(options, key=lambda j: float(iou[i, j])))
        found.near_ties += 1
    return still, [j for j in left_got if j not in taken]


def at_cut(left: list, rows: Rows, other: Rows, settings: dict, found: Verification) -> list:
    """The left rows of ``rows`` that are not at a cut: a score within the tolerance of the
    threshold, or, where ``other`` is full (D or K rows), of its last score."""
    full = len(other.scores) >= settings["width"]
    still = []
    for i in left:
        score = float(rows.scores[i])
        if abs(score - settings["score_threshold"]) <= found.score_tolerance or (
            full and abs(score - float(other.scores[-1])) <= found.score_tolerance
        ):
            found.at_cut += 1
        else:
            still.append(i)
    return still
