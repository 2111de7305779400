"""``rpnkit propose``."""

from __future__ import annotations

import argparse

from .options import (
    HELP,
    add_inference_options,
    add_label_options,
    check_results_out,
    data_options,
    inference_input,
    label_options,
    load_runtime,
    non_negative_int,
    overlay_options,
    positive_int,
    slicing_options,
)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "propose",
        help="class-agnostic proposals for an image, a folder or a dataset",
        description=(
            "Writes COCO-style results JSON: a list of {file_name, image_id, bbox "
            "[x, y, w, h] in original pixels, score}, best first per image; PNG overlays on "
            "request, and the proposals as annotations of one class, object (--labels DIR: "
            "Pascal VOC XML, YOLO txt or CSV), to start annotating a new dataset from."
        ),
        formatter_class=HELP,
    )
    add_inference_options(
        p, checkpoint_help="checkpoint.safetensors to use", out_default="proposals.json"
    )
    p.add_argument(
        "--top",
        type=positive_int,
        default=100,
        help="proposals kept per image; more than the model's own limit (1000 for most "
        "presets, 300 for tiny) raises it: a dense image needs more",
    )
    p.add_argument(
        "--overlay-top", type=non_negative_int, default=20, help="proposals drawn per overlay"
    )
    add_label_options(p, what="the proposals kept (--top), of one class named object,")
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
    results = runtime.iter_proposals(
        inputs,
        top=args.top,
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
    print(written.describe("proposals", args.out, args.overlays))
    return 0
