"""The ``rpnkit`` command line: one module per subcommand, each with ``add_parser`` and ``run``.
It parses arguments and calls the library; the library never reads argv.

Every failure the user can fix is one line on stderr and exit code 2: a command line argparse
rejects (``UsageError``), and a ``DataError``, ``ValueError`` or ``FloatingPointError`` from
the library, including one raised in a DataLoader worker. Warnings are one line each.
``rpnkit --debug`` raises library errors with their traceback instead."""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from . import anchors, demo, detect, evaluate, export, propose, report, show, train
from .options import Parser, UsageError, add_global_options

SUBCOMMANDS = (demo, train, evaluate, propose, anchors, show, detect, report, export)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="rpnkit",
        description="Region Proposal Networks: train, propose, evaluate and look.",
    )
    add_global_options(parser)
    parser.add_argument("--version", action="version", version=f"rpnkit {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)  # of the class Parser too
    for command in SUBCOMMANDS:
        command.add_parser(sub)
    for command_parser in sub.choices.values():
        add_global_options(command_parser, after_command=True)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rpnkit")
    except PackageNotFoundError:  # run from a source tree (PYTHONPATH=src)
        return "(source tree)"


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The parsed command line; raises UsageError, naming the subcommand when there is one.
    ``args.given``: the options the command line names (a value equal to the default too),
    for what a --config file's settings give way to."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        raise UsageError(
            f"{parser.prog} {args.command}", f"unrecognized arguments: {' '.join(unknown)}"
        )
    args.given = _given_options(argv)
    return args


def _given_options(argv: list[str] | None) -> set[str]:
    """The destinations the command line sets: a parse with every default left out."""
    parser = build_parser()
    parsers = [parser, *next(a for a in parser._actions if a.dest == "command").choices.values()]
    for each in parsers:
        for action in each._actions:
            action.default = argparse.SUPPRESS
    given, _ = parser.parse_known_args(argv)
    return set(vars(given)) - {"command", "func"}


def main(argv: list[str] | None = None) -> int:
    """Run ``rpnkit`` on ``argv`` (default: sys.argv); 0 on success, 2 with one line on stderr
    for a rejected command line or a library error (raised instead under ``--debug``)."""
    try:
        args = parse_args(build_parser(), argv)
    except UsageError as err:
        print(err, file=sys.stderr)
        return 2
    from ..data import DataError

    with warnings.catch_warnings(), one_line_warnings(enabled=not args.debug):
        warnings.simplefilter("default")
        # the DataLoader forks its workers once CUDA (or a prefetching thread) has started
        # threads: supported by PyTorch, as the workers only read files and touch neither CUDA
        # nor the parent's queues and locks; Python 3.12 would say so on every GPU run
        warnings.filterwarnings("ignore", message=_FORK_NOTICE, category=DeprecationWarning)
        try:
            with image_pixel_limit(args.max_image_pixels):
                return args.func(args)
        except (DataError, ValueError, FloatingPointError) as err:
            if args.debug:
                raise
            print(f"rpnkit {args.command}: error: {error_message(err)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:  # Ctrl-C: one line (train says what checkpoint is left)
            if args.debug:
                raise
            print(f"rpnkit {args.command}: interrupted", file=sys.stderr)
            return 130


_FORK_NOTICE = r"This process \(pid=\d+\) is multi-threaded, use of fork\(\) may lead to deadlocks"


# --- one line per error and per warning --------------------------------------------------------

_EXCEPTION_LINE = re.compile(r"([A-Za-z_][\w.<>]*)(?:: (.*))?\Z", re.S)  # "module.Type: text"


def error_message(err: BaseException) -> str:
    """The message of an error, reduced to the original exception's own message when PyTorch
    re-raised it from a DataLoader worker with the worker's traceback embedded."""
    return reduce_worker_traceback(str(err))


def reduce_worker_traceback(message: str) -> str:
    """``Caught DataError in DataLoader worker process 0.\\nOriginal Traceback (most recent
    call last):\\n ... \\nrpnkit.data.records.DataError: x.jpg: bad\\n`` -> ``x.jpg: bad``: the
    text after ``ExceptionType: `` of the last exception of the embedded traceback (the one
    raised last, after any ``The above exception was the direct cause`` chain). Any other
    message is returned as it is."""
    marker = "Traceback (most recent call last):\n"
    if not message.startswith("Caught ") or f"\nOriginal {marker}" not in message:
        return message
    lines = message.rsplit(marker, 1)[1].rstrip("\n").split("\n")
    # the frames are indented ("  File ...", their source and ^^^ lines); the exception is not
    start = next((i for i, line in enumerate(lines) if line and not line[0].isspace()), None)
    if start is None:
        return message
    found = _EXCEPTION_LINE.match("\n".join(lines[start:]))
    if found is None:
        return message
    return (found.group(2) or found.group(1)).strip()


def _one_line(message, category, filename, lineno, line=None) -> str:
    """``warnings.formatwarning`` as one line: ``warning: <message>``."""
    return "warning: " + " ".join(str(message).split()) + "\n"


def _show_on_stderr(message, category, filename, lineno, file=None, line=None) -> None:
    text = warnings.formatwarning(message, category, filename, lineno, line)
    with suppress(OSError):  # stderr closed: the warning is lost, as with Python's showwarning
        (file or sys.stderr).write(text)


@contextmanager
def one_line_warnings(*, enabled: bool = True) -> Iterator[None]:
    """Within a ``warnings.catch_warnings()`` block: every warning printed to stderr as
    ``warning: <message>`` (no file, line or source line), ``warnings.formatwarning`` restored
    afterwards. Disabled (``--debug``): Python's format, still printed to stderr."""
    saved = warnings.formatwarning
    if enabled:
        warnings.formatwarning = _one_line
    warnings.showwarning = _show_on_stderr  # catch_warnings restores it
    try:
        yield
    finally:
        warnings.formatwarning = saved


@contextmanager
def image_pixel_limit(max_pixels: int | None) -> Iterator[None]:
    """``--max-image-pixels``: Pillow's pixel limit for the command (0: none), the previous
    limit restored afterwards. None leaves Pillow's limit as it is."""
    if max_pixels is None:
        yield
        return
    from PIL import Image

    from ..data.images import allow_large_images

    saved = Image.MAX_IMAGE_PIXELS
    allow_large_images(max_pixels or None)
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


if __name__ == "__main__":
    sys.exit(main())
