"""The ``rpnkit`` command line. The library never reads argv; this module only parses and calls."""

from __future__ import annotations

import argparse
import sys


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    result = run_demo(
        args.out,
        steps=args.steps,
        time_budget_s=args.time_budget,
        num_val=args.num_val,
        seed=args.seed,
        progress=not args.no_progress,
    )
    if result["recall@100@0.5"] < 0.9:
        print(
            f"warning: held-out recall@100@0.5 is {result['recall@100@0.5']:.3f}, below the "
            "0.9 a full demo run reaches",
            file=sys.stderr,
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rpnkit",
        description="Region Proposal Networks: train, propose, evaluate and look.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="train a small RPN on synthetic shapes on the CPU and report held-out recall",
        description=(
            "Build a deterministic synthetic dataset of shapes, train the 'tiny' RPN on it from "
            "scratch, print AR@10, AR@100 and recall@100 at IoU 0.5 on held-out images, and "
            "write the checkpoint, metrics.json and PNG pictures to --out."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_argument("--out", default="runs/demo", help="output folder")
    demo.add_argument("--steps", type=int, default=400, help="training steps (16 images each)")
    demo.add_argument(
        "--time-budget",
        type=float,
        default=240.0,
        help="stop training after this many seconds even if steps remain",
    )
    demo.add_argument("--num-val", type=int, default=200, help="held-out images to evaluate")
    demo.add_argument("--seed", type=int, default=0, help="seed of the data and the training")
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
