"""Proposal recall: rpnkit's ``match_proposals`` against pycocotools' COCOeval(useCats=0).

    PYTHONPATH=src .venv/bin/python bench/bench_recall.py [--device cpu|cuda] [--json out.json]
    PYTHONPATH=src .venv/bin/python bench/bench_recall.py --reference   # also the old loop
    ... --threads 1             torch's CPU threads
    ... --save-case case.pt     then, on a machine without COCO128:  ... --case case.pt

The case: COCO128's train2017 GT as rpnkit reads it (939 boxes, 10 crowd, COCO mask areas; the
pycocotools GT is built from the same records, so both see the very same numbers) and 1,000
synthetic proposals per image, contested like real ones: 40% are jittered copies of GT boxes
(noise 0.12 x the box size per side: best IoU mostly 0.5-0.9, about 55 candidates per GT box),
the rest random boxes in the image; scores are random, so each image's proposals are in a
random order, sorted by decreasing score.

Timed: ours = ``match_proposals`` + ``proposal_recall_summary`` on padded tensors already on
the device (CUDA synchronised); theirs = ``COCOeval(gt, dt, "bbox")`` with ``useCats = 0`` and
``maxDets = [10, 100, 300, 1000]``, evaluate + accumulate + summarize (``loadRes`` excluded).
The first call of each is reported apart (warm-up); then the medians of ``--reps`` calls, wall
clock and process CPU time. Checked: every recall cell (IoU x area x maxDets) and every AR@k
agree to 1e-4 (they agree to 2e-16). On CUDA it also counts the host syncs of one call.

Measured (2026-11-30), seconds, median:

| machine | COCOeval | rpnkit | old rank loop | speed-up over COCOeval |
| --- | --- | --- | --- | --- |
| 2-core CPU, load ~4 (other jobs), torch's 2 threads | 11.0 | 0.81 | 23.0 | 13.6x |
| same, ``--threads 1`` | 10.9 | 0.164 | 5.18 | 66x |
| H200 (``--device cuda``; COCOeval on its host CPU) | 8.67 | 0.0048 | 0.220 | 1800x |
| that host's 16 CPU cores | 8.27 | 0.044 | | 188x |

On a busy 2-core machine two torch threads wait for each other at every operation: one thread
is 5x faster there, for the old loop too. On CUDA the sync debug mode counts 15 host syncs in
one call, summary included; ``match_proposals`` waits for the chunking, three sizes and once
per round (4 rounds here).
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
    dataset = {"info": {}, "images": images, "annotations": anns,
               "categories": [{"id": 1, "name": "object"}]}  # fmt: skip
    valid = torch.ones(num_images, NUM_PROPOSALS, dtype=torch.bool)
    return {"tensors": (preds, valid, gts, mask, crowd, areas), "dataset": dataset,
            "results": results}  # fmt: skip


def coco_objects(case: dict) -> tuple:
    """pycocotools' GT and results of a case (``loadRes``, not timed)."""
    from pycocotools.coco import COCO

    gt = COCO()
    gt.dataset = case["dataset"]
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        return gt, gt.loadRes(case["results"])


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


def run_coco(gt, dt) -> np.ndarray:
    """COCOeval(useCats=0): evaluate + accumulate + summarize; -> (T, R, M) recall."""
    from pycocotools.cocoeval import COCOeval

    ev = COCOeval(gt, dt, "bbox")
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


def timed(fn, reps: int, device: torch.device) -> tuple[dict, object]:
    """Seconds of ``fn()``: the first call (warm-up), then the medians of ``reps`` calls, wall
    clock and this process's CPU time (all threads), and the last result."""
    wall, cpu = [], []
    for _ in range(reps + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    times = {"warmup_s": wall[0], "s": statistics.median(wall[1:]),
             "cpu_s": statistics.median(cpu[1:])}  # fmt: skip
    return times, out


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
    parser.add_argument("--save-case", type=Path, help="write the case (tensors, COCO JSON)")
    parser.add_argument("--case", type=Path, help="read a case written by --save-case")
    parser.add_argument("--threads", type=int, help="torch's CPU threads (default: torch's)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)

    case = torch.load(args.case, weights_only=False) if args.case else build_case()
    if args.save_case:
        torch.save(case, args.save_case)
    gt, dt = coco_objects(case)
    tensors = tuple(t.to(device) for t in case["tensors"])
    print(f"COCO128 train2017: {len(tensors[0])} images, {int(tensors[3].sum())} GT boxes "
          f"({int(tensors[4].sum())} crowd), {int(tensors[1].sum())} proposals, "
          f"{_count_candidates(*case['tensors'])} with IoU >= 0.5 to some GT box; "
          f"torch threads {torch.get_num_threads()}, device {device}")  # fmt: skip

    cpu = torch.device("cpu")
    coco, reference = timed(lambda: run_coco(gt, dt), args.coco_reps, cpu)
    ours, (summary, recall) = timed(lambda: run_ours(tensors), args.reps, device)
    rows = {"COCOeval(useCats=0)": coco, "rpnkit match+summary": ours}
    row = {"device": str(device), "coco": coco, "ours": ours, "speedup": coco["s"] / ours["s"],
           "max_abs_diff": check(summary, recall, reference),
           "AR": {f"AR@{k}": summary[f"AR@{k}"] for k in MAX_DETS}}  # fmt: skip
    if device.type == "cuda":
        row["syncs"] = count_syncs(lambda: run_ours(tensors))
    if args.reference:
        fn = lambda: run_ours(tensors, _match_proposals_reference)  # noqa: E731
        row["reference"], (ref_summary, ref_recall) = timed(fn, 1, device)
        check(ref_summary, ref_recall, reference)
        rows["old rank loop"] = row["reference"]
    for name, t in rows.items():
        print(f"{name:22s} {t['s']:8.3f} s median, CPU time {t['cpu_s']:7.3f} s, "
              f"first call {t['warmup_s']:.3f} s")  # fmt: skip
    ar = ", ".join(f"{k} {v:.4f}" for k, v in row["AR"].items())
    print(f"speed-up over COCOeval {row['speedup']:.1f}x (wall), "
          f"{coco['cpu_s'] / ours['cpu_s']:.1f}x (CPU time); "
          f"max |diff| {row['max_abs_diff']:.1e}; {ar}")  # fmt: skip
    if "syncs" in row:
        print(f"host syncs in one call: {row['syncs']}")
    if args.json:
        args.json.write_text(json.dumps(row, indent=2))


def count_syncs(fn) -> int:
    """Host syncs that ``fn()`` makes on CUDA, as the sync debug mode reports them."""
    import warnings

    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def _count_candidates(preds, valid, gts, mask, crowd, areas) -> int:
    """Proposals with IoU >= 0.5 to some real or crowd GT box (crowd: IoA)."""
    from rpnkit.evaluation.recall import _iou_with_crowd

    iou = _iou_with_crowd(preds, gts, crowd & mask)
    return int(((iou >= 0.5) & mask[:, None]).any(-1).logical_and(valid).sum())


if __name__ == "__main__":
    main()
