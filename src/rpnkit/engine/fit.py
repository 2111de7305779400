"""``rpnkit.fit``: a whole training run from typed configs, as ``rpnkit train`` runs it.

It reads the data, seeds, builds the model (an RPN, or a Faster R-CNN whose second stage fits
the dataset's classes), trains it (jointly, or in the paper's four alternating steps), and
writes the run folder: ``checkpoint.safetensors``, ``train_log.csv``, TensorBoard events, the
run record ``config.yaml``, with validation data ``metrics.json``, and with
``DataConfig.val_fraction`` the held-out images, ``split.json`` (``data.splits``). Under
torchrun every process trains and rank 0 alone writes, evaluates and reports.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from ..config import DEFAULT_PRESET, check_number, config_from_dict
from ..data import DataConfig, DatasetIndex, DetectionDataset
from ..data.records import DataNote, SkippedSample
from ..data.splits import SPLIT_FILE, Split, apply_split, make_split, read_split
from ..evaluation.detection import format_metric
from ..modeling.presets import (
    OLN_RCNN_PRESETS,
    DetectorConfig,
    ModelConfig,
    detector_config,
    preset_config,
)
from .alternating import combined_summary, train_alternating
from .checkpoint import (
    DETECTOR,
    RPN,
    Kind,
    ModelSpec,
    check_run_state,
    read_spec,
    resumed_in_place,
)
from .device import check_amp, decodes_on_device, resolve_device
from .distributed import main_process, world_size
from .evaluate import evaluate_detections, evaluate_proposals
from .resume import (
    check_own_run,
    check_resumed_settings,
    data_counts,
    note_changed_data,
    resumed_budget,
    run_settings,
    saved_settings,
)
from .run_folder import clear_for_new_run, run_folder
from .run_record import RunRecord
from .trainer import Evaluate, TrainConfig, Trainer, TrainSummary, seed_everything

Schedule = Literal["joint", "alternating"]


@dataclass
class FitResult:
    """A finished run: its folder, final checkpoint, model spec, training summary and the
    final validation metrics (None without validation data, or on ranks other than 0)."""

    out_dir: Path
    checkpoint: Path
    spec: ModelSpec
    summary: TrainSummary
    metrics: dict | None
    is_main: bool = True

    def describe(self) -> str:
        """What the run did, in a few lines (``rpnkit train`` prints them): steps, time and
        rate, the checkpoint, validation figures and the best, images skipped."""
        s = self.summary
        done = f"{s.steps} steps" if not s.resumed_at else f"steps {s.resumed_at}-{s.steps}"
        lines = [
            f"trained {done} in {s.seconds:.0f} s ({s.images_per_s:.1f} images/s); "
            f"checkpoint {self.checkpoint}"
        ]
        if s.skipped_images:
            lines.append(f"{s.skipped_images} image(s) could not be read and were left out")
        m = self.metrics
        said = f"validation at step {s.steps} (logged)" if s.evaluation_read_back else "validation"
        if self.spec.is_detector:
            shown = [("AP", "AP"), ("AP50", "AP50"), ("VOC07 mAP50", "VOC07_mAP50")]
        else:
            shown = [("AR@100", "AR@100"), ("AR@1000", "AR@1000")]
        if m is not None:  # n/a: no GT to count (pycocotools' -1)
            lines.append(f"{said}: " + ", ".join(f"{n} {format_metric(m[k])}" for n, k in shown))
        best = s.best
        if best is not None and best["step"] < s.steps:  # an earlier evaluation was better
            lines.append(
                f"best validation: {best['metric']} {format_metric(best['value'])} at step "
                f"{best['step']}, "
                f"kept in {best['file']}"
            )
        return "\n".join(lines)


def model_kind(kind: Kind | None, model: ModelConfig | DetectorConfig | str) -> Kind:
    """The kind of model to train on preset or config ``model``: ``kind``, or when it is None
    the preset's own, a Faster R-CNN for OLN's full-model presets (``OLN_RCNN_PRESETS``) and
    for a ``DetectorConfig``, an RPN for the others. An RPN of a full-model preset is refused:
    its RPN keeps every proposal (no NMS) for the box head that scores them, and is no
    proposal model alone."""
    config = preset_config(model) if isinstance(model, str) else model
    if kind not in (None, RPN, DETECTOR):
        raise ValueError(f"model kind must be {RPN!r} or {DETECTOR!r}, got {kind!r}")
    if isinstance(config, DetectorConfig):
        if kind == RPN:
            raise ValueError(
                "a DetectorConfig describes a Faster R-CNN: give its .model for an RPN"
            )
        return DETECTOR
    own = DETECTOR if config.preset in OLN_RCNN_PRESETS else RPN
    if kind is None:
        return own
    if kind == RPN and own == DETECTOR:
        raise ValueError(
            f"preset {config.preset!r} is OLN's full detector, not an RPN: train it with "
            f"--model faster-rcnn (kind=, its default); for OLN's RPN alone use --preset "
            f"effnet-lite0-fpn-oln, or another preset with --objectness localization"
        )
    return kind


def model_spec(
    kind: Kind | None, model: ModelConfig | DetectorConfig | str, class_names
) -> ModelSpec:
    """The spec of the model ``fit`` trains: a preset (by name) or a config, as an RPN or as a
    Faster R-CNN with one output per class (``kind`` None: the preset's own, ``model_kind``);
    a ``DetectorConfig``'s second stage as it is, its classes the data's."""
    config = preset_config(model) if isinstance(model, str) else model
    kind = model_kind(kind, config)
    names = tuple(class_names)
    if isinstance(config, DetectorConfig):
        roi = config.roi  # a class-agnostic head keeps its two outputs
        roi = roi if roi.class_agnostic else dataclasses.replace(roi, num_classes=len(names) + 1)
        return ModelSpec(DETECTOR, dataclasses.replace(config, roi=roi), names)
    if kind == DETECTOR:
        return ModelSpec(DETECTOR, detector_config(config, len(names)), names)
    return ModelSpec(RPN, config, names)


def make_evaluator(
    spec: ModelSpec,
    dataset: DetectionDataset | None,
    *,
    batch_size: int,
    device: torch.device,
    decode_on_device: bool | None = None,
) -> Evaluate | None:
    """The validation measure of a model of this spec: mAP for a detector, recall for an RPN;
    JPEGs decoded as ``rpnkit eval`` decodes them (``device.decodes_on_device``)."""
    if dataset is None:
        return None
    dataset.decode_on_device = decodes_on_device(decode_on_device, device)
    if spec.is_detector:
        return lambda m: (
            evaluate_detections(
                m, dataset, spec.class_names, batch_size=batch_size, device=device, progress=False
            ).metrics
        )
    return lambda m: (
        evaluate_proposals(m, dataset, batch_size=batch_size, device=device, progress=False).metrics
    )


def _configs(data, train, model, kind, resume) -> tuple:
    """``fit``'s arguments as (DataConfig, TrainConfig, ModelConfig, kind): ``data`` a path, or
    a ``DataConfig`` or a mapping of its fields; ``train`` None (resuming, the checkpoint's
    settings; else the defaults), a ``TrainConfig`` or a mapping of its fields; ``model`` a
    preset's name, a ``ModelConfig`` or a ``DetectorConfig`` (a Faster R-CNN's second stage
    too), or None: the resumed checkpoint's model (and kind, unless given), else the default
    preset.
    Anything else is a TypeError naming it."""
    if isinstance(data, (str, Path)):
        data = DataConfig(str(data))
    elif isinstance(data, Mapping):
        data = config_from_dict(DataConfig, dict(data), where="fit(data=...)")
    if train is None and resume is not None:  # a resumed run's own settings
        train = (saved_settings(resume) or {}).get("train")
    if train is None:
        train = TrainConfig()
    elif isinstance(train, Mapping):
        train = config_from_dict(TrainConfig, dict(train), where="fit(train=...)")
    if model is None:
        spec = read_spec(resume) if resume is not None else None
        model = spec.config if spec is not None else DEFAULT_PRESET
        if spec is not None and kind not in (None, spec.kind):
            raise ValueError(
                f"{resume}: {'an' if spec.kind == RPN else 'a'} {spec.kind} checkpoint resumes "
                f"as one (--model {spec.kind}, "
                f"kind={spec.kind!r}), not as {kind!r}"
            )
        kind = kind if kind is not None or spec is None else spec.kind
    model = preset_config(model) if isinstance(model, str) else model
    wanted = {
        "data": (data, DataConfig, "a dataset's path, a DataConfig or a mapping of its fields"),
        "train": (train, TrainConfig, "None, a TrainConfig or a mapping of its fields"),
        "model": (model, (ModelConfig, DetectorConfig), "None, a preset's name, a ModelConfig "
                  "or a DetectorConfig"),
    }  # fmt: skip
    for name, (value, cls, rule) in wanted.items():
        if not isinstance(value, cls):
            raise TypeError(f"fit(): {name} must be {rule}, got {type(value).__name__}")
    if resume is not None:
        check_run_state(resume)
        check_resumed_settings(resume, run_settings(data, train))
    return data, train, model, model_kind(kind, model)  # a mismatch fails before any reading


def fit(
    data: DataConfig | str,
    *,
    kind: Kind | None = None,
    model: ModelConfig | DetectorConfig | str | None = None,
    schedule: Schedule = "joint",
    train: TrainConfig | None = None,
    out: str | Path | None = None,
    device: torch.device | str = "auto",
    resume: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    time_budget_s: float | None = None,
    proposals_step1: str | Path | None = None,
    proposals_step3: str | Path | None = None,
) -> FitResult:
    """Train a ``kind`` model (``"rpn"`` or ``"faster-rcnn"``; None: the preset's own, see
    ``model_kind``) of preset or config ``model`` on ``data`` (a dataset path, or a
    ``DataConfig`` with validation data, sizes and a class subset) into the run folder ``out``
    (``run_folder``: None picks ``runs/train`` or the next free; one that holds a run needs
    ``overwrite``). ``resume`` continues a joint run exactly, in its checkpoint's folder, with
    its time budget unless ``time_budget_s`` gives another (0: none). ``proposals_step1`` /
    ``_step3``: COCO results files, the alternating schedule's."""
    data, train, model, kind = _configs(data, train, model, kind, resume)
    given = _given_proposals(kind, schedule, resume, proposals_step1, proposals_step3)
    time_budget_s = _checked_options(data, train, resumed_budget(resume, time_budget_s), schedule)
    device, out, fresh = _device_and_folder(device, train.amp, out, resume, overwrite)
    with _reported_by_rank_0():  # every process reads the same files
        index, val_set, split = _read(data, train.seed, resume)
    if fresh:  # the data read: now clear what an earlier run wrote there
        clear_for_new_run(out, overwrite=overwrite, keep=given.values(), remove=main_process())
    if split is not None and main_process():
        print(f"wrote {split.save(out)}")
    seed_everything(train.seed)  # the initial weights too: the same seed, the same run
    spec = model_spec(kind, model, index.class_names)
    split_file = SPLIT_FILE if split is not None else None
    record = RunRecord(spec, train, data, schedule, split=split_file, proposals=given or None)
    if world_size() == 1:  # at the start too (an interrupted
        out.mkdir(parents=True, exist_ok=True)  # run says what it was), but not under torchrun:
        record.save(out)  # the other processes check the folder while rank 0 may write
    evaluate = make_evaluator(spec, val_set, batch_size=train.batch_size, device=device,
                              decode_on_device=train.decode_on_device)  # fmt: skip
    if schedule == "alternating":  # the four steps build their own models
        network, steps = train_alternating(
            spec.config,
            index,
            data,
            train,
            out_dir=out,
            device=device,
            progress=progress,
            evaluate=evaluate,
            proposals_step1=given.get("step1"),
            proposals_step3=given.get("step3"),
        )
        summary = combined_summary(steps)
    else:
        network = spec.build()
        summary = Trainer(
            network,
            data.train_dataset(index, seed=train.seed),
            train,
            out_dir=out,
            spec=spec,
            device=device,
            progress=progress,
            time_budget_s=time_budget_s,
            resume=resume,
            evaluate=evaluate,
            input_size=(data.short_side, data.max_size),
            settings={**run_settings(data, train), "read": data_counts(index)},
        ).run()
    checkpoint = out / "checkpoint.safetensors"
    if not main_process():  # under torchrun, rank 0 reports and evaluates
        return FitResult(out, checkpoint, spec, summary, None, is_main=False)
    record.save(out)
    metrics = (summary.evaluation or None) if evaluate is not None else None  # the last step's
    if metrics is not None and not summary.evaluation_read_back:  # (else written before)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return FitResult(out, checkpoint, spec, summary, metrics)


