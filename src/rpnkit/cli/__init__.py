"""The ``rpnkit`` command line: one module per subcommand, each with ``add_parser`` and ``run``.
It parses arguments and calls the library; the library never reads argv."""

from __future__ import annotations

import argparse
import sys
import warnings

from . import anchors, demo, detect, evaluate, propose, report, show, train

SUBCOMMANDS = (demo, train, evaluate, propose, anchors, show, detect, report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rpnkit",
        description="Region Proposal Networks: train, propose, evaluate and look.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in SUBCOMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..data import DataError

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        try:
            return args.func(args)
        except (DataError, ValueError, FloatingPointError) as err:
            print(f"rpnkit {args.command}: error: {err}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
