"""``rpnkit detect``."""

from __future__ import annotations

import argparse

from .options import (
    HELP,
    add_detection_limit,
    add_inference_options,
    check_has_effect,
    check_results_out,
    data_options,
    inference_input,
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


def add_label_options(p: argparse.ArgumentParser, *, what: str) -> None:
    """--labels DIR and --labels-format, of detect and propose: ``what``, the results that
    the labels hold, as the help names them."""
    p.add_argument(
        "--labels",
        default=None,
        metavar="DIR",
        help=f"also write {what} as annotations in DIR, a file for every image (an empty one "
        "without any); a name met again: a-2.xml",
    )
    p.add_argument(
        "--labels-format",
        choices=("voc", "yolo", "csv"),
        default="voc",
        help="with --labels: voc (DIR/<stem>.xml, the score in <score>), yolo "
        "(DIR/labels/<stem>.txt 'class cx cy w h', no score, DIR/images/<stem>.jpg a link to "
        "each image, and DIR/data.yaml: a dataset as it is) or csv "
        "(DIR/detections.csv: filename,width,height,class,xmin,ymin,xmax,ymax,score)",
    )


def label_options(args: argparse.Namespace) -> dict:
    """--labels and --labels-format as export_results' keyword arguments, checked before the
    model is loaded: a file in the folder's way, an earlier run's label files in it, or
    --labels-format without --labels are one line."""
    from ..engine.label_files import check_label_folder
    from ..engine.paths import check_folder

    check_has_effect(args, {"labels_format": "labels"})
    if args.labels is not None:
        check_folder(args.labels, name=f"--labels {args.labels}")
        check_label_folder(args.labels, args.labels_format)
    return {"labels": args.labels, "labels_format": args.labels_format}


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
