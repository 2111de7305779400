"""``rpnkit export``."""

from __future__ import annotations

import argparse

from .options import HELP, positive_int, probability


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX, for ONNX Runtime and other runtimes",
        description=(
            "Write the checkpoint's model (an RPN or a Faster R-CNN, batch norms folded) as "
            "one ONNX file with anchors, NMS and RoI pooling inside the graph. Inputs: images "
            "(B, 3, H, W) uint8 RGB of any size (padded to multiples of 32 inside), and "
            "image_sizes (B, 2) int64; "
            "batch (B >= 1), height and width are dynamic. Outputs are padded with per-image "
            "counts. The graph bakes in the score threshold, NMS and the number of detections "
            "(proposals) per image: the model's own, or --score, --max-detections (--top); "
            "the file's metadata records them. See docs/deploy.md."
        ),
        formatter_class=HELP,
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint.safetensors to export")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="what to write")
    p.add_argument("--out", default="model.onnx", help="the .onnx file to write")
    p.add_argument(
        "--fp16",
        action="store_true",
        help="float16 weights and activations (for a GPU runtime); boxes and scores stay float32",
    )
    p.add_argument(
        "--opset", type=positive_int, default=None, help="ONNX opset (default: rpnkit's, 18)"
    )
    add_baked_in_options(p)
    p.add_argument(
        "--verify",
        nargs="+",
        default=None,
        metavar="IMAGES",
        help=(
            "after exporting, run the ONNX file in ONNX Runtime and the checkpoint in PyTorch "
            "on these images (a folder or image files; the first 10 readable are used) at "
            "batch 1 and compare them; exit 2 beyond the tolerance"
        ),
    )
    p.set_defaults(func=run)


def add_baked_in_options(p: argparse.ArgumentParser) -> None:
    """--score, --max-detections and --top: the settings the graph bakes in."""
    p.add_argument(
        "--score",
        type=probability,
        default=None,
        help=(
            "a Faster R-CNN's score threshold baked into the graph: it keeps detections "
            "scoring above it (default: the model's own, 0.05; rpnkit detect keeps 0.3 and up)"
        ),
    )
    p.add_argument(
        "--max-detections",
        type=positive_int,
        default=None,
        metavar="N",
        help="a Faster R-CNN's detections per image, D (default: the model's, 100)",
    )
    p.add_argument(
        "--top",
        type=positive_int,
        default=None,
        metavar="N",
        help="an RPN's proposals per image, K (default: its test setting, 1000 on FPN presets)",
    )


def run(args: argparse.Namespace) -> int:
    from ..export import DEFAULT_OPSET, export_onnx
    from ..export.verify import check_verify_inputs, verify_onnx

    if args.verify is not None:
        check_verify_inputs(args.verify)  # before the export
    opset = DEFAULT_OPSET if args.opset is None else args.opset
    out = export_onnx(
        args.checkpoint,
        args.out,
        fp16=args.fp16,
        opset=opset,
        score_threshold=args.score,
        max_detections=args.max_detections,
        top=args.top,
    )
    precision = "float16" if args.fp16 else "float32"
    print(
        f"wrote {out} (ONNX opset {opset}, {precision}; {baked_in(out)}); see docs/deploy.md "
        "to run it"
    )
    if args.verify is None:
        return 0
    verification = verify_onnx(out, args.checkpoint, args.verify)
    print(verification.line())
    if not verification.ok:
        raise ValueError(verification.failure())
    return 0


def baked_in(path) -> str:
    """The settings the file records as baked in, in words."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    nms = f"NMS at IoU {float(meta['rpnkit.nms_threshold']):g}"
    if "rpnkit.detections_per_image" in meta:
        return (
            f"baked in: scores above {float(meta['rpnkit.score_threshold']):g}, {nms}, at most "
            f"{meta['rpnkit.detections_per_image']} detections per image"
        )
    return f"baked in: {nms}, at most {meta['rpnkit.proposals_per_image']} proposals per image"
