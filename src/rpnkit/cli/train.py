"""``rpnkit train``."""

from __future__ import annotations

import argparse

from .options import (
    DECODE,
    HELP,
    add_data_options,
    add_decode_option,
    add_model_options,
    add_tile_training_options,
    held_out_fraction,
    model_config,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
    seed,
)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train an RPN on a COCO, VOC, YOLO or CSV dataset",
        description=(
            "Train a preset's RPN on a dataset given by path (format detected, or --format). "
            "Writes checkpoint.safetensors (weights, config, optimizer, scheduler and RNG "
            "state), train_log.csv, TensorBoard events and config.yaml to --out. Under "
            "'torchrun --nproc_per_node N' it trains with DistributedDataParallel."
        ),
        formatter_class=HELP,
    )
    p.add_argument(
        "--data", help="training dataset: COCO JSON, VOC folder, YOLO data.yaml or CSV of boxes"
    )
    p.add_argument(
        "--classes",
        default=None,
        metavar="NAMES",
        help="train on the boxes of these classes only, every other object unlabelled "
        "(OLN's novel-class protocol, then rpnkit eval --seen-classes): comma-separated names "
        "in the dataset's naming, or 'voc' for the 20 PASCAL VOC classes in COCO's names; the "
        "model's classes are these, validation keeps the same ones, config.yaml records them",
    )
    _add_validation_options(p)
    p.add_argument(
        "--model",
        choices=["rpn", "faster-rcnn"],
        default=None,
        help="an RPN alone, or the Faster R-CNN detector built on it (default: the preset's "
        "kind, faster-rcnn for OLN's full model, *-oln-rcnn, rpn for the others; --model rpn "
        "with an *-oln-rcnn preset is an error)",
    )
    p.add_argument(
        "--schedule",
        choices=["joint", "alternating"],
        default="joint",
        help="faster-rcnn: 'joint', approximate joint training (the four losses summed); "
        "'alternating', the paper's 4 steps (RPN; detector on its proposals; RPN on the "
        "frozen shared backbone; detector head), each of --steps steps, with the proposals "
        "of steps 1 and 3 written as COCO results JSON in --out",
    )
    for step in (1, 3):
        p.add_argument(
            f"--proposals-step{step}",
            default=None,
            metavar="FILE",
            help=f"--schedule alternating: use this COCO results JSON (from rpnkit propose, "
            f"detectron2 or anything else; matched by file_name, else image_id) as the "
            f"step-{step} proposals instead of computing them",
        )
    add_model_options(p, preset_help="model preset (resumed: the checkpoint's)", weights=True)
    p.add_argument(
        "--out",
        default=None,
        help="the run folder (default: runs/train, or the next free runs/trainN; with --resume "
        "the checkpoint's folder)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in --out (its checkpoint, log, metrics, split...) if it holds one",
    )
    _add_schedule_options(p)
    _add_speed_options(p)
    p.add_argument(
        "--resume",
        default=None,
        help="continue exactly from this checkpoint: its data, model and settings, but for "
        "the options named (--steps may grow; the others a resumed run may change, "
        "docs/cli.md)",
    )
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the model (a Faster R-CNN's second stage too) and training config; exit",
    )
    add_data_options(p, split="train", locate=True)
    add_tile_training_options(p)
    p.set_defaults(func=run)


def _add_validation_options(p: argparse.ArgumentParser) -> None:
    held_out = p.add_mutually_exclusive_group()
    held_out.add_argument("--val-data", default=None, help="validation dataset (same forms)")
    held_out.add_argument(
        "--val-fraction",
        type=held_out_fraction,
        default=None,
        metavar="F",
        help="without --val-data: hold out this fraction of --data for validation, the "
        "images whose sha256 of '<seed>:<name>' is lowest (name: the file name, or where "
        "images share it the shortest end of the path only one has; the same on every run "
        "and machine for a --seed); the held-out images' names are written to "
        "--out/split.json, for rpnkit eval --split-from (a resumed run keeps it)",
    )
    p.add_argument(
        "--val-split",
        default=None,
        help="split of --val-data, as --split (default: val for COCO and YOLO, a VOC or CSV "
        "dataset whole)",
    )
    p.add_argument(
        "--val-split-file", default=None, help="split file of --val-data (as --split-file)"
    )
    p.add_argument("--val-images", default=None, metavar="DIR", help="--images of --val-data")


