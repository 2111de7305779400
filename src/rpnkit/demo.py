"""``rpnkit demo``: train a small Faster R-CNN (the 'tiny' RPN and a light second stage) from
scratch on synthetic shapes, on a CPU, in minutes; report proposal recall and detection mAP."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from .data import SyntheticShapes, collate
from .engine.checkpoint import DETECTOR, ModelSpec, RunState, save_model
from .engine.evaluate import evaluate_detections, evaluate_proposals
from .engine.paths import output_folder
from .engine.trainer import TrainConfig, TrainSummary, seed_everything, train
from .modeling.presets import DetectorConfig, detector_config, preset_config
from .modeling.proposal_model import ProposalModel
from .modeling.roi_heads import RoIHeadConfig
from .modeling.rpn import ProposalConfig
from .viz.overlays import (
    plot_anchors_at_position,
    plot_detections,
    plot_proposals_vs_gt,
    plot_sampled_anchors,
)

DEMO_TRAIN = TrainConfig(
    steps=400,
    batch_size=16,
    optimizer="adamw",
    lr=2e-3,
    weight_decay=1e-4,
    warmup_steps=30,
    schedule="cosine",
    grad_clip=10.0,
    seed=0,
    num_workers=0,  # the shapes are drawn in a few milliseconds: no processes to start
)
SHOWN = ("AR@10", "AR@100", "recall@100@0.5", "mAP", "mAP50")


def demo_detector_config() -> DetectorConfig:
    """The tiny preset's RPN and a light second stage (64 RoIs per image, a 256-wide MLP,
    trained on the RPN's features without changing them) for the four shape classes."""
    model = preset_config("tiny")
    # 500 proposals per image are plenty for 256 px images with at most 6 shapes
    model = replace(model, rpn=replace(model.rpn, train_proposals=ProposalConfig(500, 500)))
    base = detector_config(model, len(SyntheticShapes.class_names))
    roi = RoIHeadConfig(
        num_classes=base.roi.num_classes,
        rois_per_image=64,
        representation_size=256,
        feature_gradient=False,  # the RPN trains the features: a CPU-friendly step
    )
    return replace(base, roi=roi)


