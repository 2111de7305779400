"""``rpnkit eval``."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import (
    HELP,
    add_data_options,
    add_detection_limit,
    add_model_run_options,
    add_slicing_options,
    load_runtime,
    positive_int,
    read_data,
    slicing_options,
    warn_unused,
)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="proposal recall (or a detector's mAP) of a checkpoint or of stored results",
        description=(
            "AR@10/100/300/1000 (IoU 0.5:0.95) and recall at IoU 0.5 and 0.7, overall "
            "and per COCO size range, computed as pycocotools' COCOeval with "
            "useCats=0, of a checkpoint's proposals or of a COCO results file "
            "(--proposals: from rpnkit propose, detectron2 or anything else); a Faster R-CNN "
            "checkpoint gets COCO and VOC mAP, and so do stored detections (--detections: from "
            "rpnkit detect, detectron2, mmdet); a class-agnostic checkpoint (OLN's full model, "
            "preset effnet-lite0-fpn-oln-rcnn) the recall of its final boxes as proposals. "
            "--seen-classes: recall on the classes never seen in training (OLN's protocol). "
            "Prints a table; --out writes JSON."
        ),
        formatter_class=HELP,
    )
    _add_what(p)
    p.add_argument("--data", required=True, help="dataset: COCO JSON, VOC folder, YOLO yaml, CSV")
    p.add_argument(
        "--split-from",
        default=None,
        metavar="RUN_DIR",
        help="evaluate only the images that 'rpnkit train --val-fraction' held out of --data "
        "in this run (its split.json, or the file itself); --split defaults to the run's "
        "training split",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=4,
        help="images (with --tile-size: tiles) per forward pass",
    )
    add_model_run_options(p)
    p.add_argument(
        "--top",
        type=positive_int,
        default=None,
        metavar="N",
        help="proposals scored per image: a checkpoint's (default: the model's own number; "
        "with --tile-size, up to 1000), or each image's best N of stored --proposals "
        "(default: all); AR@k counts the best k, up to 1000",
    )
    add_detection_limit(p)
    p.add_argument(
        "--seen-classes",
        default=None,
        metavar="NAMES",
        help="the novel-class protocol of OLN: comma-separated names of the classes the model "
        "was trained on ('voc': the 20 VOC classes in COCO's naming); AR@10/100/1000 on the "
        "boxes of the dataset's other classes, each image's proposals on seen-class objects "
        "(IoU >= 0.5) removed before the budget, then the standard all-class AR. Scores an "
        "RPN's proposals, a class-agnostic detector's final boxes, or a classifying "
        "detector's RPN; keep more than 1000 (--top, --max-detections) to leave room for the "
        "removed ones",
    )
    add_slicing_options(p)
    p.add_argument("--out", default=None, help="write the metrics as JSON here")
    p.add_argument(
        "--plots",
        default=None,
        help="folder for recall.png (recall against proposals and against IoU), or for a "
        "Faster R-CNN checkpoint or stored --detections precision_recall.png",
    )
    add_data_options(p, split="val", locate=True, checkpoint=True)
    p.set_defaults(func=run)


def _add_what(p: argparse.ArgumentParser) -> None:
    """What is scored: --checkpoint, --proposals or --detections."""
    what = p.add_mutually_exclusive_group()  # one of them: checked in run, as argparse words it
    what.add_argument("--checkpoint", help="checkpoint.safetensors to evaluate")
    what.add_argument(
        "--proposals",
        metavar="RESULTS_JSON",
        help="score these stored proposals instead of a checkpoint's: a COCO results JSON "
        "(entries with file_name or image_id, bbox [x, y, w, h] and score), matched to the "
        "images by file name when the entries have one, else by COCO image id; boxes are "
        "compared in original pixels and results for unknown images are reported",
    )
    what.add_argument(
        "--detections",
        metavar="RESULTS_JSON",
        help="score these stored detections for mAP instead of a checkpoint's: a COCO results "
        "JSON (entries as for --proposals, with category_name or category_id), matched to the "
        "images as --proposals are and to the dataset's classes by category_name when an "
        "entry has one, else by category_id (the COCO JSON's own ids for COCO data, else 1..K "
        "in the dataset's class order, said in a warning: rpnkit detect numbers its "
        "checkpoint's classes, and writes category_name too); results of unknown images or "
        "classes are reported. --max-detections N: each image's best N count",
    )


def _read(args: argparse.Namespace, class_names=None):
    """--data as ``read_data`` reads it; with --split-from and no --split, the split the run
    trained on (its held-out images were taken from it): its record's, else ``train``."""
    if args.split_from is not None and args.split is None:
        args.split, args.default_split = _run_split(Path(args.split_from), args.data), "train"
    return read_data(args, class_names)


