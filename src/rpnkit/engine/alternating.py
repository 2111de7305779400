"""The paper's 4-step alternating training of Faster R-CNN (Ren et al., section 3.2):

1. train an RPN from the ImageNet-initialised backbone;
2. train a Fast R-CNN detector, from a fresh ImageNet-initialised backbone, on the step-1
   proposals;
3. train the RPN on the detector's backbone, frozen: only the RPN's own layers learn (their
   starting point is the step-1 RPN head);
4. with the backbone still frozen, train the detector's head on the step-3 proposals.

The two sets of proposals (on the training images, in original pixels) are written as COCO
results JSON, ``step1_proposals.json`` and ``step3_proposals.json``, and steps 2 and 4 read them
back from disk. Each step writes its own folder (checkpoint, train_log.csv); the final detector
is ``checkpoint.safetensors`` in the output folder, loadable by ``rpnkit eval`` and ``detect``.
"""

from __future__ import annotations

import dataclasses
import json
import types
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import config_to_dict
from ..data import DatasetIndex, DetectionDataset, eval_transforms, train_transforms
from ..modeling.detector import DetectorConfig, FasterRCNN
from ..modeling.presets import build_model
from ..modeling.proposal_model import ProposalModel
from .checkpoint import save_checkpoint
from .detect import detector_checkpoint_config
from .runtime import coco_results, propose, write_json
from .trainer import TrainConfig, distributed_context, train


def load_proposals(path: str | Path) -> dict[str, np.ndarray]:
    """COCO results JSON -> file name -> (K, 4) xyxy boxes in original pixels, best first."""
    path = Path(path)
    try:
        entries = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read the proposals: {err}") from err
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a list of COCO results entries")
    grouped: dict[str, list[tuple[float, list[float]]]] = defaultdict(list)
    for i, entry in enumerate(entries):
        try:
            x, y, w, h = (float(v) for v in entry["bbox"])
            grouped[str(entry["file_name"])].append((float(entry["score"]), [x, y, x + w, y + h]))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"{path}: entry {i} is not a proposal with file_name, bbox [x, y, w, h] and "
                f"score: {err}"
            ) from err
    return {
        name: np.array([b for _, b in sorted(found, key=lambda t: -t[0])], np.float32)
        for name, found in grouped.items()
    }


def write_proposals(
    model: nn.Module,
    index: DatasetIndex,
    path: Path,
    *,
    short_side: int,
    max_size: int,
    batch_size: int,
    device: torch.device | str,
    progress: bool,
) -> Path:
    """The RPN's training-time proposals (its train ``post_nms_top_n``) for every image of
    ``index``, without flips, as COCO results JSON in original pixels."""
    rpn = model.rpn
    test_config = rpn.config
    rpn.config = dataclasses.replace(test_config, test_proposals=test_config.train_proposals)
    try:
        dataset = DetectionDataset(index, eval_transforms(short_side, max_size))
        entries = []
        for item, boxes, scores in propose(
            model,
            dataset,
            top=test_config.train_proposals.post_nms_top_n,
            batch_size=batch_size,
            device=device,
            progress=progress,
        ):
            entries += coco_results(item["image_id"], item["file_name"], boxes, scores)
    finally:
        rpn.config = test_config
    return write_json(path, entries)


def _freeze(module: nn.Module) -> None:
    """No gradients, and batch norm (where not already frozen) kept in inference mode: the
    module's ``train()`` is replaced by one that leaves it in eval mode."""
    module.requires_grad_(False)
    module.eval()
    module.train = types.MethodType(lambda self, mode=True: nn.Module.train(self, False), module)


def train_alternating(
    config: DetectorConfig,
    index: DatasetIndex,
    train_config: TrainConfig,
    *,
    out_dir: str | Path,
    short_side: int = 800,
    max_size: int = 1333,
    flip: float = 0.5,
    strict: bool = False,
    device: torch.device | str = "cpu",
    progress: bool = True,
    evaluate: Callable[[nn.Module], dict] | None = None,
) -> tuple[FasterRCNN, dict]:
    """Run the four steps, each for ``train_config.steps`` steps. Returns the final detector
    and a summary per step. ``evaluate`` is passed to each detector step (2 and 4)."""
    if distributed_context()[1] > 1:
        raise SystemExit(
            "rpnkit train --schedule alternating runs in one process (its proposal files are "
            "written between steps); use --schedule joint under torchrun"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    class_names = index.class_names
    checkpoint_config = detector_checkpoint_config(config, class_names)

    def dataset(proposals: dict[str, np.ndarray] | None = None) -> DetectionDataset:
        return DetectionDataset(
            index,
            train_transforms(short_side, max_size, flip),
            strict=strict,
            seed=train_config.seed,
            proposals=proposals,
        )

    def run(model, name, model_config, proposals=None, evaluate_step=None):
        print(f"alternating training, {name}")
        return train(
            model,
            dataset(proposals),
            train_config,
            out_dir=out / name,
            model_config=model_config,
            device=device,
            progress=progress,
            evaluate=evaluate_step,
        )

    def proposals_of(model, name):
        path = write_proposals(
            model,
            index,
            out / name,
            short_side=short_side,
            max_size=max_size,
            batch_size=train_config.batch_size,
            device=device,
            progress=progress,
        )
        print(f"wrote {path}")
        return load_proposals(path)

    summaries = {}
    # 1. The RPN, from ImageNet.
    rpn_model = build_model(config.model)
    summaries["step1_rpn"] = run(rpn_model, "step1_rpn", config_to_dict(config.model))
    step1 = proposals_of(rpn_model, "step1_proposals.json")

    # 2. The detector, from a fresh ImageNet backbone, on the step-1 proposals. Its RPN is not
    #    used in this step.
    detector = FasterRCNN(config)
    _freeze(detector.rpn)
    summaries["step2_detector"] = run(
        detector, "step2_detector", checkpoint_config, step1, evaluate
    )

    # 3. The RPN on the detector's frozen backbone; its own layers start from step 1's.
    detector.rpn.load_state_dict(rpn_model.rpn.state_dict())
    detector.rpn.requires_grad_(True)
    del detector.rpn.train  # back to nn.Module.train
    _freeze(detector.backbone)
    shared = ProposalModel(
        backbone=detector.backbone,
        rpn=detector.rpn,
        pixel_mean=detector.pixel_mean.flatten().tolist(),
        pixel_std=detector.pixel_std.flatten().tolist(),
    )
    summaries["step3_rpn"] = run(shared, "step3_rpn", config_to_dict(config.model))
    step3 = proposals_of(shared, "step3_proposals.json")

    # 4. The detector's head on the step-3 proposals, backbone and RPN frozen.
    _freeze(detector.rpn)
    summaries["step4_detector"] = run(
        detector, "step4_detector", checkpoint_config, step3, evaluate
    )
    save_checkpoint(
        out / "checkpoint.safetensors",
        detector,
        config=checkpoint_config,
        step=4 * train_config.steps,
    )
    return detector, summaries