def _anchors_at_centre(model: ProposalModel, image_size: int) -> torch.Tensor:
    """All anchors of every level at the position nearest the image centre: (sum A_l, 4)."""
    gen = model.rpn.anchor_generator
    out = []
    for level, lv in enumerate(gen.config.levels):
        n = image_size // lv.stride
        grid = gen.grid_anchors(level, n, n).view(n, n, lv.num_anchors, 4)
        out.append(grid[n // 2, n // 2])
    return torch.cat(out)


def draw_anchors(model: ProposalModel, sample: dict, image_size: int, out_dir: Path) -> None:
    """anchors.png (one position of every level) and sampled_anchors.png (the anchors sampled
    for training on ``sample``), before training."""
    plot_anchors_at_position(
        sample["image"],
        _anchors_at_centre(model, image_size),
        out_dir / "anchors.png",
        levels=[
            (f"stride {lv.stride}", lv.num_anchors)
            for lv in model.rpn.anchor_generator.config.levels
        ],
        title="anchors at the centre position of each level",
    )
    batch = collate([sample])
    model.eval()
    with torch.no_grad():
        out = model(batch.images, batch.image_sizes)
        _, sampled = model.rpn.label_and_sample_anchors(
            out.anchors, batch.image_sizes, batch.targets
        )
    # the sampled slots are in random order: the first negatives drawn are a random subset
    plot_sampled_anchors(
        sample["image"],
        sample["boxes"],
        out.anchors[sampled.pos_idx[0][sampled.pos_valid[0]]],
        out.anchors[sampled.neg_idx[0][sampled.neg_valid[0]]],
        out_dir / "sampled_anchors.png",
    )


def draw_results(detector, val_set: SyntheticShapes, kept: list, out_dir: Path) -> None:
    """proposals.png (top proposals against the GT of four held-out images) and
    detections.png (the confident detections of one)."""
    shown = range(4)
    plot_proposals_vs_gt(
        [val_set[i]["image"] for i in shown],
        [kept[i][0] for i in shown],
        [kept[i][1] for i in shown],
        out_dir / "proposals.png",
        top_k=10,
    )
    sample = val_set[0]
    detector.eval()
    with torch.no_grad():
        batch = collate([sample])
        boxes, scores, labels = detector(batch.images, batch.image_sizes).detections.per_image()[0]
    confident = scores >= 0.5
    plot_detections(
        sample["image"],
        boxes[confident],
        scores[confident],
        [val_set.class_names[int(c) - 1] for c in labels[confident]],
        out_dir / "detections.png",
    )


def held_out_metrics(
    detector, val_set, summary: TrainSummary, *, progress: bool
) -> tuple[dict, list]:
    """Proposal recall (through the first stage) and detection mAP on the held-out images,
    and the per-image proposals and GT for the pictures."""
    recall = evaluate_proposals(detector, val_set, batch_size=16, progress=progress)
    detection = evaluate_detections(
        detector, val_set, val_set.class_names, batch_size=16, progress=progress
    ).metrics
    m = recall.metrics
    result = {
        **{k: m[k] for k in ("AR@10", "AR@100", "recall@100@0.5", "recall@100@0.7", "AR@300")},
        "mAP": detection["AP"],
        "mAP50": detection["AP50"],
        "VOC07_mAP50": detection["VOC07_mAP50"],
        "per_class_VOC07_AP50": detection["per_class_VOC07_AP50"],
        "train_steps": summary.steps,
        "train_seconds": round(summary.seconds, 1),
        "num_val_images": len(val_set),
    }
    return result, recall.kept


def run_demo(
    out_dir: str | Path = "runs/demo",
    *,
    steps: int = DEMO_TRAIN.steps,
    time_budget_s: float = 240.0,
    num_val: int = 200,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, float]:
    """Train, evaluate and draw. Writes the checkpoint, metrics.json and PNGs to ``out_dir``."""
    out_dir = output_folder(out_dir, to="to write the demo in")  # a file there: one line
    torch.set_num_threads(max(1, torch.get_num_threads()))
    seed_everything(seed)
    spec = ModelSpec(DETECTOR, demo_detector_config(), tuple(SyntheticShapes.class_names))
    detector = spec.build()
    train_set = SyntheticShapes(100_000, seed=seed)  # generated on the fly: fresh every step
    val_set = SyntheticShapes(num_val, seed=seed + 1_000_003)  # held out: another seed
    config = replace(DEMO_TRAIN, steps=steps, seed=seed)
    print(
        f"rpnkit demo: training a small Faster R-CNN (the 'tiny' RPN and a second stage) on "
        f"synthetic shapes for {steps} steps of {config.batch_size} images (at most "
        f"{time_budget_s:.0f} s) on the CPU"
    )
    # 1. Pictures of the anchors and of the anchors sampled for training, before training.
    draw_anchors(
        detector.first_stage, SyntheticShapes(1, seed=seed)[0], train_set.image_size, out_dir
    )
    # 2. Train the whole detector jointly (the RPN's and the second stage's losses summed).
    started = time.perf_counter()
    summary = train(
        detector,
        train_set,
        config,
        out_dir=out_dir,
        spec=spec,
        progress=progress,
        time_budget_s=time_budget_s,
    )
    print(
        f"trained {summary.steps} steps in {summary.seconds:.0f} s "
        f"({summary.images_per_s:.1f} images/s)"
    )
    # 3. Held-out proposal recall and detection mAP.
    result, kept = held_out_metrics(detector, val_set, summary, progress=progress)
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    run = RunState(metrics={k: v for k, v in result.items() if not isinstance(v, dict)})
    size = (train_set.image_size, train_set.image_size)  # square images, not resized
    save_model(
        out_dir / "checkpoint.safetensors",
        detector,
        spec,
        step=summary.steps,
        run=run,
        input_size=size,
    )
    # 4. Top proposals against the GT, and detections, on held-out images.
    draw_results(detector, val_set, kept, out_dir)
    print(f"held-out images: {num_val}")
    for key in SHOWN:
        print(f"  {key:<16} {result[key]:.3f}")
    print(
        f"wrote {out_dir}/: checkpoint.safetensors (a Faster R-CNN: rpnkit detect and propose "
        "take it), metrics.json, train_log.csv, anchors.png, sampled_anchors.png, "
        "proposals.png, detections.png"
    )
    return result
