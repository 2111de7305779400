"""Proposals for classes never seen in training: vanilla RPN against OLN's localization-quality
objectness (``RPNConfig.objectness_mode``), on the novel-class protocol of OLN.

Training: COCO128's train2017 images (COCO JSON) with the boxes of the seen classes only (the
20 VOC classes by default); every other object is unlabelled, absent from the GT, so it can
never become a positive. The RPN is class-agnostic. Test: COCO128's val2017 images (YOLO
labels): AR@10/100/1000 on the boxes of the other classes, proposals on seen-class objects
(IoU >= 0.5) removed before the budget (``rpnkit.evaluation.open_world``), and the standard
all-class AR@100/1000. Each mode is trained with every seed; the script reports the mean and
the spread (sample standard deviation, min and max) over seeds.

    # the CPU setting (2 cores, ~40 min): 2 modes x 3 seeds
    PYTHONPATH=src python bench/bench_open_world.py --out open_world.json
    # bigger, on a GPU
    PYTHONPATH=src python bench/bench_open_world.py --steps 2000 --batch-size 8 \\
        --short-side 640 --max-size 1066 --seeds 0,1,2,3,4 --workers 8 --out open_world.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from rpnkit.config import config_to_dict
from rpnkit.data import DetectionDataset, eval_transforms, read_dataset, train_transforms
from rpnkit.engine.checkpoint import RPN, ModelSpec
from rpnkit.engine.runner import proposal_forward, run_batches
from rpnkit.engine.trainer import TrainConfig, train
from rpnkit.evaluation.open_world import VOC_CLASSES_IN_COCO, novel_class_recall, seen_flags
from rpnkit.evaluation.recall import match_proposals, pad_cat, proposal_recall_summary
from rpnkit.modeling.presets import build_model, preset_config, with_objectness_mode
from rpnkit.modeling.structures import GroundTruth

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
REPORTED = ("novel_AR@10", "novel_AR@100", "novel_AR@1000", "all_AR@100", "all_AR@1000")


def seen_only(index, seen: set[str]):
    """The index with the boxes of the ``seen`` classes only: the others become unlabelled
    (absent, not ignore regions), as in OLN's VOC -> non-VOC protocol."""
    names = index.class_names
    records = []
    for r in index.records:
        keep = np.array([names[label - 1] in seen for label in r.labels], dtype=bool)
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


def datasets(args, seen: set[str]):
    root = Path(args.data_root) / "coco128"
    train_index = seen_only(read_dataset(root, split="train2017"), seen)  # COCO JSON
    val_index = read_dataset(root, split="val")  # YOLO labels, 80 names from data.yaml
    boxes = sum(len(r.boxes) for r in train_index.records)
    print(f"train: {len(train_index.records)} images, {boxes} seen-class boxes", flush=True)
    return train_index, val_index


@torch.no_grad()
def measure(model, val_set, class_names, seen, *, device, batch_size) -> dict:
    """One pass over the validation images: novel-class AR and the standard all-class AR."""
    device = torch.device(device)
    model.to(device).eval()
    cols = {k: [] for k in ("boxes", "valid", "gt", "mask", "crowd", "seen", "areas")}
    start = time.perf_counter()
    for metas, proposals in run_batches(
        proposal_forward(model), val_set, batch_size=batch_size, device=device
    ):
        gt = GroundTruth.from_lists(
            [m["boxes"] for m in metas], [m["labels"] for m in metas], [m["ignore"] for m in metas]
        )
        cols["boxes"].append(proposals.boxes)
        cols["valid"].append(proposals.valid)
        cols["gt"].append(gt.boxes)
        cols["mask"].append(gt.mask)
        cols["crowd"].append(gt.ignore)
        cols["seen"].append(seen_flags(gt.labels, class_names, seen) & gt.mask)
        areas = torch.zeros(gt.mask.shape, dtype=torch.float64)
        for i, m in enumerate(metas):  # original pixels, for the size ranges
            b = m["boxes"].double()
            own = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) / m.get("scale", 1.0) ** 2
            areas[i, : len(b)] = m["areas"].double() if "areas" in m else own
        cols["areas"].append(areas)
    seconds = time.perf_counter() - start
    t = {k: pad_cat(v) for k, v in cols.items()}
    novel = novel_class_recall(
        t["boxes"], t["valid"], t["gt"], t["mask"], t["seen"], t["crowd"], t["areas"]
    )
    table = match_proposals(t["boxes"], t["valid"], t["gt"], t["mask"], t["crowd"], t["areas"])
    full = proposal_recall_summary(table, (10, 100, 1000))
    out = {f"novel_{k}": v for k, v in novel.items() if k.startswith(("AR@", "recall@"))}
    out.update({f"all_{k}": v for k, v in full.items() if k.startswith("AR@")})
    out["num_novel_boxes"] = int(novel["num_novel"])
    out["eval_seconds"] = round(seconds, 1)
    return out