def _add_schedule_options(p: argparse.ArgumentParser) -> None:
    from ..data import DataConfig
    from ..engine.trainer import TrainConfig

    # the library's defaults, one source: `rpnkit train` and `rpnkit.fit` train alike
    train, data = TrainConfig(), DataConfig(data="-")
    p.add_argument("--steps", type=positive_int, default=train.steps, help="training steps")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=train.batch_size,
        help="images per step and process",
    )
    p.add_argument(
        "--optimizer", choices=["sgd", "adamw"], default=train.optimizer, help="optimizer"
    )
    p.add_argument("--lr", type=positive_float, default=train.lr, help="base learning rate")
    p.add_argument(
        "--weight-decay", type=non_negative_float, default=train.weight_decay, help="weight decay"
    )
    p.add_argument(
        "--warmup", type=non_negative_int, default=train.warmup_steps, help="linear warm-up steps"
    )
    p.add_argument(
        "--lr-schedule",
        choices=["cosine", "step", "constant"],
        default=train.schedule,
        help="learning-rate schedule after warm-up",
    )
    p.add_argument(
        "--grad-clip",
        type=positive_float,
        default=None,
        help="clip the gradient norm to at most this (None: no clipping)",
    )
    p.add_argument(
        "--amp", choices=["none", "bf16", "fp16"], default=train.amp, help="mixed precision"
    )
    p.add_argument(
        "--flip", type=probability, default=data.flip, help="horizontal flip probability"
    )
    p.add_argument(
        "--seed",
        type=seed,
        default=train.seed,
        help="seed: runs are reproducible (and --val-fraction's split depends on it)",
    )
    p.add_argument(
        "--time-budget",
        type=non_negative_float,
        default=None,
        metavar="SECONDS",
        help="joint training: stop after this many seconds even if steps remain, the "
        "learning-rate schedule paced to end with the budget (a resumed run keeps its "
        "budget unless given, counting the seconds its checkpoint recorded; 0 drops it)",
    )
    p.add_argument(
        "--log-every", type=positive_int, default=train.log_every, help="log every N steps"
    )
    p.add_argument(
        "--eval-every",
        type=non_negative_int,
        default=train.eval_every,
        help="evaluate on --val-data every N steps (0: only at the end)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=non_negative_int,
        default=train.checkpoint_every,
        help="write the checkpoint every N steps (0: only at the end)",
    )
    p.add_argument(
        "--objectness",
        choices=["classification", "localization"],
        default=None,
        help="what the RPN's objectness learns (default: the preset's): foreground "
        "classification, or OLN's localization quality (centerness), for proposals of classes "
        "never seen in training",
    )


