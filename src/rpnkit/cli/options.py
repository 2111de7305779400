"""Option groups that several subcommands share, defined once, and the one way each is read."""

from __future__ import annotations

import argparse

HELP = argparse.ArgumentDefaultsHelpFormatter
DEFAULT_PRESET = "effnet-lite0-fpn"


def add_model_options(p: argparse.ArgumentParser, *, preset_help: str, weights: bool) -> None:
    """--preset, --config and --weights: which model (train, anchors, show)."""
    from ..modeling.presets import PRESETS

    p.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS), help=preset_help)
    p.add_argument(
        "--config",
        default=None,
        help="a model config YAML/JSON (e.g. with fitted anchors) instead of --preset",
    )
    p.add_argument(
        "--weights",
        default=None,
        help="backbone weights: a local torchvision-format file (ResNet/VGG), or 'imagenet' "
        "for the packaged EfficientNet-Lite0 weights"
        if weights
        else argparse.SUPPRESS,
    )


def model_config(args: argparse.Namespace):
    """The ModelConfig that --preset, --config and --weights name."""
    from ..config import load_config
    from ..modeling.presets import ModelConfig, preset_config, with_backbone_weights

    config = load_config(ModelConfig, args.config) if args.config else preset_config(args.preset)
    return with_backbone_weights(config, args.weights) if args.weights is not None else config


def add_data_options(p: argparse.ArgumentParser, *, split: str) -> None:
    """Which dataset split, in which format, how strictly, at what size; device, progress."""
    p.add_argument(
        "--format",
        choices=["coco", "voc", "yolo"],
        default=None,
        help="dataset format (detected from the path when not given)",
    )
    p.add_argument(
        "--split",
        default=split,
        help="COCO: a name in annotations/instances_<split>.json; YOLO: the data.yaml key",
    )
    p.add_argument(
        "--split-file",
        default=None,
        help="VOC: a text file of image ids or a CSV with a 'filename' column "
        "selecting the images (e.g. raccoon's train_labels.csv)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first bad sample instead of skipping it with a warning",
    )
    p.add_argument("--short-side", type=int, default=800, help="resize: shorter side in pixels")
    p.add_argument("--max-size", type=int, default=1333, help="resize: cap on the longer side")
    add_run_options(p)


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N'")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def data_options(args: argparse.Namespace) -> dict:
    """The data options as keyword arguments of the runtime and of ``read_dataset``-like calls."""
    return {
        "split": args.split,
        "fmt": args.format,
        "split_file": args.split_file,
        "strict": args.strict,
    }


def read_data(args: argparse.Namespace):
    """The dataset --data names, with --split, --format, --split-file and --strict; its
    summary line is printed."""
    from ..data import read_dataset

    index = read_dataset(args.data, **data_options(args))
    print(index.summary())
    return index


def add_precision_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--amp",
        choices=["none", "bf16", "fp16"],
        default="none",
        help="run the network under bf16/fp16 autocast (boxes are still decoded and selected "
        "in float32); bf16 took 1.4x less time than float32 for R50-FPN at batch 8 on an "
        "H200 (docs/performance.md) and more on most CPUs; fp16 needs a GPU",
    )


def add_inference_options(
    p: argparse.ArgumentParser, *, checkpoint_help: str, out_default: str
) -> None:
    """The options propose and detect share."""
    p.add_argument("input", help="an image, a folder of images, or a dataset")
    p.add_argument("--checkpoint", required=True, help=checkpoint_help)
    p.add_argument("--out", default=out_default, help="results JSON to write")
    p.add_argument("--overlays", default=None, help="folder for PNG overlays (optional)")
    p.add_argument("--max-overlays", type=int, default=50, help="at most this many overlays")
    p.add_argument("--batch-size", type=int, default=4, help="images per forward pass")
    add_precision_option(p)
    add_data_options(p, split="val")


def load_runtime(args: argparse.Namespace):
    """The --checkpoint ready for inference on --device, at --amp, --short-side, --max-size."""
    from ..engine.runtime import load

    return load(
        args.checkpoint,
        args.device,
        amp=args.amp,
        short_side=args.short_side,
        max_size=args.max_size,
    )