def spread(values: list[float]) -> dict:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": sd, "min": min(values), "max": max(values)}


def run_one(args, mode, seed, train_index, val_set, val_names, seen) -> dict:
    model_config = with_objectness_mode(preset_config(args.preset), mode)
    localization = dataclasses.replace(
        model_config.rpn.localization, initial_score=args.initial_score
    )
    model_config = dataclasses.replace(
        model_config, rpn=dataclasses.replace(model_config.rpn, localization=localization)
    )
    config = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, optimizer="sgd", lr=args.lr,
        warmup_steps=min(100, args.steps // 5), schedule="cosine", grad_clip=10.0,
        seed=seed, num_workers=args.workers, log_every=max(1, args.steps // 10),
    )  # fmt: skip
    torch.manual_seed(seed)
    model = build_model(model_config)
    train_set = DetectionDataset(
        train_index, train_transforms(args.short_side, args.max_size), seed=seed
    )
    start = time.perf_counter()
    summary = train(
        model, train_set, config, out_dir=Path(args.runs_dir) / f"{mode}-seed{seed}",
        spec=ModelSpec(RPN, model_config), device=args.device, progress=False,
    )  # fmt: skip
    result = {"train_seconds": round(time.perf_counter() - start, 1)}
    result["images_per_s"] = round(summary["images_per_s"], 2)
    result.update(
        measure(
            model, val_set, val_names, seen, device=args.device, batch_size=args.eval_batch_size
        )
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="effnet-lite0-fpn")
    parser.add_argument("--modes", default="classification,localization")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--eval-batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--short-side", type=int, default=384)
    parser.add_argument("--max-size", type=int, default=640)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument(
        "--initial-score", type=float, default=0.5, help="localization: every anchor's first score"
    )
    parser.add_argument("--seen", default=",".join(VOC_CLASSES_IN_COCO), help="seen class names")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--runs-dir", default="runs/open_world")
    parser.add_argument("--data-root", default=str(DATA), help="folder holding coco128/")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    seen = set(args.seen.split(","))
    train_index, val_index = datasets(args, seen)
    val_set = DetectionDataset(val_index, eval_transforms(args.short_side, args.max_size))
    results = {
        "preset": args.preset, "steps": args.steps, "batch_size": args.batch_size,
        "lr": args.lr, "short_side": args.short_side, "max_size": args.max_size,
        "seen": sorted(seen), "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if "cuda" in args.device else "cpu",
        "localization": config_to_dict(preset_config(args.preset).rpn)["localization"],
        "initial_score": args.initial_score, "runs": {},
    }  # fmt: skip
    for mode in args.modes.split(","):
        runs = results["runs"].setdefault(mode, {})
        for seed in [int(s) for s in args.seeds.split(",")]:
            runs[seed] = run_one(
                args, mode, seed, train_index, val_set, val_index.class_names, seen
            )
            print(mode, seed, json.dumps(runs[seed]), flush=True)
            if args.out:  # partial results survive an interrupted run
                Path(args.out).write_text(json.dumps(results, indent=1))
    results["summary"] = {
        mode: {k: spread([r[k] for r in runs.values()]) for k in REPORTED}
        for mode, runs in results["runs"].items()
    }
    for mode, summary in results["summary"].items():
        print(mode, "  ".join(f"{k} {v['mean']:.4f}±{v['std']:.4f}" for k, v in summary.items()))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