def _device_and_folder(device, amp: str, out, resume, overwrite: bool) -> tuple:
    """The device (checked, with the precision), the run folder (``run_folder``) and whether
    the run starts afresh there (not resumed, or resumed into another folder): then a folder
    that holds a run is refused unless ``overwrite``. Before any data is read."""
    device = resolve_device(device)
    check_amp(amp, device)
    out = run_folder(out, resume)
    fresh = not resumed_in_place(resume, out)
    if fresh:
        clear_for_new_run(out, overwrite=overwrite, remove=False)  # a check: nothing removed
    else:
        check_own_run(resume, out)
    return device, out, fresh


def _given_proposals(kind: Kind, schedule: Schedule, resume, step1, step3) -> dict[str, str]:
    """The proposals files given to the alternating schedule, by step, the schedule checked."""
    given = {"step1": step1, "step3": step3}
    given = {step: str(path) for step, path in given.items() if path is not None}
    _check_schedule(kind, schedule, resume, given)
    return given


def _checked_options(data: DataConfig, train: TrainConfig, seconds, schedule: Schedule):
    """The time budget ``seconds``, once the run's options that cannot work together, or do
    nothing as given, are refused."""
    if train.eval_every and data.val_data is None and not data.val_fraction:
        raise ValueError(
            "evaluating every N steps (--eval-every, TrainConfig.eval_every) needs validation "
            "data (--val-data or --val-fraction, DataConfig.val_data or val_fraction)"
        )
    check_number("time_budget_s", seconds, low=0, low_open=True, optional=True)
    if seconds is not None and schedule == "alternating":
        raise ValueError(
            "a time budget (--time-budget, time_budget_s=) is for --schedule joint only"
        )
    if seconds is not None and world_size() > 1:  # each process would stop by its own clock
        raise ValueError("a time budget (--time-budget, time_budget_s=) is for one process only")
    return seconds


