"""The paper's 4-step alternating training of Faster R-CNN (Ren et al., section 3.2):

1. train an RPN from the ImageNet-initialised backbone;
2. train a Fast R-CNN detector, from a fresh ImageNet-initialised backbone, on the step-1
   proposals;
3. train the RPN on the detector's backbone, frozen: only the RPN's own layers learn (their
   starting point is the step-1 RPN head);
4. with the backbone still frozen, train the detector's head on the step-3 proposals.

The two sets of proposals (on the training images, in original pixels) are written as COCO
results JSON, ``step1_proposals.json`` and ``step3_proposals.json``, and steps 2 and 4 read them
back from disk. Either can come from outside instead (``proposals_step1``,
``proposals_step3``: COCO results files from rpnkit, detectron2 or anything else, matched to
the training images by file name or COCO image id, as ``read_stored_proposals`` does); steps 1
and 3 still train their RPNs, whose weights the later steps use.

Each step writes its own folder (checkpoint, train_log.csv); the final detector is
``checkpoint.safetensors`` in the output folder, loadable by ``rpnkit eval`` and ``detect``.
Parts are frozen with ``Freezable.freeze``: no gradients, batch norm kept in inference mode.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data import DataConfig, DatasetIndex
from ..modeling.presets import DetectorConfig, build_detector, build_model
from .checkpoint import DETECTOR, RPN, ModelSpec, save_model
from .distributed import distributed_context
from .runtime import Predictor
from .stored_results import read_stored_proposals
from .trainer import TrainConfig, TrainSummary, train
from .writing import write_coco_results


def write_proposals(
    model: nn.Module,
    spec: ModelSpec,
    index: DatasetIndex,
    path: Path,
    *,
    short_side: int,
    max_size: int,
    batch_size: int,
    device: torch.device | str,
    progress: bool,
    decode_on_device: bool | None = None,
) -> Path:
    """The RPN's training-time proposals (its train ``post_nms_top_n``) for every image of
    ``index``, without flips, as COCO results JSON in original pixels; JPEGs decoded where
    training decodes them (``decode_on_device``, ``TrainConfig``'s)."""
    train_proposals = spec.model_config.rpn.train_proposals
    runtime = Predictor(
        model,
        spec,
        device=device,
        fold_bn=False,
        short_side=short_side,
        max_size=max_size,
        decode_on_device=decode_on_device,
    )
    results = runtime.iter_proposals(
        index,
        top=train_proposals.post_nms_top_n,
        proposal_config=train_proposals,
        batch_size=batch_size,
        progress=progress,
    )
    return write_coco_results(path, results)


def read_proposals(
    path: str | Path, index: DatasetIndex, *, what: str = "proposals given:"
) -> dict[str, np.ndarray]:
    """A COCO results file's proposals for the training images of ``index`` (image path ->
    boxes in original pixels, best first), as steps 2 and 4 read them, the user's or steps 1
    and 3's own; printed after ``what``, what it lacks or holds beyond them reported."""
    stored = read_stored_proposals(path, index)
    print(f"{what} {stored.describe()}")
    return stored.by_path(index)


def combined_summary(summaries: dict[str, TrainSummary]) -> TrainSummary:
    """The four steps as one run: steps and seconds summed, throughput weighted by time."""
    seconds = sum(s.seconds for s in summaries.values())
    steps, last = sum(s.steps for s in summaries.values()), list(summaries.values())[-1]
    return TrainSummary(
        steps=steps,
        seconds=seconds,
        images_per_s=sum(s.images_per_s * s.seconds for s in summaries.values())
        / max(seconds, 1e-9),
        evaluation=last.evaluation,
        skipped_images=sum(s.skipped_images for s in summaries.values()),
        # step 4's detector is the final one: its evaluation after its last step is the run's
        evaluated_at=steps if last.evaluated_at == last.steps else None,
        # step 4's best.safetensors, when an earlier validation of it beat its last
        best=last.best if last.best and last.best["step"] < last.steps else None,
    )


def _check_one_process() -> None:
    if distributed_context().world > 1:
        raise ValueError(
            "rpnkit train --schedule alternating runs in one process (its proposal files are "
            "written between steps); use --schedule joint under torchrun"
        )


def train_alternating(
    config: DetectorConfig,
    index: DatasetIndex,
    data: DataConfig,
    train_config: TrainConfig,
    *,
    out_dir: str | Path,
    device: torch.device | str = "cpu",
    progress: bool = True,
    evaluate: Callable[[nn.Module], dict] | None = None,
    proposals_step1: str | Path | None = None,
    proposals_step3: str | Path | None = None,
) -> tuple[nn.Module, dict[str, TrainSummary]]:
    """Run the four steps on ``index`` (sized and flipped as ``data`` says), each for
    ``train_config.steps`` steps. Returns the final detector and a summary per step.
    ``evaluate`` is passed to each detector step (2 and 4). ``proposals_step1`` /
    ``proposals_step3``: COCO results files used instead of the proposals of step 1 / 3."""
    _check_one_process()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = tuple(index.class_names)
    rpn_spec = ModelSpec(RPN, config.model, names)
    detector_spec = ModelSpec(DETECTOR, config, names)

    def run(model, name, spec, proposals=None, evaluate_step=None) -> TrainSummary:
        print(f"alternating training, {name}")
        return train(
            model,
            data.train_dataset(index, seed=train_config.seed, proposals=proposals),
            train_config,
            out_dir=out / name,
            spec=spec,
            device=device,
            progress=progress,
            evaluate=evaluate_step,
            input_size=(data.short_side, data.max_size),  # for its checkpoints to be used
        )

    def proposals_of(model, name, given) -> dict[str, np.ndarray]:
        if given is not None:
            return read_proposals(given, index)
        path = write_proposals(
            model,
            rpn_spec,
            index,
            out / name,
            short_side=data.short_side,
            max_size=data.max_size,
            batch_size=train_config.batch_size,
            device=device,
            progress=progress,
            decode_on_device=train_config.decode_on_device,
        )
        return read_proposals(path, index, what="wrote")

    summaries = {}
    # 1. The RPN, from ImageNet.
    rpn_model = build_model(config.model)
    summaries["step1_rpn"] = run(rpn_model, "step1_rpn", rpn_spec)
    step1 = proposals_of(rpn_model, "step1_proposals.json", proposals_step1)

    # 2. The detector, from a fresh ImageNet backbone, on the step-1 proposals. Its RPN is not
    #    used in this step.
    detector = build_detector(config)
    detector.freeze("first_stage.rpn")
    summaries["step2_detector"] = run(detector, "step2_detector", detector_spec, step1, evaluate)

    # 3. The RPN on the detector's frozen backbone; its own layers start from step 1's.
    detector.unfreeze("first_stage.rpn")
    detector.rpn.load_state_dict(rpn_model.rpn.state_dict())
    shared = detector.first_stage.freeze("backbone")
    summaries["step3_rpn"] = run(shared, "step3_rpn", rpn_spec)
    step3 = proposals_of(shared, "step3_proposals.json", proposals_step3)

    # 4. The detector's head on the step-3 proposals, backbone and RPN frozen.
    detector.freeze("first_stage")
    summaries["step4_detector"] = run(detector, "step4_detector", detector_spec, step3, evaluate)
    _save_final(out, detector, detector_spec, 4 * train_config.steps, data)
    return detector, summaries


def _save_final(out: Path, detector, spec: ModelSpec, steps: int, data: DataConfig) -> None:
    """``out``'s checkpoint: the four steps' detector, with the size its images were resized
    to (what ``load`` resizes to)."""
    size = (data.short_side, data.max_size)
    save_model(out / "checkpoint.safetensors", detector, spec, step=steps, input_size=size)