def _add_speed_options(p: argparse.ArgumentParser) -> None:
    """How the steps run: processes, compilation, batching, memory layout."""
    p.add_argument(
        "--workers",
        type=non_negative_int,
        default=2,  # TrainConfig's is 0: a script may lack the guard that worker processes need
        help="data loading processes (0: load in the main process)",
    )
    p.add_argument(
        "--sync-bn",
        action="store_true",
        help="synchronise batch norm across processes under torchrun",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the training step (forward and backward; no graph break in "
        "rpnkit's model); the first steps compile",
    )
    p.add_argument(
        "--no-aspect-groups",
        action="store_true",
        help="mix wide and tall images in a batch; without it each batch is of one "
        "orientation, which pads less",
    )
    p.add_argument(
        "--channels-last",
        action="store_true",
        help="run the convolutions in NHWC on a GPU too (the CPU always does): faster steps "
        "(1.4x for effnet-lite0-fpn on an H200), but about 10 s of cuDNN set-up for each new "
        "batch size (docs/performance.md)",
    )
    add_decode_option(p)


def _same(value):
    return value


# TrainConfig's fields that a train option sets: the option's destination in ``args`` and
# how its value becomes the field's
_TRAIN_OPTIONS = {
    "steps": ("steps", _same),
    "batch_size": ("batch_size", _same),
    "optimizer": ("optimizer", _same),
    "lr": ("lr", _same),
    "weight_decay": ("weight_decay", _same),
    "warmup_steps": ("warmup", _same),
    "schedule": ("lr_schedule", _same),
    "grad_clip": ("grad_clip", _same),
    "amp": ("amp", _same),
    "seed": ("seed", _same),
    "num_workers": ("workers", _same),
    "log_every": ("log_every", _same),
    "eval_every": ("eval_every", _same),
    "checkpoint_every": ("checkpoint_every", _same),
    "sync_bn": ("sync_bn", _same),
    "compile": ("compile", _same),
    "channels_last": ("channels_last", lambda on: on or None),  # off: by device
    "group_by_aspect": ("no_aspect_groups", lambda off: not off),
    "decode_on_device": ("decode", DECODE.get),
}


def train_config(args: argparse.Namespace, saved: dict | None = None):
    """The options as a TrainConfig. ``saved`` (a resumed checkpoint's settings), then a
    --config file's train: part (as --print-config prints it) give their fields, the options
    named on the command line taking precedence; the fields no option sets (momentum,
    milestones, gamma) come from them alone."""
    from ..config import load_section
    from ..engine.trainer import TrainConfig

    base = dict(saved or {})
    base.update(load_section(TrainConfig, args.config, "train") if args.config else {})
    given = getattr(args, "given", set())
    options = {
        field: convert(getattr(args, dest))
        for field, (dest, convert) in _TRAIN_OPTIONS.items()
        if field not in base or dest in given
    }
    return _built(TrainConfig, {**base, **options}, "the run's training settings")


def _built(cls, values: dict, where: str):
    """``cls(**values)``, a ValueError naming ``where`` for a field it does not have (a
    checkpoint's settings from another version of rpnkit)."""
    import dataclasses

    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown} for {cls.__name__}")
    return cls(**values)


# the DataConfig fields that describe one dataset together: one of them named, all are the
# command line's (a new --val-data does not keep the old one's split file)
_DATA_GROUPS = (
    ("data", "split", "split_file", "format", "images", "class_map"),
    ("val_data", "val_split", "val_split_file", "val_images", "val_fraction"),
)


def data_config(args: argparse.Namespace, saved: dict | None = None):
    """The options as a DataConfig (each field has the option of its name); ``saved``, a
    resumed checkpoint's or a run record's, gives the fields the command line does not name
    (by dataset: ``_DATA_GROUPS``)."""
    import dataclasses

    from ..data import DataConfig

    given = set(getattr(args, "given", set()))
    for group in _DATA_GROUPS:
        if given & set(group):
            given |= set(group)
    base = dict(saved or {})
    fields = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(DataConfig)
        if f.name not in base or f.name in given
    }
    return _built(DataConfig, {**base, **fields}, "the run's data settings")


def _check_no_model_options(args: argparse.Namespace) -> None:
    """A run's config.yaml gives the model: the options that would choose another say so."""
    named = [f"--{d}" for d in ("preset", "weights", "objectness") if getattr(args, d)]
    if named:
        raise ValueError(
            f"{args.config}: a run's record gives the model, with its kind: {', '.join(named)} "
            "would change it (give a model config or a preset to --config instead)"
        )


def _with_objectness(model, mode: str):
    """``model`` (a ModelConfig, or a DetectorConfig's first stage) with its RPN's objectness
    learnt as ``mode``."""
    import dataclasses

    from ..modeling.presets import DetectorConfig, with_objectness_mode

    if isinstance(model, DetectorConfig):
        return dataclasses.replace(model, model=with_objectness_mode(model.model, mode))
    return with_objectness_mode(model, mode)


