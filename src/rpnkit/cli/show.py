"""``rpnkit show``."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import (
    HELP,
    add_data_options,
    add_model_options,
    model_config,
    non_negative_float,
    non_negative_int,
    positive_int,
)

PICTURES = ("anchors", "grid", "labels", "objectness", "nms", "proposals", "losses")
NEED_CHECKPOINT = ("objectness", "nms", "proposals")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "show",
        help="pictures: anchors, anchor grid, anchor labels, objectness, NMS, proposals, losses",
        description=(
            "Write one PNG. anchors: every level's anchors at one position (--x, --y; default "
            "the centre). grid: a level's anchor centres (--level). labels: positive, negative "
            "and ignored anchors of a dataset image (--index); for a Cascade RPN its own two "
            "assignments, stage 1's region assigner on the anchors and, with --checkpoint, "
            "stage 2's IoU matching on the stage-1 boxes. objectness: per-level heat maps. "
            "nms: the top boxes before and after NMS. proposals: the top proposals against the "
            "GT of a dataset image, found green and missed red. losses: the training losses of "
            "a run folder or train_log.csv. objectness, nms and proposals need --checkpoint; "
            "anchors and grid use --preset (or --config), labels the checkpoint's model when "
            "given, else --preset (or --config). With a checkpoint the image is resized to the "
            "checkpoint's training size, as propose, detect and eval do (--short-side and "
            "--max-size override it), and the model runs on --device."
        ),
        formatter_class=HELP,
    )
    p.add_argument("what", choices=PICTURES, help="which picture")
    p.add_argument("source", help="an image, a dataset (labels, proposals), or a run folder")
    p.add_argument(
        "--out", default="show.png", help="PNG to write (.png is added to a name without one)"
    )
    add_model_options(p, preset_help="whose anchors (anchors, grid, labels)", weights=False)
    p.add_argument(
        "--checkpoint",
        default=None,
        help="model (objectness, nms, proposals; for labels, anchors and grid instead of "
        "--preset or --config)",
    )
    p.add_argument(
        "--index", type=non_negative_int, default=0, help="which image of a dataset or folder"
    )
    p.add_argument("--level", type=non_negative_int, default=0, help="pyramid level (grid)")
    p.add_argument(
        "--x",
        type=non_negative_float,
        default=None,
        help="position in the image's pixels (anchors)",
    )
    p.add_argument(
        "--y",
        type=non_negative_float,
        default=None,
        help="position in the image's pixels (anchors)",
    )
    p.add_argument("--top", type=positive_int, default=10, help="boxes drawn (nms, proposals)")
    add_data_options(p, split="val", locate=True, checkpoint=True)  # size: the checkpoint's
    p.set_defaults(func=run)


def _anchor_model(args: argparse.Namespace, opts: dict):
    """The model whose anchors are drawn: a --checkpoint's (at its training size unless
    --short-side / --max-size say otherwise, into ``opts``), else --preset or --config's."""
    if args.checkpoint is None:
        return model_config(args)
    from ..engine.checkpoint import read_header, read_spec

    spec = read_spec(args.checkpoint)
    if spec is None:
        raise ValueError(f"{args.checkpoint}: the checkpoint records no model config")
    size = read_header(args.checkpoint).get("input_size") or (None, None)
    opts["short"] = opts["short"] if opts["short"] is not None else size[0]
    opts["max_size"] = opts["max_size"] if opts["max_size"] is not None else size[1]
    return spec.model_config


def run(args: argparse.Namespace) -> int:
    from ..engine.paths import output_file
    from ..viz import charts, show
    from ..viz.figures import png_path

    # checked before any drawing: a folder given is refused, not written beside as FOLDER.png;
    # the file written: a name without a suffix gets .png (matplotlib's rule), said as such
    output_file(args.out, what="PNG")
    out = output_file(png_path(args.out), what="PNG")
    what, source, checkpoint = args.what, args.source, args.checkpoint
    opts = dict(short=args.short_side, max_size=args.max_size, split=args.split)
    opts.update(format=args.format, split_file=args.split_file, images=args.images)
    opts.update(class_map=args.class_map)
    image = dict(index=args.index, device=args.device)  # which image, where a model runs
    if what == "losses":
        log = Path(source)  # a run folder, or a checkpoint in one: the folder's log
        log = log.parent if log.suffix == ".safetensors" else log
        log = log / "train_log.csv" if log.is_dir() else log
        charts.plot_loss_curves(log, out)
    elif what == "anchors":
        config = _anchor_model(args, opts)
        show.show_anchors(config, source, out, x=args.x, y=args.y, **opts)
    elif what == "grid":
        show.show_grid(_anchor_model(args, opts), source, out, level=args.level, **opts)
    elif what == "labels":  # a checkpoint's own config, else --preset or --config
        config = None if checkpoint else model_config(args)
        show.show_labels(config, source, out, checkpoint=checkpoint, **image, **opts)
    elif not checkpoint:
        raise ValueError(f"rpnkit show {what} needs --checkpoint")
    elif what == "objectness":
        show.show_objectness(checkpoint, source, out, **image, **opts)
    elif what == "nms":
        show.show_nms(checkpoint, source, out, top=args.top, **image, **opts)
    else:
        show.show_proposals(checkpoint, source, out, top=args.top, **image, **opts)
    print(f"wrote {out}")
    return 0