def _check_schedule(kind: Kind, schedule: Schedule, resume, given: dict) -> None:
    if schedule not in ("joint", "alternating"):
        raise ValueError(f"schedule must be 'joint' or 'alternating', got {schedule!r}")
    if schedule == "alternating" and kind != DETECTOR:
        raise ValueError("--schedule alternating needs --model faster-rcnn (kind=)")
    if schedule == "alternating" and resume is not None:
        raise ValueError("--resume (resume=) continues joint training only")
    if given and schedule != "alternating":
        options = " and ".join(f"--proposals-{step}" for step in given)
        raise ValueError(f"{options}: given proposals are for --schedule alternating only")


def _read(
    data: DataConfig, seed: int, resume
) -> tuple[DatasetIndex, DetectionDataset | None, Split | None]:
    """The training index, the validation dataset (or None) and the split that held it out of
    the training data (None with ``val_data`` or without validation), each summarised; a
    resumed run's data compared with its checkpoint's (``resume.note_changed_data``)."""
    index = data.read_train()
    print(index.summary())
    if data.classes is not None:
        boxes = data_counts(index)["boxes"]
        print(
            f"training on the boxes of {len(data.classes)} classes only ({boxes} box(es)); "
            "the other objects are unlabelled"
        )
    if data.val_fraction:  # no val_data: DataConfig checks that
        split = _resumed_split(resume, data.val_fraction, seed) or make_split(
            index, data.val_fraction, seed
        )
        index, val_index = apply_split(index, split)
        print(split.describe())
        note_changed_data(resume, index)
        return index, data.eval_dataset(val_index), split
    note_changed_data(resume, index)
    val_index = data.read_val(class_names=index.class_names or None)
    if val_index is None:
        return index, None, None
    print(val_index.summary())
    return index, data.eval_dataset(val_index), None


def _resumed_split(resume, fraction: float, seed: int) -> Split | None:
    """The split a resumed run made (its folder's split.json, of the same fraction and
    seed), kept as it is: made anew, a later version's naming or an image added since could
    move held-out images into training. Images it does not name train."""
    path = Path(resume).parent / SPLIT_FILE if resume is not None else None
    if path is None or not path.is_file():
        return None
    saved = read_split(path)
    return saved if (saved.fraction, saved.seed) == (fraction, seed) else None


@contextlib.contextmanager
def _reported_by_rank_0() -> Iterator[None]:
    """Under torchrun, the other processes print nothing and warn of no skipped sample (nor
    ``DataNote``) while in the block (rank 0 reports what they all see); errors still stop
    every process."""
    if main_process():
        yield
        return
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore", SkippedSample)
        warnings.simplefilter("ignore", DataNote)
        yield
