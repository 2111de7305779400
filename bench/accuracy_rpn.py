"""rpnkit's RPN against torchvision's RegionProposalNetwork, trained the same way.

Both models get the same backbone (effnet-lite0-fpn: ImageNet EfficientNet-Lite0 + FPN) with
identical initial weights (backbone, FPN and RPN head copied from one to the other), the same
anchors and settings, and go through the same training loop (``rpnkit.engine.trainer``: same
data order, transforms, schedule and seed) and the same evaluation (``rpnkit.evaluation.recall``,
equal to pycocotools' COCOeval with useCats=0). torchvision gets the non-crowd boxes (it has no
ignore regions), as its own COCO reference scripts do.

    PYTHONPATH=src python bench/accuracy_rpn.py --dataset coco128 --steps 1000 --out out.json
    PYTHONPATH=src python bench/accuracy_rpn.py --dataset raccoon --steps 600 --out out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork as TVRPN
from torchvision.models.detection.rpn import RPNHead as TVRPNHead

from rpnkit.config import config_to_dict
from rpnkit.data import DetectionDataset, eval_transforms, read_dataset, train_transforms
from rpnkit.engine.checkpoint import RPN, ModelSpec
from rpnkit.engine.evaluate import evaluate_proposals
from rpnkit.engine.trainer import TrainConfig, train
from rpnkit.modeling.presets import build_model, preset_config
from rpnkit.modeling.proposal_model import normalize
from rpnkit.modeling.rpn import Proposals
from rpnkit.testing import copy_rpn_head_to_torchvision

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


class TorchvisionProposalModel(nn.Module):
    """torchvision's RPN behind rpnkit's model interface (reference only, for this benchmark)."""

    def __init__(self, ours) -> None:
        super().__init__()
        cfg = ours.rpn.config
        levels = cfg.anchors.levels
        self.backbone = ours.backbone  # replaced by a copy below
        self.register_buffer("pixel_mean", ours.pixel_mean.clone(), False)
        self.register_buffer("pixel_std", ours.pixel_std.clone(), False)
        self.rpn = TVRPN(
            TVAnchorGenerator(tuple(lv.sizes for lv in levels), tuple(lv.ratios for lv in levels)),
            TVRPNHead(ours.backbone.out_channels, levels[0].num_anchors),
            fg_iou_thresh=cfg.fg_iou_threshold,
            bg_iou_thresh=cfg.bg_iou_threshold,
            batch_size_per_image=cfg.batch_size_per_image,
            positive_fraction=cfg.positive_fraction,
            pre_nms_top_n=dict(
                training=cfg.train_proposals.pre_nms_top_n,
                testing=cfg.test_proposals.pre_nms_top_n,
            ),
            post_nms_top_n=dict(
                training=cfg.train_proposals.post_nms_top_n,
                testing=cfg.test_proposals.post_nms_top_n,
            ),
            nms_thresh=cfg.test_proposals.nms_threshold,
        )
        copy_rpn_head_to_torchvision(ours.rpn.head, self.rpn.head)

    def forward(self, images, image_sizes, targets=None, *, image_scales=None):
        if images.dtype == torch.uint8:  # rpnkit's batches are uint8
            images = images.float() / 255
        features = self.backbone(normalize(images, image_sizes, self.pixel_mean, self.pixel_std))
        image_list = ImageList(images, [tuple(s) for s in image_sizes.tolist()])
        tv_targets = None
        if targets is not None and self.training:
            keep = targets.mask & ~targets.ignore
            tv_targets = [{"boxes": targets.boxes[i][keep[i]]} for i in range(len(keep))]
        boxes, losses = self.rpn(image_list, OrderedDict(enumerate(features)), tv_targets)
        k = max(1, max(len(b) for b in boxes))
        padded = images.new_zeros((len(boxes), k, 4))
        scores = images.new_zeros((len(boxes), k))
        for i, b in enumerate(boxes):  # reference model: a loop is fine here
            padded[i, : len(b)] = b
            scores[i, : len(b)] = torch.linspace(1, 0.5, len(b), device=images.device)
        num = torch.tensor([len(b) for b in boxes], device=images.device)
        proposals = Proposals(padded, scores, torch.zeros_like(scores, dtype=torch.long), num)
        renamed = {}
        if losses:
            renamed = {
                "loss_objectness": losses["loss_objectness"],
                "loss_rpn_box": losses["loss_rpn_box_reg"],
            }
        return SimpleNamespace(losses=renamed, proposals=proposals)


def drop_ignored(index):
    """The same dataset without its ignore boxes (crowd regions become plain background)."""
    records = [
        dataclasses.replace(
            r,
            boxes=r.boxes[~r.ignore],
            labels=r.labels[~r.ignore],
            ignore=r.ignore[~r.ignore],
            areas=r.areas[~r.ignore],
        )
        for r in index.records
    ]
    return dataclasses.replace(index, records=records)


def datasets(
    name: str, short: int, max_size: int, seed: int, data_root: Path, crowd: str = "ignore"
):
    if name == "coco128":
        train_index = read_dataset(data_root / "coco128", split="train2017")  # COCO JSON: crowds
        val_index = read_dataset(data_root / "coco128", split="val")  # YOLO labels
    elif name == "raccoon":
        root = data_root / "raccoon"
        train_index = read_dataset(root, split_file=root / "train_labels.csv")
        val_index = read_dataset(root, split_file=root / "test_labels.csv")
    else:
        raise SystemExit(f"unknown dataset {name}")
    if crowd == "drop":
        train_index = drop_ignored(train_index)
    train_set = DetectionDataset(train_index, train_transforms(short, max_size), seed=seed)
    return train_set, DetectionDataset(val_index, eval_transforms(short, max_size))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=["coco128", "raccoon"], default="coco128")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--short-side", type=int, default=640)
    parser.add_argument("--max-size", type=int, default=1066)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--crowd",
        choices=["ignore", "drop"],
        default="ignore",
        help="rpnkit's use of crowd boxes: ignore regions, or dropped (background, as torchvision)",
    )
    parser.add_argument(
        "--models", default="rpnkit,torchvision", help="which of rpnkit,torchvision to train"
    )
    parser.add_argument("--log-every", type=int, default=50, help="train_log.csv row interval")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--runs-dir", default="runs/accuracy")
    parser.add_argument("--data-root", default=str(DATA), help="folder holding coco128/, raccoon/")
    args = parser.parse_args()

    config = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, optimizer="sgd", lr=args.lr,
        warmup_steps=min(100, args.steps // 5), schedule="cosine", grad_clip=10.0,
        seed=args.seed, num_workers=args.workers, log_every=args.log_every,
    )  # fmt: skip
    model_config = preset_config("effnet-lite0-fpn")
    torch.manual_seed(args.seed)
    ours = build_model(model_config)
    theirs = TorchvisionProposalModel(ours)
    theirs.backbone = build_model(model_config).backbone
    theirs.backbone.load_state_dict(ours.backbone.state_dict())  # identical initial weights
    train_set, val_set = datasets(
        args.dataset, args.short_side, args.max_size, args.seed, Path(args.data_root), args.crowd
    )
    print(f"train {len(train_set)} images, val {len(val_set)} images; {config}", flush=True)

    results = {"dataset": args.dataset, "train_config": config_to_dict(config),
               "short_side": args.short_side, "max_size": args.max_size,
               "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
               "torch": torch.__version__, "crowd": args.crowd}  # fmt: skip
    models = {"rpnkit": ours, "torchvision": theirs}
    for name in args.models.split(","):
        model = models[name]
        torch.manual_seed(args.seed)
        start = time.perf_counter()
        summary = train(
            model, train_set, config, out_dir=Path(args.runs_dir) / args.dataset / name,
            spec=ModelSpec(RPN, model_config), device=args.device, progress=False,
        )  # fmt: skip
        metrics = evaluate_proposals(model, val_set, batch_size=8, device=args.device,
                                     progress=False).metrics  # fmt: skip
        results[name] = {
            "AR@100": metrics["AR@100"],
            "AR@1000": metrics["AR@1000"],
            "recall@100@0.5": metrics["recall@100@0.5"],
            "recall@1000@0.7": metrics["recall@1000@0.7"],
            "AR@100_small": metrics["AR@100_small"],
            "AR@100_large": metrics["AR@100_large"],
            "train_seconds": round(time.perf_counter() - start, 1),
            "images_per_s": round(summary.images_per_s, 1),
        }
        print(name, json.dumps(results[name]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
