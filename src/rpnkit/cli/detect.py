"""``rpnkit detect``."""

from __future__ import annotations

import argparse

from .options import (
    HELP,
    add_detection_limit,
    add_inference_options,
    add_label_options,
    check_results_out,
    data_options,
    inference_input,
    label_options,
    load_runtime,
    overlay_options,
    probability,
    slicing_options,
)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "detect",
        help="class detections for an image, a folder or a dataset (Faster R-CNN checkpoints)",
        description=(
            "Writes COCO-style results JSON: a list of {file_name, image_id, bbox "
            "[x, y, w, h] in original pixels, score, category_id (a COCO JSON input's own "
            "category ids, else 1..K in the checkpoint's class order), category_name}; PNG "
            "overlays with names and scores on request, and the detections as annotations "
            "(--labels DIR: Pascal VOC XML, YOLO txt or CSV) to review, correct or train on."
        ),
        formatter_class=HELP,
    )
    add_inference_options(
        p,
        checkpoint_help="a checkpoint of train --model faster-rcnn",
        out_default="detections.json",
    )
    p.add_argument(
        "--score", type=probability, default=0.3, help="keep detections at least this sure"
    )
    add_detection_limit(p)
    add_label_options(p, what="the detections kept (--score, --max-detections)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..engine.paths import output_file
    from ..viz.export import export_results

    check_results_out(args, also=" (annotations in VOC, YOLO or CSV: --labels DIR)")
    output_file(args.out, what="JSON")  # checked before the model is loaded, as
    overlays = overlay_options(args)  # the overlays' folder is, and the labels' one
    labels = label_options(args)
    inputs = inference_input(args)  # refused before the model is loaded
    runtime = load_runtime(args)
    results = runtime.iter_detections(
        inputs,
        score_threshold=args.score,
        max_detections=args.max_detections,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        **slicing_options(args),
        **data_options(args),
    )
    written = export_results(
        results,
        args.out,
        **overlays,
        **labels,
        skipped=runtime.skipped,
        pace=runtime.pace,
    )
    print(written.describe("detections", args.out, args.overlays))
    return 0