def _with_detector_part(args: argparse.Namespace, model):
    """``model`` with the second stage that a --config file's detector: part gives (as
    --print-config prints a Faster R-CNN's), or as it is without one."""
    from ..config import load_section
    from ..modeling.presets import DetectorConfig, ModelConfig

    if args.config is None or not isinstance(model, ModelConfig):
        return model  # no file, the checkpoint's model (None), or a run record's detector
    part = load_section(DetectorConfig, args.config, "detector")
    if not part:
        return model
    if "model" in part or args.model == "rpn":
        what = (
            "it may not hold a model: (that is the top-level model: part)"
            if "model" in part
            else "--model rpn trains an RPN alone (remove the part, or --model faster-rcnn)"
        )
        raise ValueError(
            f"{args.config}: its detector: part is a Faster R-CNN's second stage (roi, "
            f"pooled_levels) on the model: part; {what}"
        )
    return DetectorConfig(model=model, **part)


def _printed_config(kind, model, train) -> str:
    """--print-config's YAML: the model: part (backbone, neck, RPN), for a Faster R-CNN its
    detector: part (the second stage), and the train: part; each goes back to --config."""
    from ..config import configs_to_yaml
    from ..engine.checkpoint import DETECTOR
    from ..engine.fit import model_kind
    from ..modeling.presets import DetectorConfig, detector_config

    if model_kind(kind, model) == DETECTOR and not isinstance(model, DetectorConfig):
        model = detector_config(model, num_classes=90)  # the head's default, COCO's 91 outputs
    if not isinstance(model, DetectorConfig):
        return configs_to_yaml(model=model, train=train)
    detector = {"roi": model.roi, "pooled_levels": model.pooled_levels}
    printed = configs_to_yaml(model=model.model, detector=detector, train=train)
    if model.roi.class_agnostic:
        return printed
    note = "# detector.roi.num_classes: the data's classes + 1 (background) when it trains"
    return f"{note}\n{printed}"


def run(args: argparse.Namespace) -> int:
    from ..config import config_to_dict
    from ..engine.checkpoint import read_spec
    from ..engine.fit import fit
    from ..engine.resume import saved_settings
    from ..engine.run_record import RunRecord

    args.given = getattr(args, "given", set())  # parse_args' (none: every value a default)
    # a resumed run's settings are its checkpoint's, but for the options named
    saved = saved_settings(args.resume) if args.resume is not None else None
    saved, model = saved or {}, None
    if args.config is not None and RunRecord.is_record(args.config):  # a run's config.yaml:
        record = RunRecord.from_file(args.config)  # that run again, but for the options named
        _check_no_model_options(args)
        saved = saved or {
            "train": config_to_dict(record.train),
            "data": config_to_dict(record.data),
        }
        model = record.model.config
        args.model = args.model or record.model.kind
        args.schedule = args.schedule if "schedule" in args.given else record.schedule
    elif args.resume is not None and args.print_config and args.preset is args.config is None:
        spec = read_spec(args.resume)  # what the resumed run trains
        model = spec.config if spec is not None else None
    model = model or model_config(args, also_read=("train", "detector"))
    train = train_config(args, saved.get("train"))
    chosen = (args.preset, args.config, args.weights, args.objectness)
    if args.resume is not None and not args.print_config and chosen == (None,) * 4:
        model = None  # the checkpoint's own (fit)
    if args.objectness is not None:
        model = _with_objectness(model, args.objectness)
    model = _with_detector_part(args, model)
    if args.print_config:
        print(_printed_config(args.model, model, train), end="")
        return 0
    if args.data is None and "data" not in saved:
        raise ValueError("--data is required (a COCO JSON, VOC, YOLO or CSV dataset)")
    result = fit(
        data_config(args, saved.get("data")),
        kind=args.model,
        model=model,
        schedule=args.schedule,
        train=train,
        out=args.out,
        device=args.device,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        time_budget_s=args.time_budget,
        proposals_step1=args.proposals_step1,
        proposals_step3=args.proposals_step3,
    )
    if result.is_main:  # under torchrun, rank 0 reports
        print(result.describe())
    return 0
