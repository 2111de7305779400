"""Faster R-CNN mAP: rpnkit (joint and 4-step alternating) against torchvision's FasterRCNN.

All runs use the ``effnet-lite0-fpn`` backbone (packaged ImageNet weights), the same data,
transforms, seeded data order and schedule (``rpnkit.engine.trainer.train``) and the same evaluation
(``rpnkit.engine.evaluate.evaluate_detections``: pycocotools COCO AP and VOC AP).

- ``rpnkit-joint``: rpnkit's FasterRCNN, the four losses summed, ``--steps`` steps.
- ``torchvision-joint``: torchvision's FasterRCNN (its transform, RPN, RoIHeads) around a copy of
  the same backbone, starting from **identical weights** (backbone, FPN, RPN head and box head
  copied from the rpnkit model before training), ``--steps`` steps. It gets the non-crowd boxes.
- ``rpnkit-alternating``: the paper's 4 steps (``rpnkit.engine.alternating``), each ``--steps / 2``
  steps, so that the RPN and the detector head are each trained for ``--steps`` steps in all
  as in joint training. Proposals of steps 1 and 3 go to COCO results JSON in the run folder.

Each run can go to its own process (``--runs``), to share one GPU:

    PYTHONPATH=src python bench/accuracy_detector.py --dataset raccoon --steps 600 \
        --runs rpnkit-joint,torchvision-joint,rpnkit-alternating --out raccoon-det.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from accuracy_rpn import DATA, datasets
from reference import TorchvisionDetector

from rpnkit.data import DataConfig
from rpnkit.engine.alternating import train_alternating
from rpnkit.engine.checkpoint import DETECTOR, ModelSpec
from rpnkit.engine.evaluate import evaluate_detections
from rpnkit.engine.trainer import TrainConfig, train
from rpnkit.modeling.presets import DetectorConfig, build_detector, preset_config
from rpnkit.modeling.roi_heads import RoIHeadConfig

RUNS = ("rpnkit-joint", "torchvision-joint", "rpnkit-alternating")
KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "VOC07_mAP50", "VOC_area_mAP50")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["coco128", "raccoon"], default="raccoon")
    parser.add_argument(
        "--runs", default=",".join(RUNS), help="comma-separated: " + ", ".join(RUNS)
    )
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--short-side", type=int, default=640)
    parser.add_argument("--max-size", type=int, default=1066)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--runs-dir", default="runs/accuracy-det")
    parser.add_argument("--data-root", default=str(DATA), help="folder holding coco128/, raccoon/")
    parser.add_argument("--backbone", default="effnet-lite0-fpn", help="preset (tests: tiny)")
    args = parser.parse_args()

    train_set, val_set = datasets(
        args.dataset, args.short_side, args.max_size, args.seed, Path(args.data_root)
    )
    class_names = train_set.class_names
    config = DetectorConfig(
        model=preset_config(args.backbone),
        roi=RoIHeadConfig(num_classes=len(class_names) + 1),
    )

    def train_config(steps):
        return TrainConfig(
            steps=steps, batch_size=args.batch_size, optimizer="sgd", lr=args.lr,
            warmup_steps=min(100, steps // 5), schedule="cosine", grad_clip=10.0,
            seed=args.seed, num_workers=args.workers, log_every=50,
        )  # fmt: skip

    results = {
        "dataset": args.dataset,
        "steps": args.steps,
        "train_config": str(train_config(args.steps)),
        "short_side": args.short_side,
        "max_size": args.max_size,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
    }
    print(f"train {len(train_set)} images, val {len(val_set)} images", flush=True)
    for name in args.runs.split(","):
        torch.manual_seed(args.seed)
        ours = build_detector(config)  # the same initial weights in every process (same seed)
        run_dir = Path(args.runs_dir) / args.dataset / name
        start = time.perf_counter()
        if name == "rpnkit-alternating":
            data = DataConfig(
                args.dataset, short_side=args.short_side, max_size=args.max_size
            )  # the index below is the dataset; its sizes and flips come from here
            model, _ = train_alternating(
                config, train_set.index, data, train_config(max(1, args.steps // 2)),
                out_dir=run_dir, device=args.device, progress=False,
            )  # fmt: skip
            images_per_s = None
        else:
            model = ours if name == "rpnkit-joint" else TorchvisionDetector(ours)
            if name not in RUNS:
                raise SystemExit(f"unknown run {name}; choose from {RUNS}")
            summary = train(
                model, train_set, train_config(args.steps), out_dir=run_dir,
                spec=ModelSpec(DETECTOR, config, tuple(class_names)),
                device=args.device, progress=False,
            )  # fmt: skip
            images_per_s = round(summary.images_per_s, 1)
        metrics = evaluate_detections(
            model, val_set, class_names, batch_size=8, device=args.device, progress=False
        ).metrics
        results[name] = {
            **{k: round(float(metrics[k]), 4) for k in KEYS},
            "train_seconds": round(time.perf_counter() - start, 1),
            "images_per_s": images_per_s,
        }
        print(name, json.dumps(results[name]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
