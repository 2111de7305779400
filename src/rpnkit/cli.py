"""The ``rpnkit`` command line. The library never reads argv; this module only parses and calls."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import warnings
from pathlib import Path

import yaml

HELP = argparse.ArgumentDefaultsHelpFormatter


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    result = run_demo(
        args.out,
        steps=args.steps,
        time_budget_s=args.time_budget,
        num_val=args.num_val,
        seed=args.seed,
        progress=not args.no_progress,
    )
    if result["recall@100@0.5"] < 0.9:
        print(
            f"warning: held-out recall@100@0.5 is {result['recall@100@0.5']:.3f}, below the "
            "0.9 a full demo run reaches",
            file=sys.stderr,
        )
    return 0


def _model_config(args: argparse.Namespace):
    from .config import config_to_dict, load_config
    from .modeling.presets import ModelConfig, preset_config

    config = load_config(ModelConfig, args.config) if args.config else preset_config(args.preset)
    if args.weights is not None:
        config = dataclasses.replace(
            config, backbone=dataclasses.replace(config.backbone, weights=args.weights)
        )
    return config, config_to_dict(config)


def _train_config(args: argparse.Namespace):
    from .engine.trainer import TrainConfig

    return TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup,
        schedule=args.lr_schedule,
        grad_clip=args.grad_clip,
        amp=args.amp,
        seed=args.seed,
        num_workers=args.workers,
        log_every=args.log_every,
        eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every,
        sync_bn=args.sync_bn,
    )


def _train(args: argparse.Namespace) -> int:
    from .config import config_to_dict
    from .data import DetectionDataset, read_dataset, train_transforms
    from .engine.runtime import eval_dataset, resolve_device
    from .engine.trainer import seed_everything, train
    from .evaluation.recall import evaluate_model
    from .modeling.presets import build_model

    model_config, model_dict = _model_config(args)
    train_config = _train_config(args)
    if args.print_config:
        print(
            yaml.safe_dump(
                {"model": model_dict, "train": config_to_dict(train_config)}, sort_keys=False
            )
        )
        return 0
    if args.data is None:
        raise SystemExit("rpnkit train: --data is required (a COCO JSON, VOC or YOLO dataset)")
    index = read_dataset(
        args.data, split=args.split, fmt=args.format, split_file=args.split_file, strict=args.strict
    )
    print(index.summary())
    train_set = DetectionDataset(
        index,
        train_transforms(args.short_side, args.max_size, args.flip),
        strict=args.strict,
        seed=args.seed,
    )
    val_set = None
    if args.val_data is not None:
        val_index = read_dataset(
            args.val_data,
            split=args.val_split,
            fmt=args.format,
            split_file=args.val_split_file,
            strict=args.strict,
        )
        print(val_index.summary())
        val_set = eval_dataset(val_index, args.short_side, args.max_size)

    device = resolve_device(args.device)
    seed_everything(args.seed)  # the initial weights too: the same seed, the same run
    evaluate = None
    if args.model == "faster-rcnn":
        from .engine.detect import detector_checkpoint_config, evaluate_detector
        from .modeling.detector import FasterRCNN

        detector_config = _detector_config(model_config, index.class_names)
        # the alternating schedule builds its own models, step by step
        model = FasterRCNN(detector_config) if args.schedule == "joint" else None
        model_dict = detector_checkpoint_config(detector_config, index.class_names)
        if val_set is not None:

            def evaluate(m):
                return evaluate_detector(
                    m,
                    val_set,
                    index.class_names,
                    batch_size=args.batch_size,
                    device=device,
                    progress=False,
                )
    else:
        model = build_model(model_config)
        if val_set is not None:

            def evaluate(m):
                return evaluate_model(
                    m, val_set, batch_size=args.batch_size, device=device, progress=False
                )[0]

    if args.schedule == "alternating":
        if args.model != "faster-rcnn":
            raise SystemExit("rpnkit train: --schedule alternating needs --model faster-rcnn")
        if args.resume is not None:
            raise SystemExit("rpnkit train: --resume continues joint training only")
        from .engine.alternating import train_alternating

        model, steps = train_alternating(
            detector_config,
            index,
            train_config,
            out_dir=args.out,
            short_side=args.short_side,
            max_size=args.max_size,
            flip=args.flip,
            strict=args.strict,
            device=device,
            progress=not args.no_progress,
            evaluate=evaluate,
        )
        summary = {
            "steps": sum(s["steps"] for s in steps.values()),
            "seconds": sum(s["seconds"] for s in steps.values()),
        }
        summary["images_per_s"] = (
            sum(s["images_per_s"] * s["seconds"] for s in steps.values()) / summary["seconds"]
        )
    else:
        summary = train(
            model,
            train_set,
            train_config,
            out_dir=args.out,
            model_config=model_dict,
            device=device,
            progress=not args.no_progress,
            resume=args.resume,
            evaluate=evaluate,
        )
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports and evaluates
        return 0
    out = Path(args.out)
    data_record = {
        "data": args.data,
        "split": args.split,
        "split_file": args.split_file,
        "val_data": args.val_data,
        "val_split": args.val_split,
        "val_split_file": args.val_split_file,
        "format": args.format,
        "short_side": args.short_side,
        "max_size": args.max_size,
    }
    (out / "config.yaml").write_text(
        yaml.safe_dump(
            {"model": model_dict, "train": config_to_dict(train_config), "data": data_record},
            sort_keys=False,
        )
    )
    print(
        f"trained {summary['steps']} steps in {summary['seconds']:.0f} s "
        f"({summary['images_per_s']:.1f} images/s); checkpoint {out / 'checkpoint.safetensors'}"
    )
    if evaluate is not None:
        metrics = evaluate(model)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        if args.model == "faster-rcnn":
            print(
                f"validation: AP {metrics['AP']:.3f}, AP50 {metrics['AP50']:.3f}, "
                f"VOC07 mAP50 {metrics['VOC07_mAP50']:.3f}"
            )
        else:
            print(f"validation: AR@100 {metrics['AR@100']:.3f}, AR@1000 {metrics['AR@1000']:.3f}")
    return 0


def _detector_config(model_config, class_names):
    """A Faster R-CNN on the preset's backbone and RPN, one class per dataset class."""
    from .modeling.detector import DetectorConfig
    from .modeling.roi_heads import RoIHeadConfig

    num_classes = len(class_names) + 1
    levels = len(model_config.rpn.anchors.levels)
    if model_config.preset == "vgg16-c5":
        roi = RoIHeadConfig.paper(num_classes=num_classes)
    else:
        roi = RoIHeadConfig(num_classes=num_classes)
    return DetectorConfig(model=model_config, roi=roi, pooled_levels=4 if levels >= 5 else levels)


