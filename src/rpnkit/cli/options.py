"""Option groups that several subcommands share, defined once, and the one way each is read."""

from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path

from ..config import DEFAULT_PRESET, MAX_SEED
from ..data.transforms import DEFAULT_MAX_SIZE, DEFAULT_SHORT_SIDE
from ..engine.slicing import DEFAULT_TILE_OVERLAP
from ..modeling.sizes import MIN_MAX_SIZE


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default after its help, where it says something: not for options whose
    help already names theirs, nor None (unset), nor a flag's False."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        unset = action.default is None or action.default is False  # (0 == False: not 'in')
        if "(default" in text or unset or action.default is argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)


HELP = HelpFormatter


# --- errors: one line, never argparse's usage + error + SystemExit ---------------------------


class UsageError(Exception):
    """A command line argparse rejects: ``prog`` (``rpnkit train``) and argparse's message
    (``argument --steps: must be an integer >= 1, got -5``); ``main`` prints it as one line."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(f"{prog}: error: {message}")
        self.prog, self.message = prog, message


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise ``UsageError`` instead of printing the usage and
    exiting (``--help`` still prints and exits). Subparsers are of this class too."""

    def error(self, message: str):
        raise UsageError(self.prog, message)


# --- numeric option types: each range checked once, by argparse ------------------------------


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text}")
    return value


def _number(text: str, rule: str, ok) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and ok(value)):
        raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
    return value


def seed(text: str) -> int:
    """A seed: an integer in [0, 2**32 - 1] (numpy's range)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**32 - 1], got {text}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (steps, batch sizes, counts that cannot be zero)."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """An integer >= 0 (indices, counts where 0 means none or off)."""
    return _int_at_least(text, 0)


def image_side(text: str) -> int:
    """A cap on an image side in pixels: an integer of at least one padding block (32)."""
    return _int_at_least(text, MIN_MAX_SIZE)


def positive_float(text: str) -> float:
    """A finite number > 0 (learning rate, clipping norm, seconds)."""
    return _number(text, "a number > 0", lambda v: v > 0)


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (weight decay, pixel positions)."""
    return _number(text, "a number >= 0", lambda v: v >= 0)


def probability(text: str) -> float:
    """A probability or score in [0, 1]."""
    return _number(text, "a probability in [0, 1]", lambda v: 0 <= v <= 1)


def held_out_fraction(text: str) -> float:
    """A share of a dataset to hold out, in [0, 1): something must be left to train on."""
    return _number(text, "a fraction in [0, 1)", lambda v: 0 <= v < 1)


def fraction(text: str) -> float:
    """A fraction in (0, 1] (how much of a box must stay in a tile)."""
    return _number(text, "a fraction in (0, 1]", lambda v: 0 < v <= 1)


def iou(text: str) -> float:
    """An intersection over union in [0, 1]."""
    return _number(text, "an IoU in [0, 1]", lambda v: 0 <= v <= 1)


# --- option groups ---------------------------------------------------------------------------


def add_global_options(p: argparse.ArgumentParser, *, after_command: bool = False) -> None:
    """--debug and --max-image-pixels: options of ``rpnkit`` itself (``rpnkit --debug train``),
    also accepted after the subcommand (``after_command``: no defaults there, so that a value
    given before the subcommand is kept)."""
    unset = argparse.SUPPRESS if after_command else None
    p.add_argument(
        "--debug",
        action="store_true",
        default=unset if after_command else False,
        help="on an error, raise it with its full traceback instead of printing one line "
        "(warnings keep their source line too)",
    )
    p.add_argument(
        "--max-image-pixels",
        type=non_negative_int,
        default=unset,
        metavar="N",
        help="open images of up to N pixels, 0: any size (aerial, microscopy); by default "
        "Pillow's guard against decompression bombs refuses images over twice its limit of "
        "about 89 million pixels",
    )


def add_model_options(p: argparse.ArgumentParser, *, preset_help: str, weights: bool) -> None:
    """--preset, --config and --weights: which model (train, anchors, show)."""
    from ..modeling.presets import PRESETS

    p.add_argument(
        "--preset",
        default=None,
        choices=sorted(PRESETS),
        help=f"{preset_help} (default: {DEFAULT_PRESET})",
    )
    p.add_argument(
        "--config",
        default=None,
        help="a model config YAML/JSON (e.g. with fitted anchors) instead of --preset; "
        "train also reads the train: part of what --print-config prints (the options given "
        "take precedence)",
    )
    p.add_argument(
        "--weights",
        default=None,
        help="backbone weights: a local torchvision-format file (ResNet/VGG), or 'imagenet' "
        "for the packaged EfficientNet-Lite0 weights"
        if weights
        else argparse.SUPPRESS,
    )


