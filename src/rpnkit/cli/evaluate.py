"""``rpnkit eval``."""

from __future__ import annotations

import argparse

from .options import (
    HELP,
    add_data_options,
    add_precision_option,
    load_runtime,
    positive_int,
    read_data,
)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="proposal recall of a checkpoint on a dataset",
        description=(
            "AR@10/100/300/1000 (IoU 0.5:0.95) and recall at IoU 0.5 and 0.7, overall "
            "and per COCO size range, computed as pycocotools' COCOeval with "
            "useCats=0. Prints a table; --out writes JSON."
        ),
        formatter_class=HELP,
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint.safetensors to evaluate")
    p.add_argument("--data", required=True, help="dataset: COCO JSON, VOC folder, YOLO yaml")
    p.add_argument("--batch-size", type=positive_int, default=4, help="images per forward pass")
    add_precision_option(p)
    p.add_argument("--out", default=None, help="write the metrics as JSON here")
    p.add_argument(
        "--plots",
        default=None,
        help="folder for recall.png (recall against proposals and against IoU), or for a "
        "Faster R-CNN checkpoint precision_recall.png",
    )
    add_data_options(p, split="val")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..engine.results import write_json

    runtime = load_runtime(args)
    names = list(runtime.class_names) if runtime.spec.is_detector else None
    report = runtime.evaluate(
        read_data(args, names), batch_size=args.batch_size, progress=not args.no_progress
    )
    print(report.format())
    if args.plots:
        from ..viz.evaluation import plot_evaluation

        print(f"wrote {plot_evaluation(report, args.plots)}")
    if args.out:
        print(f"wrote {write_json(args.out, report.metrics, indent=2)}")
    return 0
