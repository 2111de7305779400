"""``rpnkit report``."""

from __future__ import annotations

import argparse

from .options import HELP, add_run_options, image_side, non_negative_int, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser(
        "report",
        help="one static HTML page for a training run",
        description=(
            "Write RUN_DIR/report.html: the run's config, its best validation during training "
            "(best.safetensors, with --eval-every) and the validations it logged, the recall "
            "tables (and a detector's mAP) of its final weights, the loss and recall curves, "
            "and proposals on validation images (best and worst recall first), every picture "
            "embedded: it opens in a browser from disk with no server. The validation data "
            "recorded by 'rpnkit train --val-data' is used unless --data is given."
        ),
        formatter_class=HELP,
    )
    p.add_argument("run_dir", help="a folder written by rpnkit train")
    p.add_argument("--data", default=None, help="validation dataset (default: the run's)")
    p.add_argument("--split", default=None, help="split of --data (default: the run's)")
    p.add_argument("--split-file", default=None, help="split file of --data (default: the run's)")
    p.add_argument(
        "--images",
        default=None,
        metavar="DIR",
        help="image folder of --data, as for the other commands (default: the run's)",
    )
    p.add_argument(
        "--format",
        choices=["coco", "voc", "yolo", "csv"],
        default=None,
        help="dataset format (default: the run's, or detected)",
    )
    p.add_argument(
        "--short-side", type=positive_int, default=None, help="resize (default: the run's)"
    )
    p.add_argument("--max-size", type=image_side, default=None, help="resize (default: the run's)")
    p.add_argument(
        "--gallery",
        type=non_negative_int,
        default=4,
        help="best and worst images shown, each (every image at most once: fewer from a "
        "validation set of under twice as many images with GT)",
    )
    add_run_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..viz.report import write_report

    out = write_report(
        args.run_dir,
        data=args.data,
        split=args.split,
        split_file=args.split_file,
        format=args.format,
        images=args.images,
        short=args.short_side,
        max_size=args.max_size,
        gallery=args.gallery,
        device=args.device,
        progress=not args.no_progress,
    )
    print(f"wrote {out}: open it in a browser")
    return 0