def model_config(args: argparse.Namespace, *, also_read: tuple = ()):
    """The ModelConfig that --preset, --config and --weights name (``also_read``: the other
    parts of a --config file the command reads, e.g. train's train:)."""
    from ..config import load_config
    from ..modeling.presets import ModelConfig, preset_config, with_backbone_weights

    # a bad file is one error naming the file and the field (config_from_dict's ``where``)
    config = None  # a model config, or the model: part of what train --print-config prints
    if args.config:
        config = load_config(ModelConfig, args.config, section="model", also_read=also_read)
    if config is None:  # no --config, or one without a model: part (train's train: alone)
        config = preset_config(args.preset or DEFAULT_PRESET)
    return with_backbone_weights(config, args.weights) if args.weights is not None else config


FORMATS = ["coco", "voc", "yolo", "csv"]


def add_data_options(
    p: argparse.ArgumentParser, *, split: str, locate: bool = False, checkpoint: bool = False
) -> None:
    """Which dataset split, in which format, how strictly, at what size; device, progress.
    ``split``: the COCO or YOLO split the command reads when --split is not given (its
    default stays None, so that a VOC or CSV dataset is read whole unless a split is asked);
    ``locate``: also --images and --class-map (commands that read their data through
    ``read_data`` or a ``DataConfig``); ``checkpoint``: the size defaults to the one the
    checkpoint was trained at (``load``)."""
    p.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="dataset format (detected from the path when not given)",
    )
    p.add_argument(
        "--split",
        default=None,
        help="COCO: the JSON in annotations/: instances_<split>.json, else <split>.json, else "
        "the one whose name contains the split (captions, keypoints files aside); YOLO: the "
        "data.yaml key; VOC: ImageSets/Main/<split>.txt (CSV: none) "
        f"(default: {split} for COCO and YOLO, a VOC or CSV dataset whole)",
    )
    p.add_argument(
        "--split-file",
        default=None,
        help="a text file of image ids (file names without suffix; for COCO also the JSON's "
        "integer image ids, e.g. 139) or a CSV with a 'filename' column selecting the images, "
        "of any format (e.g. raccoon's train_labels.csv)",
    )
    p.set_defaults(default_split=split)  # read_data's, for COCO and YOLO
    if locate:
        add_locate_options(p)
    p.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first bad sample instead of skipping it with a warning",
    )

    def trained(default: int) -> str:
        return f" (default: the checkpoint's training size, else {default})" if checkpoint else ""

    p.add_argument(
        "--short-side",
        type=positive_int,
        default=None if checkpoint else DEFAULT_SHORT_SIDE,
        help="resize: shorter side in pixels" + trained(DEFAULT_SHORT_SIDE),
    )
    p.add_argument(
        "--max-size",
        type=image_side,
        default=None if checkpoint else DEFAULT_MAX_SIZE,
        help=f"resize: cap on the longer side (at least {MIN_MAX_SIZE})"
        + trained(DEFAULT_MAX_SIZE),
    )
    add_run_options(p)


def add_locate_options(p: argparse.ArgumentParser) -> None:
    """--images and --class-map: where a dataset's images are, a CSV dataset's classes."""
    p.add_argument(
        "--images",
        default=None,
        metavar="DIR",
        help="the image folder of a COCO, VOC or CSV dataset when it is not the usual place "
        "(VOC: by default beside the XML files, or images/ or JPEGImages/; CSV: paths are "
        "relative to the CSV's folder)",
    )
    p.add_argument(
        "--class-map",
        default=None,
        metavar="CSV",
        help="CSV datasets: a class_name,id file fixing the class names and their order "
        "(default: a folder's one class-map CSV, else the names seen, sorted)",
    )


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N'")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def data_options(args: argparse.Namespace) -> dict:
    """The data options as keyword arguments of the runtime and of ``read_dataset``-like calls:
    --split, --format, --split-file, --strict, and --images and --class-map where the command
    has them."""
    return {
        "split": args.split,
        "format": args.format,
        "split_file": args.split_file,
        "strict": args.strict,
        "images": getattr(args, "images", None),
        "class_map": getattr(args, "class_map", None),
    }


