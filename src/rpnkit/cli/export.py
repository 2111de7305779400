"""``rpnkit export``."""

from __future__ import annotations

import argparse

from .options import HELP, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX, for ONNX Runtime and other runtimes",
        description=(
            "Write the checkpoint's model (an RPN or a Faster R-CNN, batch norms folded) as "
            "one ONNX file with anchors, NMS and RoI pooling inside the graph. Inputs: images "
            "(B, 3, H, W) uint8 RGB of any size (padded to multiples of 32 inside), and "
            "image_sizes (B, 2) int64; "
            "batch, height and width are dynamic. Outputs are padded with per-image counts. "
            "See docs/deploy.md."
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..export import DEFAULT_OPSET, export_onnx

    opset = DEFAULT_OPSET if args.opset is None else args.opset
    out = export_onnx(args.checkpoint, args.out, fp16=args.fp16, opset=opset)
    precision = "float16" if args.fp16 else "float32"
    print(f"wrote {out} (ONNX opset {opset}, {precision}); see docs/deploy.md to run it")
    return 0