def _run_split(run_dir: Path, data: str) -> str | None:
    """The split a run trained on, as its record names it, when it trained on ``data``
    (None otherwise, and for a record that cannot be read: split.json is what counts)."""
    from ..engine.run_record import RunRecord

    try:
        record = RunRecord.load(run_dir) if run_dir.is_dir() else None
    except ValueError:
        return None
    same = record is not None and Path(record.data.data).resolve() == Path(data).resolve()
    return record.data.split if same else None


def _held_out(args: argparse.Namespace, index):
    """The images of ``index`` that --split-from held out (all of them without it)."""
    if args.split_from is None:
        return index
    from ..data.splits import held_out, read_split

    split = read_split(args.split_from)
    index = held_out(index, split, where=args.split_from)
    print(f"{args.split_from}: {split.describe()}; evaluating {len(index.records)} of them")
    for line in index.issues:
        print(f"warning: {line}")
    return index


def _evaluate(args: argparse.Namespace):
    """The report, and when the model's batches came (None for stored results)."""
    if args.checkpoint is None and args.proposals is None and args.detections is None:
        raise ValueError(
            "the following arguments are required: --checkpoint (or --proposals or "
            "--detections, to score stored proposals or detections)"
        )
    stored = "--proposals" if args.proposals is not None else "--detections"
    if args.checkpoint is None and args.seen_classes is not None:
        raise ValueError(f"--seen-classes scores a checkpoint's boxes, not stored {stored}")
    if args.proposals is not None:
        return _stored_proposals(args), None
    if args.detections is not None:
        return _stored_detections(args), None
    runtime = load_runtime(args)
    own_names = runtime.class_agnostic or args.seen_classes is not None
    index = _held_out(args, _read(args, None if own_names else list(runtime.class_names)))
    detector = runtime.spec.is_detector
    if args.top is not None and detector:
        raise ValueError("--top counts an RPN's proposals: a Faster R-CNN's is --max-detections")
    if args.max_detections is not None and not detector:
        raise ValueError("--max-detections is for a Faster R-CNN: an RPN's limit is --top")
    common = {"batch_size": args.batch_size, "progress": not args.no_progress}
    common.update(slicing_options(args))
    if args.seen_classes is not None:
        top = args.max_detections if detector else args.top
        report = runtime.evaluate_novel_classes(index, args.seen_classes, top=top, **common)
    elif detector and runtime.class_agnostic:  # its final boxes, scored as proposals
        report = runtime.evaluate(index, top=args.max_detections, **common)
    else:
        limit = {"max_detections": args.max_detections} if detector else {"top": args.top}
        report = runtime.evaluate(index, **limit, **common)
    return report, runtime.pace


# what runs a model: ignored for stored results, scored as they are, in original pixels
MODEL_OPTIONS = ("batch_size", "amp", "compile", "channels_last", "decode", "workers",
                 "tile_size", "tile_overlap", "full_view", "short_side", "max_size")  # fmt: skip


def _stored_proposals(args: argparse.Namespace):
    """The recall of --proposals (class-agnostic: no class names to map)."""
    from ..engine.stored_results import evaluate_stored_proposals, read_stored_proposals

    warn_unused(args, MODEL_OPTIONS, "ignored: stored --proposals are scored as they are")

    if args.max_detections is not None:
        raise ValueError("--max-detections counts detections: for stored --proposals it is --top")
    whole = _read(args)
    index = _held_out(args, whole)
    stored = read_stored_proposals(args.proposals, index, top=args.top, whole=whole)
    kept = f"; each image's best {args.top} scored" if args.top is not None else ""
    print(stored.describe() + kept)
    return evaluate_stored_proposals(stored, index, device=args.device)


def _stored_detections(args: argparse.Namespace):
    """The mAP of --detections, their classes mapped to the dataset's own."""
    from ..engine.stored_results import evaluate_stored_detections, read_stored_detections

    warn_unused(args, MODEL_OPTIONS, "ignored: stored --detections are scored as they are")

    if args.top is not None:
        raise ValueError("--top counts proposals: for stored --detections it is --max-detections")
    whole = _read(args)
    index = _held_out(args, whole)
    stored = read_stored_detections(args.detections, index, top=args.max_detections, whole=whole)
    print(stored.describe())
    return evaluate_stored_detections(stored, index)


def run(args: argparse.Namespace) -> int:
    from ..engine.paths import output_file, output_folder
    from ..engine.results import write_json

    if args.out:  # a folder there, or a file in the way, said before the evaluation
        output_file(args.out, what="JSON")
    if args.plots:
        output_folder(args.plots, name=f"--plots {args.plots}")
    report, pace = _evaluate(args)
    if pace is not None:
        print(f"ran the model on {pace.images} image(s){pace.summary()}")
    print(report.format())
    if args.plots:
        from ..viz.evaluation import plot_evaluation

        print(f"wrote {plot_evaluation(report, args.plots)}")
    if args.out:
        print(f"wrote {write_json(args.out, report.metrics, indent=2)}")
    return 0