def read_data(args: argparse.Namespace, class_names=None):
    """The dataset --data names, with the ``data_options`` (its classes mapped by name to
    ``class_names``, a checkpoint's) and the command's split by default; its summary line is
    printed."""
    from ..data import read_dataset

    index = read_dataset(
        args.data,
        class_names=class_names,
        default_split=args.default_split,
        **data_options(args),
    )
    print(index.summary())
    return index


def add_model_run_options(p: argparse.ArgumentParser) -> None:
    """The options of a command that runs a model for inference (propose, detect, eval):
    --amp, --compile, --channels-last, --decode and --workers (train has its own)."""
    p.add_argument(
        "--amp",
        choices=["none", "bf16", "fp16"],
        default="none",
        help="run the network under bf16/fp16 autocast (boxes are still decoded and selected "
        "in float32); bf16 took 1.4x less time than float32 for R50-FPN at batch 8 on an "
        "H200 (docs/performance.md) and more on most CPUs; fp16 needs a GPU",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the network first (no graph break in rpnkit's forward); the first "
        "batch of each image size compiles, which pays off on long runs over many images",
    )
    p.add_argument(
        "--channels-last",
        action="store_true",
        help="run the convolutions in NHWC on a GPU too (the CPU always does): faster batches, "
        "but cuDNN spends seconds on each new batch size (docs/performance.md)",
    )
    add_decode_option(p)
    p.add_argument(
        "--workers",
        type=non_negative_int,
        default=None,
        help="processes that read the images ahead of the model (and decode and resize those "
        "the GPU does not); default 4 on a GPU, 0 on the CPU, where the model needs the cores",
    )


def add_decode_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--decode",
        choices=["auto", "device", "workers"],
        default="auto",
        help="where JPEG files are decoded, resized and padded: 'device' (nvJPEG on a GPU, a "
        "batch at a time; the workers only read the files; other images the workers decode and "
        "the device resizes), 'workers', or 'auto': on the device on a GPU, else by the workers",
    )


DECODE = {"auto": None, "device": True, "workers": False}  # --decode: decode_on_device


def decode_on_device(args: argparse.Namespace) -> bool | None:
    """--decode as the library's ``decode_on_device`` (None: by device)."""
    return DECODE[args.decode]


def inference_input(args: argparse.Namespace) -> str | list[str]:
    """propose's and detect's input: one image, folder or dataset, or several image files
    (as a shell glob gives them), which must all be image files."""
    from ..data.records import IMAGE_SUFFIXES

    if len(args.input) == 1:
        return args.input[0]
    for given in map(Path, args.input):
        if given.is_dir() or given.suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(
                f"{given}: of several inputs each is an image file; a folder or a dataset is "
                "given alone"
            )
    return list(args.input)


def check_results_out(args: argparse.Namespace, also: str = "") -> None:
    """--out names a .json file: the results are COCO results JSON (``also``: where other
    formats are written)."""
    if Path(args.out).suffix.lower() != ".json":
        raise ValueError(
            f"--out {args.out}: the results are written as COCO results JSON: name it .json" + also
        )


def add_inference_options(
    p: argparse.ArgumentParser, *, checkpoint_help: str, out_default: str
) -> None:
    """The options propose and detect share."""
    p.add_argument(
        "input",
        nargs="+",
        help="an image, a folder of images, or a dataset; or several image files (a glob)",
    )
    p.add_argument("--checkpoint", required=True, help=checkpoint_help)
    p.add_argument("--out", default=out_default, help="results JSON to write (.json)")
    p.add_argument(
        "--overlays",
        default=None,
        help="folder for PNG overlays (optional): one per image, named after it with its "
        "extension (a.jpg -> a.jpg.png), in its shape, at most 1600 px on its longest side",
    )
    p.add_argument(
        "--max-overlays", type=non_negative_int, default=50, help="at most this many overlays"
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=4,
        help="images (with --tile-size: tiles) per forward pass",
    )
    add_model_run_options(p)
    p.add_argument(
        "--aspect-groups",
        action="store_true",
        help="batch wide and tall images apart (less padding: 1.2-1.3x on a CPU for a folder "
        "of mixed photos); results keep the input order, and differ slightly with the padding",
    )
    add_slicing_options(p)
    add_data_options(p, split="val", locate=True, checkpoint=True)


def load_runtime(args: argparse.Namespace):
    """The --checkpoint ready for inference on --device, at --amp, --short-side, --max-size."""
    from ..engine.runtime import load

    return load(
        args.checkpoint,
        args.device,
        amp=args.amp,
        short_side=args.short_side,
        max_size=args.max_size,
        compile=args.compile,
        channels_last=args.channels_last or None,
        decode_on_device=decode_on_device(args),
        group_by_aspect=getattr(args, "aspect_groups", False),
        num_workers=args.workers,
    )