def _eval(args: argparse.Namespace) -> int:
    from .data import read_dataset
    from .engine.checkpoint import load_checkpoint
    from .engine.detect import is_detector_checkpoint
    from .engine.runtime import (
        eval_dataset,
        format_table,
        inference_precision,
        load_model,
        resolve_device,
    )
    from .evaluation.recall import MAX_DETS, evaluate_model

    device = resolve_device(args.device)
    if is_detector_checkpoint(load_checkpoint(args.checkpoint)["config"]):
        return _eval_detector(args, device)
    model, _ = load_model(args.checkpoint, device, fold_bn=True)
    index = read_dataset(
        args.data,
        split=args.split,
        fmt=args.format,
        split_file=args.split_file,
        strict=args.strict,
    )
    print(index.summary())
    dataset = eval_dataset(index, args.short_side, args.max_size)
    with inference_precision(args.amp, device):
        metrics, table, kept = evaluate_model(
            model, dataset, batch_size=args.batch_size, device=device, progress=not args.no_progress
        )
    print(format_table(metrics, MAX_DETS))
    if args.plots:
        from .evaluation.recall import pad_boxes, recall_vs_iou, recall_vs_proposals
        from .viz.visualize import plot_recall_curves

        ks = [k for k in (1, 3, 10, 30, 100, 300, 1000) if k <= max(MAX_DETS)]
        preds = pad_boxes([p for p, _ in kept])
        gts = pad_boxes([g for _, g in kept])
        curves_iou = recall_vs_iou(preds[0], preds[1], gts[0], gts[1])
        path = Path(args.plots) / "recall.png"
        plot_recall_curves(
            {"model": recall_vs_proposals(table, ks)}, path, by_iou={"model": curves_iou}
        )
        print(f"wrote {path}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(metrics, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


def _eval_detector(args: argparse.Namespace, device) -> int:
    from .data import read_dataset
    from .engine.detect import evaluate_detector, load_detector
    from .engine.runtime import eval_dataset, inference_precision
    from .evaluation.detection import COCO_STATS, format_per_class

    model, _, class_names = load_detector(args.checkpoint, device, fold_bn=True)
    index = read_dataset(
        args.data, split=args.split, fmt=args.format, split_file=args.split_file, strict=args.strict
    )
    print(index.summary())
    if index.class_names and list(index.class_names) != list(class_names):
        raise ValueError(
            f"{args.data}: its classes {index.class_names[:5]}... differ from the "
            f"checkpoint's {class_names[:5]}..."
        )
    dataset = eval_dataset(index, args.short_side, args.max_size)
    with inference_precision(args.amp, device):
        metrics = evaluate_detector(
            model,
            dataset,
            class_names,
            batch_size=args.batch_size,
            device=device,
            progress=not args.no_progress,
        )
    print("COCO box AP: " + ", ".join(f"{k} {metrics[k]:.3f}" for k in COCO_STATS))
    print(
        f"VOC mAP@0.5: 2007 11-point {metrics['VOC07_mAP50']:.3f}, "
        f"area {metrics['VOC_area_mAP50']:.3f}"
    )
    print(format_per_class(metrics["per_class_AP"], "AP"))
    if args.plots:
        from .viz.visualize import plot_precision_recall

        path = Path(args.plots) / "precision_recall.png"
        plot_precision_recall(metrics["pr_curves"], path)
        print(f"wrote {path}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(metrics, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


def _detect(args: argparse.Namespace) -> int:
    from .data import load_rgb
    from .engine.detect import load_detector, run_detector
    from .engine.runtime import coco_results, inference_precision, resolve_device
    from .viz.visualize import plot_detections

    device = resolve_device(args.device)
    model, _, class_names = load_detector(args.checkpoint, device, fold_bn=True)
    dataset, records = _inference_inputs(args)
    results, drawn = [], 0
    detections = run_detector(
        model, dataset, batch_size=args.batch_size, device=device, progress=not args.no_progress
    )
    for item, boxes, scores, labels in _under(inference_precision(args.amp, device), detections):
        keep = scores >= args.score
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        for box, score, label in zip(boxes, scores, labels):
            results += coco_results(
                item["image_id"],
                item["file_name"],
                box[None],
                score[None],
                category_id=int(label),
                category_name=class_names[int(label) - 1],
            )
        if args.overlays and drawn < args.max_overlays:
            names = [class_names[int(k) - 1] for k in labels]
            plot_detections(
                load_rgb(records[item["file_name"]].path),
                boxes,
                scores,
                names,
                Path(args.overlays) / f"{Path(item['file_name']).stem}.png",
            )
            drawn += 1
    return _write_results(args, results, "detections", len(dataset), drawn)


def _propose(args: argparse.Namespace) -> int:
    from .data import load_rgb
    from .engine.runtime import (
        coco_results,
        inference_precision,
        load_model,
        propose,
        resolve_device,
    )
    from .viz.visualize import plot_proposals

    device = resolve_device(args.device)
    model, _ = load_model(args.checkpoint, device, fold_bn=True)
    dataset, records = _inference_inputs(args)
    results, drawn = [], 0
    proposals = propose(
        model,
        dataset,
        top=args.top,
        batch_size=args.batch_size,
        device=device,
        progress=not args.no_progress,
    )
    for item, boxes, scores in _under(inference_precision(args.amp, device), proposals):
        results += coco_results(item["image_id"], item["file_name"], boxes, scores)
        if args.overlays and drawn < args.max_overlays:
            image = load_rgb(records[item["file_name"]].path)
            plot_proposals(
                image,
                boxes[: args.overlay_top],
                scores[: args.overlay_top],
                Path(args.overlays) / f"{Path(item['file_name']).stem}.png",
            )
            drawn += 1
    return _write_results(args, results, "proposals", len(dataset), drawn)


def _inference_inputs(args: argparse.Namespace):
    """What propose and detect run over (an image, a folder or a dataset), resized for the
    network, and its records by file name (for the overlays)."""
    from .engine.runtime import eval_dataset, index_for_input

    index = index_for_input(
        args.input,
        split=args.split,
        fmt=args.format,
        split_file=args.split_file,
        strict=args.strict,
    )
    records = {r.file_name: r for r in index.records}
    return eval_dataset(index, args.short_side, args.max_size), records


def _write_results(args: argparse.Namespace, results: list, what: str, images: int, drawn: int):
    from .engine.runtime import write_json

    write_json(args.out, results)
    print(
        f"wrote {len(results)} {what} for {images} image(s) to {args.out}"
        + (f"; {drawn} overlays in {args.overlays}" if args.overlays else "")
    )
    return 0


def _anchors(args: argparse.Namespace) -> int:
    from .config import config_to_dict, save_config
    from .data import read_dataset
    from .evaluation.anchor_fit import (
        best_anchor_iou,
        collect_gt,
        coverage_table,
        describe_anchors,
        fit_anchors,
        format_coverage,
        unmatched,
    )

    model_config, _ = _model_config(args)
    index = read_dataset(
        args.data, split=args.split, fmt=args.format, split_file=args.split_file, strict=args.strict
    )
    print(index.summary())
    sample = collect_gt(index, short=args.short_side, max_size=args.max_size)
    anchors = model_config.rpn.anchors
    best = best_anchor_iou(anchors, sample)
    table = coverage_table(sample, best)
    print(f"\nanchors of {model_config.preset}:\n{describe_anchors(anchors)}")
    print(
        f"\nbest-anchor IoU of {len(best)} GT boxes at training scale "
        f"(shorter side {args.short_side}): the upper bound of what the RPN can be taught"
    )
    print(format_coverage(table))
    lost = unmatched(sample, best, args.threshold)
    print(
        f"\n{len(lost)} box(es) with no anchor at IoU >= {args.threshold}" + (":" if lost else "")
    )
    for row in lost[: args.show]:
        print(f"  {row['file']}: box {row['box_at_training_scale']} best IoU {row['best_iou']}")
    if len(lost) > args.show:
        print(f"  ... and {len(lost) - args.show} more (all in --json)")
    report = {"preset": model_config.preset, "coverage": table, "unmatched": lost}
    if args.fit:
        fitted = fit_anchors(anchors, sample, seed=args.seed)
        best_fit = best_anchor_iou(fitted, sample)
        table_fit = coverage_table(sample, best_fit)
        k = sum(anchors.num_anchors_per_level)
        print(f"\nfitted anchors (k-means, distance 1 - IoU, k = {k}):")
        print(describe_anchors(fitted))
        print(format_coverage(table_fit))
        report["fitted_anchors"] = config_to_dict(fitted)
        report["coverage_fitted"] = table_fit
        if args.out_config:
            new_config = dataclasses.replace(
                model_config, rpn=dataclasses.replace(model_config.rpn, anchors=fitted)
            )
            save_config(new_config, args.out_config)
            print(f"wrote {args.out_config}: rpnkit train --config {args.out_config} ...")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from .viz import show
    from .viz.visualize import plot_loss_curves

    out = Path(args.out)
    opts = dict(short=args.short_side, max_size=args.max_size)
    data_opts = dict(split=args.split, fmt=args.format, split_file=args.split_file)
    what = args.what
    if what == "losses":
        source = Path(args.source)
        plot_loss_curves(source / "train_log.csv" if source.is_dir() else source, out)
    elif what in ("anchors", "grid", "labels"):
        config, _ = _model_config(args)
        if what == "anchors":
            show.show_anchors(config, args.source, out, x=args.x, y=args.y, **opts, **data_opts)
        elif what == "grid":
            show.show_grid(config, args.source, out, level=args.level, **opts, **data_opts)
        else:
            show.show_labels(config, args.source, out, index=args.index, **opts, **data_opts)
    else:
        if not args.checkpoint:
            raise ValueError(f"rpnkit show {what} needs --checkpoint")
        if what == "objectness":
            show.show_objectness(
                args.checkpoint, args.source, out, index=args.index, **opts, **data_opts
            )
        elif what == "nms":
            show.show_nms(
                args.checkpoint,
                args.source,
                out,
                index=args.index,
                top=args.top,
                **opts,
                **data_opts,
            )
        else:
            show.show_proposals(
                args.checkpoint,
                args.source,
                out,
                index=args.index,
                top=args.top,
                **opts,
                **data_opts,
            )
    print(f"wrote {out}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .viz.report import write_report

    out = write_report(
        args.run_dir,
        data=args.data,
        split=args.split,
        split_file=args.split_file,
        fmt=args.format,
        short=args.short_side,
        max_size=args.max_size,
        gallery=args.gallery,
        device=args.device,
        progress=not args.no_progress,
    )
    print(f"wrote {out}: open it in a browser")
    return 0


def _add_inference_options(
    p: argparse.ArgumentParser, *, checkpoint_help: str, out_default: str
) -> None:
    """The options propose and detect share."""
    p.add_argument("input", help="an image, a folder of images, or a dataset")
    p.add_argument("--checkpoint", required=True, help=checkpoint_help)
    p.add_argument("--out", default=out_default, help="results JSON to write")
    p.add_argument("--overlays", default=None, help="folder for PNG overlays (optional)")
    p.add_argument("--max-overlays", type=int, default=50, help="at most this many overlays")
    p.add_argument("--batch-size", type=int, default=4, help="images per forward pass")
    _add_precision_option(p)
    _add_data_options(p, split="val")


def _add_precision_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--amp",
        choices=["none", "bf16", "fp16"],
        default="none",
        help="run the network under bf16/fp16 autocast (boxes are still decoded and selected "
        "in float32); bf16 took 1.4x less time than float32 for R50-FPN at batch 8 on an "
        "H200 (docs/performance.md) and more on most CPUs; fp16 needs a GPU",
    )


def _under(context, items):
    """Yield from ``items`` (a generator that runs a model) with ``context`` entered around
    each step only, so that the caller's work between steps (drawing, JSON) runs outside it."""
    iterator = iter(items)
    while True:
        with context:
            item = next(iterator, None)
        if item is None:
            return
        yield item


def _add_data_options(p: argparse.ArgumentParser, *, split: str) -> None:
    p.add_argument(
        "--format",
        choices=["coco", "voc", "yolo"],
        default=None,
        help="dataset format (detected from the path when not given)",
    )
    p.add_argument(
        "--split",
        default=split,
        help="COCO: a name in annotations/instances_<split>.json; YOLO: the data.yaml key",
    )
    p.add_argument(
        "--split-file",
        default=None,
        help="VOC: a text file of image ids or a CSV with a 'filename' column "
        "selecting the images (e.g. raccoon's train_labels.csv)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first bad sample instead of skipping it with a warning",
    )
    p.add_argument("--short-side", type=int, default=800, help="resize: shorter side in pixels")
    p.add_argument("--max-size", type=int, default=1333, help="resize: cap on the longer side")
    p.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N'")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def build_parser() -> argparse.ArgumentParser:
    from .modeling.presets import PRESETS

    parser = argparse.ArgumentParser(
        prog="rpnkit",
        description="Region Proposal Networks: train, propose, evaluate and look.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="train a small Faster R-CNN on synthetic shapes on the CPU; report recall and mAP",
        description=(
            "Build a deterministic synthetic dataset of shapes, train a small Faster R-CNN "
            "(the 'tiny' RPN and a light second stage) on it from scratch, print AR@10, AR@100, "
            "recall@100 at IoU 0.5 and detection mAP on held-out images, and write the "
            "checkpoint, metrics.json and PNG pictures to --out."
        ),
        formatter_class=HELP,
    )
    demo.add_argument("--out", default="runs/demo", help="output folder")
    demo.add_argument("--steps", type=int, default=400, help="training steps (16 images each)")
    demo.add_argument(
        "--time-budget",
        type=float,
        default=240.0,
        help="stop training after this many seconds even if steps remain",
    )
    demo.add_argument("--num-val", type=int, default=200, help="held-out images to evaluate")
    demo.add_argument("--seed", type=int, default=0, help="seed of the data and the training")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    demo.set_defaults(func=_demo)

    train = sub.add_parser(
        "train",
        help="train an RPN on a COCO, VOC or YOLO dataset",
        description=(
            "Train a preset's RPN on a dataset given by path (format detected, or --format). "
            "Writes checkpoint.safetensors (weights, config, optimizer, scheduler and RNG "
            "state), train_log.csv, TensorBoard events and config.yaml to --out. Under "
            "'torchrun --nproc_per_node N' it trains with DistributedDataParallel."
        ),
        formatter_class=HELP,
    )
    train.add_argument("--data", help="training dataset: COCO JSON, VOC folder or YOLO data.yaml")
    train.add_argument("--val-data", default=None, help="validation dataset (same forms)")
    train.add_argument("--val-split", default="val", help="split of --val-data")
    train.add_argument("--val-split-file", default=None, help="VOC split file of --val-data")
    train.add_argument(
        "--model",
        choices=["rpn", "faster-rcnn"],
        default="rpn",
        help="an RPN alone, or the Faster R-CNN detector built on it",
    )
    train.add_argument(
        "--schedule",
        choices=["joint", "alternating"],
        default="joint",
        help="faster-rcnn: 'joint', approximate joint training (the four losses summed); "
        "'alternating', the paper's 4 steps (RPN; detector on its proposals; RPN on the "
        "frozen shared backbone; detector head), each of --steps steps, with the proposals "
        "of steps 1 and 3 written as COCO results JSON in --out",
    )
    train.add_argument(
        "--preset",
        default="effnet-lite0-fpn",
        choices=sorted(PRESETS),
        help="model preset (the backbone and the RPN)",
    )
    train.add_argument(
        "--config",
        default=None,
        help="a model config YAML/JSON (e.g. with fitted anchors) instead of --preset",
    )
    train.add_argument(
        "--weights",
        default=None,
        help="backbone weights: a local torchvision-format file (ResNet/VGG), or "
        "'imagenet' for the packaged EfficientNet-Lite0 weights",
    )
    train.add_argument("--out", default="runs/train", help="output folder")
    train.add_argument("--steps", type=int, default=2000, help="training steps")
    train.add_argument("--batch-size", type=int, default=4, help="images per step and process")
    train.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd", help="optimizer")
    train.add_argument("--lr", type=float, default=0.01, help="base learning rate")
    train.add_argument("--weight-decay", type=float, default=1e-4, help="weight decay")
    train.add_argument("--warmup", type=int, default=200, help="linear warm-up steps")
    train.add_argument(
        "--lr-schedule",
        choices=["cosine", "step", "constant"],
        default="cosine",
        help="learning-rate schedule after warm-up",
    )
    train.add_argument("--grad-clip", type=float, default=None, help="clip the gradient norm")
    train.add_argument(
        "--amp", choices=["none", "bf16", "fp16"], default="none", help="mixed precision"
    )
    train.add_argument("--flip", type=float, default=0.5, help="horizontal flip probability")
    train.add_argument("--seed", type=int, default=0, help="seed: runs are reproducible")
    train.add_argument("--workers", type=int, default=2, help="data loading processes")
    train.add_argument("--log-every", type=int, default=10, help="log every N steps")
    train.add_argument(
        "--eval-every",
        type=int,
        default=0,
        help="evaluate on --val-data every N steps (0: only at the end)",
    )
    train.add_argument(
        "--checkpoint-every", type=int, default=500, help="write the checkpoint every N steps"
    )
    train.add_argument(
        "--resume",
        default=None,
        help="continue exactly from this checkpoint (same --steps and options)",
    )
    train.add_argument(
        "--sync-bn",
        action="store_true",
        help="synchronise batch norm across processes under torchrun",
    )
    train.add_argument(
        "--print-config",
        action="store_true",
        help="print the full model and training configuration and exit",
    )
    _add_data_options(train, split="train")
    train.set_defaults(func=_train)

    ev = sub.add_parser(
        "eval",
        help="proposal recall of a checkpoint on a dataset",
        description=(
            "AR@10/100/300/1000 (IoU 0.5:0.95) and recall at IoU 0.5 and 0.7, overall "
            "and per COCO size range, computed as pycocotools' COCOeval with "
            "useCats=0. Prints a table; --out writes JSON."
        ),
        formatter_class=HELP,
    )
    ev.add_argument("--checkpoint", required=True, help="checkpoint.safetensors to evaluate")
    ev.add_argument("--data", required=True, help="dataset: COCO JSON, VOC folder, YOLO yaml")
    ev.add_argument("--batch-size", type=int, default=4, help="images per forward pass")
    _add_precision_option(ev)
    ev.add_argument("--out", default=None, help="write the metrics as JSON here")
    ev.add_argument(
        "--plots",
        default=None,
        help="folder for recall.png (recall against proposals and against IoU), or for a "
        "Faster R-CNN checkpoint precision_recall.png",
    )
    _add_data_options(ev, split="val")
    ev.set_defaults(func=_eval)

    pr = sub.add_parser(
        "propose",
        help="class-agnostic proposals for an image, a folder or a dataset",
        description=(
            "Writes COCO-style results JSON: a list of {file_name, image_id, bbox "
            "[x, y, w, h] in original pixels, score}, best first per image."
        ),
        formatter_class=HELP,
    )
    _add_inference_options(
        pr, checkpoint_help="checkpoint.safetensors to use", out_default="proposals.json"
    )
    pr.add_argument("--top", type=int, default=100, help="proposals kept per image")
    pr.add_argument("--overlay-top", type=int, default=20, help="proposals drawn per overlay")
    pr.set_defaults(func=_propose)
    an = sub.add_parser(
        "anchors",
        help="how well a preset's anchors cover a dataset's boxes; fit anchors to it",
        description=(
            "For every GT box at training scale, the IoU of its best anchor (the upper "
            "bound of what the RPN can learn), per COCO size range; the boxes no anchor "
            "covers; and with --fit, anchors fitted by k-means with distance 1 - IoU, "
            "the coverage they reach, and a config for rpnkit train --config."
        ),
        formatter_class=HELP,
    )
    an.add_argument("--data", required=True, help="dataset: COCO JSON, VOC folder or YOLO yaml")
    an.add_argument(
        "--preset",
        default="effnet-lite0-fpn",
        choices=sorted(PRESETS),
        help="whose anchors to check",
    )
    an.add_argument("--config", default=None, help="a model config file instead of --preset")
    an.add_argument("--weights", default=None, help=argparse.SUPPRESS)
    an.add_argument(
        "--threshold",
        type=float,
        default=0.3,
        help="list the boxes whose best anchor IoU stays below this",
    )
    an.add_argument("--show", type=int, default=20, help="list at most this many boxes")
    an.add_argument("--fit", action="store_true", help="fit anchors to the dataset")
    an.add_argument("--seed", type=int, default=0, help="seed of the k-means start")
    an.add_argument(
        "--out-config",
        default=None,
        help="with --fit: write the preset's config with the fitted anchors here "
        "(YAML or .json), for rpnkit train --config",
    )
    an.add_argument("--json", default=None, help="write the whole report as JSON here")
    _add_data_options(an, split="train")
    an.set_defaults(func=_anchors)

    sh = sub.add_parser(
        "show",
        help="pictures: anchors, anchor grid, anchor labels, objectness, NMS, proposals, losses",
        description=(
            "Write one PNG. anchors: every level's anchors at one position (--x, --y; default "
            "the centre). grid: a level's anchor centres (--level). labels: positive, negative "
            "and ignored anchors of a dataset image (--index). objectness: per-level heat maps. "
            "nms: the top boxes before and after NMS. proposals: the top proposals against the "
            "GT of a dataset image, found green and missed red. losses: the training losses of "
            "a run folder or train_log.csv. objectness, nms and proposals need --checkpoint; "
            "anchors, grid and labels use --preset (or --config)."
        ),
        formatter_class=HELP,
    )
    sh.add_argument(
        "what",
        choices=["anchors", "grid", "labels", "objectness", "nms", "proposals", "losses"],
        help="which picture",
    )
    sh.add_argument("source", help="an image, a dataset (labels, proposals), or a run folder")
    sh.add_argument("--out", default="show.png", help="PNG to write")
    sh.add_argument(
        "--preset",
        default="effnet-lite0-fpn",
        choices=sorted(PRESETS),
        help="whose anchors (anchors, grid, labels)",
    )
    sh.add_argument("--config", default=None, help="a model config file instead of --preset")
    sh.add_argument("--weights", default=None, help=argparse.SUPPRESS)
    sh.add_argument("--checkpoint", default=None, help="model (objectness, nms, proposals)")
    sh.add_argument("--index", type=int, default=0, help="which image of a dataset or folder")
    sh.add_argument("--level", type=int, default=0, help="pyramid level (grid)")
    sh.add_argument("--x", type=float, default=None, help="position in pixels (anchors)")
    sh.add_argument("--y", type=float, default=None, help="position in pixels (anchors)")
    sh.add_argument("--top", type=int, default=10, help="boxes drawn (nms, proposals)")
    _add_data_options(sh, split="val")
    sh.set_defaults(func=_show)

    de = sub.add_parser(
        "detect",
        help="class detections for an image, a folder or a dataset (Faster R-CNN checkpoints)",
        description=(
            "Writes COCO-style results JSON: a list of {file_name, image_id, bbox "
            "[x, y, w, h] in original pixels, score, category_id (1..K in the "
            "checkpoint's class order), category_name}; PNG overlays with names and "
            "scores on request."
        ),
        formatter_class=HELP,
    )
    _add_inference_options(
        de,
        checkpoint_help="a checkpoint of train --model faster-rcnn",
        out_default="detections.json",
    )
    de.add_argument("--score", type=float, default=0.3, help="keep detections at least this sure")
    de.set_defaults(func=_detect)

    rep = sub.add_parser(
        "report",
        help="one static HTML page for a training run",
        description=(
            "Write RUN_DIR/report.html: the run's config, the recall tables, the loss and "
            "recall curves, and proposals on validation images (best and worst recall first), "
            "every picture embedded: it opens in a browser from disk with no server. The "
            "validation data recorded by 'rpnkit train --val-data' is used unless --data is "
            "given."
        ),
        formatter_class=HELP,
    )
    rep.add_argument("run_dir", help="a folder written by rpnkit train")
    rep.add_argument("--data", default=None, help="validation dataset (default: the run's)")
    rep.add_argument("--split", default=None, help="split of --data (default: the run's)")
    rep.add_argument("--split-file", default=None, help="VOC split file (default: the run's)")
    rep.add_argument(
        "--format",
        choices=["coco", "voc", "yolo"],
        default=None,
        help="dataset format (default: the run's, or detected)",
    )
    rep.add_argument("--short-side", type=int, default=None, help="resize (default: the run's)")
    rep.add_argument("--max-size", type=int, default=None, help="resize (default: the run's)")
    rep.add_argument("--gallery", type=int, default=4, help="best and worst images shown, each")
    rep.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N'")
    rep.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    rep.set_defaults(func=_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .data.readers import DataError

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        try:
            return args.func(args)
        except (DataError, ValueError, FloatingPointError) as err:
            print(f"rpnkit {args.command}: error: {err}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
