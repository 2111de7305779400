"""Proposal recall: rpnkit's ``match_proposals`` against pycocotools' COCOeval(useCats=0).

    PYTHONPATH=src .venv/bin/python bench/bench_recall.py [--device cpu|cuda] [--json out.json]
    PYTHONPATH=src .venv/bin/python bench/bench_recall.py --reference   # also the old loop

The case: COCO128's train2017 GT as rpnkit reads it (boxes, crowd flags, COCO mask areas; the
pycocotools GT is built from the same records, so both see the very same numbers) and 1,000
synthetic proposals per image, contested like real ones: 40% are jittered copies of GT boxes
(noise proportional to the box size, so their IoU spreads over 0.3-1), the rest random boxes in
the image; scores are random and each image's proposals sorted by decreasing score.

Timed: ours = ``match_proposals`` + ``proposal_recall_summary`` on padded tensors already on
the device (CUDA synchronised); theirs = ``COCOeval(gt, dt, "bbox")`` with ``useCats = 0`` and
``maxDets = [10, 100, 300, 1000]``, evaluate + accumulate + summarize (``loadRes`` excluded).
The first call of each is reported as warm-up; then the median of ``--reps`` calls. Checked:
every recall cell (IoU x area x maxDets) and every AR@k agree to 1e-4.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from rpnkit.data import read_dataset
from rpnkit.evaluation.recall import (
    AREA_RANGES,
    MAX_DETS,
    _match_proposals_reference,
    match_proposals,
    proposal_recall_summary,
)

COCO128 = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "coco128"
NUM_PROPOSALS = 1000


def build_case(seed: int = 0) -> dict:
    """Padded tensors for rpnkit and the COCO GT/results for pycocotools, of the same boxes."""
    from pycocotools.coco import COCO

    records = read_dataset(COCO128, split="train2017").records
    rng = np.random.default_rng(seed)
    num_images, g_max = len(records), max(len(r.boxes) for r in records)
    gts = torch.zeros(num_images, g_max, 4, dtype=torch.float64)
    mask = torch.zeros(num_images, g_max, dtype=torch.bool)
    crowd, areas = torch.zeros_like(mask), torch.zeros(num_images, g_max, dtype=torch.float64)
    preds = torch.zeros(num_images, NUM_PROPOSALS, 4, dtype=torch.float64)
    images, anns, results = [], [], []
    for i, rec in enumerate(records):
        images.append({"id": i + 1, "width": rec.width, "height": rec.height})
        b = rec.boxes.astype(np.float64)
        n = len(b)
        gts[i, :n], mask[i, :n] = torch.from_numpy(b), True
        crowd[i, :n] = torch.from_numpy(rec.ignore)
        areas[i, :n] = torch.from_numpy(rec.areas.astype(np.float64))
        for g in range(n):
            bbox = [
                float(b[g, 0]),
                float(b[g, 1]),
                float(b[g, 2] - b[g, 0]),
                float(b[g, 3] - b[g, 1]),
            ]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "bbox": bbox,
                         "iscrowd": int(rec.ignore[g]), "area": float(areas[i, g])})  # fmt: skip
        boxes = _proposals(rng, b, rec.width, rec.height)
        preds[i] = torch.from_numpy(boxes)
        scores = np.sort(rng.random(NUM_PROPOSALS))[::-1]
        for box, score in zip(boxes, scores):
            x1, y1, x2, y2 = (float(v) for v in box)
            results.append({"image_id": i + 1, "category_id": 1, "score": float(score),
                            "bbox": [x1, y1, x2 - x1, y2 - y1]})  # fmt: skip
    gt = COCO()
    gt.dataset = {"info": {}, "images": images, "annotations": anns,
                  "categories": [{"id": 1, "name": "object"}]}  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes(results)
    valid = torch.ones(num_images, NUM_PROPOSALS, dtype=torch.bool)
    return {"tensors": (preds, valid, gts, mask, crowd, areas), "gt": gt, "dt": dt}


def _proposals(rng: np.random.Generator, gt: np.ndarray, width: int, height: int) -> np.ndarray:
    """(NUM_PROPOSALS, 4) xyxy: jittered GT copies and random boxes, in a random order (the
    scores are drawn independently, so the order is the score order)."""
    num_jitter = int(0.4 * NUM_PROPOSALS) if len(gt) else 0
    src = gt[rng.integers(len(gt), size=num_jitter)] if num_jitter else np.zeros((0, 4))
    wh = np.maximum(src[:, 2:] - src[:, :2], 1.0)
    jitter = src + rng.normal(0, 0.12, (num_jitter, 4)) * np.concatenate([wh, wh], 1)
    num_random = NUM_PROPOSALS - num_jitter
    xy = rng.uniform(0, 1, (num_random, 2)) * [width, height]
    size = np.exp(rng.uniform(np.log(8), np.log(max(width, height)), (num_random, 2)))
    boxes = np.concatenate([jitter, np.concatenate([xy - size / 2, xy + size / 2], 1)])
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    # round as a results JSON would, so both sides read identical numbers
    return np.round(boxes[rng.permutation(NUM_PROPOSALS)], 2)


def run_coco(case: dict) -> np.ndarray:
    """COCOeval(useCats=0): evaluate + accumulate + summarize; -> (T, R, M) recall."""
    from pycocotools.cocoeval import COCOeval

    ev = COCOeval(case["gt"], case["dt"], "bbox")
    ev.params.useCats = 0
    ev.params.maxDets = list(MAX_DETS)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.eval["recall"][:, 0, :, :]


def run_ours(tensors: tuple, fn=match_proposals) -> tuple[dict, np.ndarray]:
    table = fn(*tensors)
    summary = proposal_recall_summary(table, MAX_DETS)
    recall = torch.stack([table.recall(k) for k in MAX_DETS], -1)  # (R, T, M)
    return summary, recall.cpu().numpy().transpose(1, 0, 2)


def timed(fn, reps: int, device: torch.device) -> tuple[float, float, object]:
    """(warm-up seconds, median seconds of ``reps`` calls, last result)."""
    times = []
    for _ in range(reps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return times[0], statistics.median(times[1:]), out


def check(summary: dict, recall: np.ndarray, reference: np.ndarray) -> float:
    """Largest difference over every recall cell and every AR@k; asserts it is <= 1e-4."""
    diff = float(np.abs(recall - reference).max())
    for m, k in enumerate(MAX_DETS):
        for r, name in enumerate(AREA_RANGES):
            row = reference[:, r, m]
            ref = float(row[row > -1].mean()) if (row > -1).any() else -1.0
            key = f"AR@{k}" + ("" if name == "all" else f"_{name}")
            diff = max(diff, abs(summary[key] - ref))
    assert diff <= 1e-4, f"rpnkit and COCOeval disagree by {diff}"
    return diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--coco-reps", type=int, default=3)
    parser.add_argument("--reference", action="store_true", help="also time the old rank loop")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)

    case = build_case()
    tensors = tuple(t.to(device) for t in case["tensors"])
    n_candidates = _count_candidates(*case["tensors"])
    print(f"COCO128 train2017: {len(tensors[0])} images, {int(tensors[3].sum())} GT boxes "
          f"({int(tensors[4].sum())} crowd), {int(tensors[1].sum())} proposals, "
          f"{n_candidates} with IoU >= 0.5 to some GT box; torch threads "
          f"{torch.get_num_threads()}, device {device}")  # fmt: skip

    coco_warm, coco_s, reference = timed(
        lambda: run_coco(case), args.coco_reps, torch.device("cpu")
    )
    ours_warm, ours_s, (summary, recall) = timed(lambda: run_ours(tensors), args.reps, device)
    diff = check(summary, recall, reference)
    row = {"device": str(device), "coco_s": coco_s, "coco_warmup_s": coco_warm, "ours_s": ours_s,
           "ours_warmup_s": ours_warm, "speedup": coco_s / ours_s, "max_abs_diff": diff,
           "AR": {f"AR@{k}": summary[f"AR@{k}"] for k in MAX_DETS}}  # fmt: skip
    print(f"COCOeval(useCats=0)   {coco_s:8.3f} s  (warm-up {coco_warm:.3f} s)")
    print(f"rpnkit match+summary  {ours_s:8.3f} s  (warm-up {ours_warm:.3f} s)")
    print(f"speed-up {coco_s / ours_s:.1f}x; max |diff| {diff:.2e}; "
          + ", ".join(f"{k} {v:.4f}" for k, v in row["AR"].items()))  # fmt: skip
    if args.reference:
        ref = lambda: run_ours(tensors, _match_proposals_reference)  # noqa: E731
        ref_warm, ref_s, (ref_summary, ref_recall) = timed(ref, 1, device)
        check(ref_summary, ref_recall, reference)
        row.update(reference_s=ref_s, reference_warmup_s=ref_warm)
        print(f"old rank loop         {ref_s:8.3f} s  (warm-up {ref_warm:.3f} s)")
    if args.json:
        args.json.write_text(json.dumps(row, indent=2))


def _count_candidates(preds, valid, gts, mask, crowd, areas) -> int:
    """Proposals with IoU >= 0.5 to some real or crowd GT box (crowd: IoA)."""
    from rpnkit.evaluation.recall import _iou_with_crowd

    iou = _iou_with_crowd(preds, gts, crowd & mask)
    return int(((iou >= 0.5) & mask[:, None]).any(-1).logical_and(valid).sum())


if __name__ == "__main__":
    main()