# --- large images: tiles in training, slices at inference (docs/cli.md, "Large images") -------


def add_tile_training_options(p: argparse.ArgumentParser) -> None:
    """--tile-size and --tile-min-visible of ``rpnkit train``."""
    p.add_argument(
        "--tile-size",
        type=image_side,
        default=None,
        metavar="PX",
        help="large images with small objects: train on random PX x PX tiles at native "
        "resolution of the images larger than that, instead of resizing them (boxes clipped "
        "to the tile; default: no tiles)",
    )
    p.add_argument(
        "--tile-min-visible",
        type=fraction,
        default=0.5,
        metavar="F",
        help="with --tile-size: keep a box cut by the tile's border when at least this "
        "fraction of its area is inside (and both sides are at least 2 px); drop it otherwise",
    )


def add_slicing_options(p: argparse.ArgumentParser) -> None:
    """--tile-size, --tile-overlap and --full-view of propose, detect and eval."""
    p.add_argument(
        "--tile-size",
        type=image_side,
        default=None,
        metavar="PX",
        help="sliced inference for large images with small objects: images larger than PX on "
        "either side run as overlapping PX x PX tiles at native resolution, batched, their "
        "boxes merged in original pixels with cross-tile NMS (default: whole images, resized)",
    )
    p.add_argument(
        "--tile-overlap",
        type=non_negative_int,
        default=DEFAULT_TILE_OVERLAP,
        metavar="PX",
        help="with --tile-size: tiles overlap by this many pixels; an object up to this size "
        "is seen whole by some tile (must be below --tile-size)",
    )
    p.add_argument(
        "--full-view",
        action="store_true",
        help="with --tile-size: also run the whole image resized (--short-side, --max-size) "
        "and keep its boxes larger than --tile-overlap, for objects no tile holds whole",
    )


def check_has_effect(args: argparse.Namespace, needs: dict[str, str]) -> None:
    """A ValueError for an option named on the command line (``args.given``) that does
    nothing without another one, unset: ``needs`` maps the option's dest to the other's."""
    for dest, needed in needs.items():
        if dest in getattr(args, "given", ()) and getattr(args, needed) is None:
            option, other = (f"--{name.replace('_', '-')}" for name in (dest, needed))
            raise ValueError(f"{option} does nothing without {other}")


def warn_unused(args: argparse.Namespace, dests, why: str) -> None:
    """A warning naming the options among ``dests`` that the command line names and that do
    nothing in this use (``why``): the run goes on (a script may pass them to each use)."""
    named = [f"--{d.replace('_', '-')}" for d in dests if d in getattr(args, "given", ())]
    if named:
        warnings.warn(f"{', '.join(named)}: {why}", stacklevel=2)


def overlay_options(args: argparse.Namespace) -> dict:
    """--overlays, --max-overlays (and propose's --overlay-top) as export_results' keyword
    arguments, checked before any inference: a file given as the folder or in the place of
    one of its parents, or the others without --overlays, are one line."""
    from ..engine.paths import check_folder

    chosen = {"overlays": args.overlays, "max_overlays": args.max_overlays}
    if hasattr(args, "overlay_top"):
        chosen["overlay_top"] = args.overlay_top
    check_has_effect(args, {name: "overlays" for name in chosen if name != "overlays"})
    if args.overlays is not None:  # a file there, or above it: one line
        check_folder(args.overlays, name=f"--overlays {args.overlays}")
    return chosen


def slicing_options(args: argparse.Namespace) -> dict:
    """--tile-size, --tile-overlap and --full-view as the runtime's keyword arguments."""
    check_has_effect(args, {"tile_overlap": "tile_size"})
    if args.tile_size is None:  # --full-view alone: the runtime says it needs --tile-size
        return {"full_view": True} if args.full_view else {}
    return {
        "tile_size": args.tile_size,
        "tile_overlap": args.tile_overlap,
        "full_view": args.full_view,
    }


def add_detection_limit(p: argparse.ArgumentParser) -> None:
    """--max-detections of detect and eval."""
    p.add_argument(
        "--max-detections",
        type=positive_int,
        default=None,
        metavar="N",
        help="Faster R-CNN: detections kept per image (default: the model's, 100; more "
        "raises its limits, proposals included: a dense image needs more); with "
        "--tile-size each tile keeps the model's and the image every one they keep unless N",
    )


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
