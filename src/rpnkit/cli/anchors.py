"""``rpnkit anchors``."""

from __future__ import annotations

import argparse

from .options import (
    HELP,
    add_data_options,
    add_model_options,
    image_side,
    iou,
    model_config,
    non_negative_int,
    read_data,
    seed,
)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "anchors",
        help="how well a preset's anchors cover a dataset's boxes; fit anchors to it",
        description=(
            "For every GT box at training scale, the IoU of its best anchor (the upper "
            "bound of what the RPN can learn), per COCO size range; the boxes no anchor "
            "covers; and with --fit, anchors fitted to the boxes in the preset's layout (the "
            "same number of sizes per level, increasing with the stride, and of ratios, "
            "shared by the levels) that match more boxes at the RPN's positive IoU without "
            "losing any the preset's anchors reach (else the preset's are kept, and it says "
            "so), the coverage they reach, and a config for rpnkit train --config. When many "
            "objects are too small for the anchors at the chosen scale, it says so and "
            "recommends a tile size (--tile-size) or a resize (--short-side, with --max-size "
            "when its cap would stop it)."
        ),
        formatter_class=HELP,
    )
    p.add_argument(
        "--data",
        required=True,
        help="dataset: COCO JSON, VOC folder, YOLO data.yaml or CSV of boxes (format detected "
        "unless --format)",
    )
    add_model_options(p, preset_help="whose anchors to check", weights=False)
    p.add_argument(
        "--threshold",
        type=iou,
        default=0.3,
        help="list the boxes whose best anchor IoU stays below this",
    )
    p.add_argument("--show", type=non_negative_int, default=20, help="list at most this many boxes")
    p.add_argument("--fit", action="store_true", help="fit anchors to the dataset")
    p.add_argument("--seed", type=seed, default=0, help="seed of the fit's k-means start")
    p.add_argument(
        "--out-config",
        default=None,
        help="with --fit: write the preset's config with the fitted anchors here "
        "(YAML or .json), for rpnkit train --config",
    )
    p.add_argument("--json", default=None, help="write the whole report as JSON here")
    p.add_argument(
        "--tile-size",
        type=image_side,
        default=None,
        metavar="PX",
        help="check the boxes as rpnkit train --tile-size PX sees them: at native "
        "resolution in the images larger than PX",
    )
    add_data_options(p, split="train", locate=True)
    p.set_defaults(func=run)


def _check_outputs(args: argparse.Namespace) -> None:
    """--out-config and --json, checked before the analysis (its result is not lost to a bad
    path): their missing folders made, a folder given as the file refused in one line."""
    from ..engine.paths import output_file

    if args.out_config is not None and not args.fit:
        raise ValueError("--out-config does nothing without --fit")
    if args.out_config is not None:
        output_file(args.out_config, what="config")
    if args.json is not None:
        output_file(args.json, what="JSON")


def run(args: argparse.Namespace) -> int:
    from ..config import save_config
    from ..engine.results import write_json
    from ..evaluation.anchor_fit import anchor_report

    _check_outputs(args)
    report = anchor_report(
        model_config(args),
        read_data(args),
        short=args.short_side,
        max_size=args.max_size,
        threshold=args.threshold,
        fit=args.fit,
        seed=args.seed,
        tile_size=args.tile_size,
        source=args.config,  # the anchors listed are the file's
    )
    print(report.format(show=args.show))
    if args.fit and args.out_config:
        size = f"--short-side {args.short_side} --max-size {args.max_size}"
        size += f" --tile-size {args.tile_size}" if args.tile_size else ""
        comment = f"rpnkit anchors --fit: anchors fitted to the boxes at {size}"
        if not report.fit_improved:
            comment = f"rpnkit anchors --fit: no fit beat these anchors for the boxes at {size}"
        save_config(report.fitted_model(), args.out_config, comment=comment)
        what = (
            "anchors fitted to"
            if report.fit_improved
            else "the same anchors (no fit beat them) for"
        )
        print(
            f"wrote {args.out_config}: {what} the boxes at {size}; train at the same "
            f"size: rpnkit train --config {args.out_config} {size} ..."
        )
    if args.json:
        print(f"wrote {write_json(args.json, report.to_dict(), indent=1)}")
    return 0
