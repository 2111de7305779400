"""The inference runtime: ``rpnkit.load`` a checkpoint, then ``propose``, ``detect`` or
``evaluate`` on anything that holds images.

    model = rpnkit.load("runs/x/checkpoint.safetensors", device="cuda")  # kind read from the file
    dets = model.detect(["a.jpg", pil_image, np_array, tensor], batch_size=8, amp="bf16")
    props = model.propose("photos/", top=1000)

Inputs: an image file, a folder of images, a dataset (COCO JSON, VOC, YOLO; ``split`` and the
other data options pick it), a ``DatasetIndex`` or a dataset of items, or a list of image files,
PIL images, numpy arrays and tensors (``rpnkit.data.to_rgb`` says which). Images are resized as
in training (shorter side ``short_side``, longer at most ``max_size``); results come back per
image in original pixels. Batch-norm folding and autocast are decided here, for every caller.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from ..data import DatasetIndex, DetectionDataset, ImageList, eval_transforms, index_for_input
from ..modeling.rpn import ProposalConfig
from .checkpoint import ModelSpec, load_model
from .device import fold_for_inference, inference_precision, resolve_device
from .evaluate import (
    DetectionReport,
    RecallReport,
    evaluate_detections,
    evaluate_proposals,
)
from .results import DetectionResult, ProposalResult
from .runner import (
    detection_forward,
    first_stage,
    proposal_forward,
    run_batches,
    to_original_pixels,
)

Inputs = Any  # str | Path | DatasetIndex | Dataset | Sequence[str | Path | ImageLike]


class Predictor:
    """A trained RPN or Faster R-CNN ready for inference. ``network`` is the model (eval mode,
    batch norms folded unless ``fold_bn=False``), ``spec`` what its checkpoint says it is.
    ``amp`` (``"none"``, ``"bf16"``, ``"fp16"``) is the default precision of every call;
    ``workers`` processes decode and resize images while the model runs (default: 4 on a GPU,
    none on the CPU, where the model needs the cores)."""

    def __init__(
        self,
        network: nn.Module,
        spec: ModelSpec,
        *,
        device: torch.device | str = "auto",
        fold_bn: bool = True,
        amp: str = "none",
        short_side: int = 800,
        max_size: int = 1333,
        workers: int | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.workers = default_workers(self.device) if workers is None else workers
        self.network = network.to(self.device).eval()
        if fold_bn:
            fold_for_inference(self.network)
        self.spec = spec
        inference_precision(amp, self.device)  # an unusable setting fails here, once
        self.amp = amp
        self.short_side, self.max_size = short_side, max_size
        self.skipped: list[str] = []  # the images the last call could not read (reported)
        self.source: Path | None = None  # the checkpoint file, when loaded from one

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.spec.class_names

    def precision(self, amp: str | None = None):
        return inference_precision(self.amp if amp is None else amp, self.device)

    def dataset(
        self,
        inputs: Inputs,
        *,
        split: str = "val",
        fmt: str | None = None,
        split_file: str | Path | None = None,
        strict: bool = False,
        names: Sequence[str] | None = None,
    ) -> Dataset:
        """``inputs`` as dataset items resized for the network."""
        transforms = eval_transforms(self.short_side, self.max_size)
        if isinstance(inputs, Dataset):
            return inputs
        if isinstance(inputs, (str, Path)):  # a detector's classes are mapped by name
            names_of = self.class_names if self.spec.is_detector else None
            inputs = index_for_input(
                inputs,
                split=split,
                fmt=fmt,
                split_file=split_file,
                strict=strict,
                class_names=names_of or None,
            )
        if isinstance(inputs, DatasetIndex):
            return DetectionDataset(inputs, transforms, strict=strict)
        if isinstance(inputs, (Image.Image, np.ndarray)) or (
            isinstance(inputs, torch.Tensor) and inputs.ndim == 3
        ):
            inputs = [inputs]  # one image in memory
        return ImageList(list(inputs), transforms, names=names, strict=strict)

    def iter_proposals(
        self,
        inputs: Inputs,
        *,
        top: int = 100,
        batch_size: int = 4,
        amp: str | None = None,
        progress: bool = False,
        proposal_config: ProposalConfig | None = None,
        **data_options,
    ) -> Iterator[ProposalResult]:
        """Each readable image's best ``top`` proposals, in input order, as they are computed.
        ``proposal_config`` overrides the RPN's test setting (the alternating schedule
        proposes with its training one)."""
        if top < 1:
            raise ValueError(f"top must be at least 1, got {top}")
        self.skipped.clear()  # the same list: callers may hold it
        for metas, proposals in run_batches(
            proposal_forward(self.network, proposal_config),
            self.dataset(inputs, **data_options),
            batch_size=batch_size,
            device=self.device,
            progress=progress,
            desc="proposing",
            precision=self.precision(amp),
            workers=self.workers,
            skipped=self.skipped,
        ):
            for i, meta in enumerate(metas):
                n = min(int(proposals.num[i]), top)
                yield ProposalResult(
                    meta["image_id"],
                    meta["file_name"],
                    proposals.boxes[i, :n] * to_original_pixels(meta),
                    proposals.scores[i, :n],
                    tuple(meta["orig_size"]),
                    meta.get("source"),
                )

    def iter_detections(
        self,
        inputs: Inputs,
        *,
        score_threshold: float = 0.0,
        batch_size: int = 4,
        amp: str | None = None,
        progress: bool = False,
        **data_options,
    ) -> Iterator[DetectionResult]:
        """Each readable image's detections scoring at least ``score_threshold`` (the model
        itself keeps those above its own threshold, 0.05 by default), in input order."""
        detector = self._detector()
        self.skipped.clear()  # the same list: callers may hold it
        for metas, found in run_batches(
            detection_forward(detector),
            self.dataset(inputs, **data_options),
            batch_size=batch_size,
            device=self.device,
            progress=progress,
            desc="detecting",
            precision=self.precision(amp),
            workers=self.workers,
            skipped=self.skipped,
        ):
            for meta, (boxes, scores, labels) in zip(metas, found.per_image()):
                keep = scores >= score_threshold
                yield DetectionResult(
                    meta["image_id"],
                    meta["file_name"],
                    boxes[keep] * to_original_pixels(meta),
                    scores[keep],
                    labels[keep],
                    self.class_names,
                    tuple(meta["orig_size"]),
                    meta.get("source"),
                )

    def propose(self, inputs: Inputs, **options) -> list[ProposalResult]:
        """``iter_proposals`` as a list."""
        return list(self.iter_proposals(inputs, **options))

    def detect(self, inputs: Inputs, **options) -> list[DetectionResult]:
        """``iter_detections`` as a list."""
        return list(self.iter_detections(inputs, **options))

    def evaluate(self, data: Inputs, **options) -> RecallReport | DetectionReport:
        """Detection mAP for a Faster R-CNN, proposal recall for an RPN."""
        if self.spec.is_detector:
            return self.evaluate_detections(data, **options)
        return self.evaluate_proposals(data, **options)

    def evaluate_proposals(
        self,
        data: Inputs,
        *,
        batch_size: int = 4,
        amp: str | None = None,
        progress: bool = False,
        **data_options,
    ) -> RecallReport:
        """COCO-style proposal recall on a labelled dataset (a detector's through its RPN)."""
        return evaluate_proposals(
            first_stage(self.network),
            self.dataset(data, **data_options),
            batch_size=batch_size,
            device=self.device,
            progress=progress,
            precision=self.precision(amp),
            workers=self.workers,
        )

    def evaluate_detections(
        self,
        data: Inputs,
        *,
        batch_size: int = 4,
        amp: str | None = None,
        progress: bool = False,
        **data_options,
    ) -> DetectionReport:
        """COCO and VOC mAP on a labelled dataset whose classes are the checkpoint's."""
        dataset = self.dataset(data, **data_options)
        self._check_classes(dataset)
        return evaluate_detections(
            self._detector(),
            dataset,
            self.class_names,
            batch_size=batch_size,
            device=self.device,
            progress=progress,
            precision=self.precision(amp),
            workers=self.workers,
        )

    def _check_classes(self, dataset: Dataset) -> None:
        """The dataset's labels must mean the checkpoint's classes: a dataset read by name
        against them (a path) has to keep some object; one built elsewhere, the same names."""
        index = getattr(dataset, "index", None)
        source = index.source if index is not None else type(dataset).__name__
        mine = list(self.class_names)
        names = list(getattr(dataset, "class_names", []) or [])
        if names and names != mine:
            raise ValueError(
                f"{source}: its classes {names[:5]}... differ from the checkpoint's {mine[:5]}..."
            )
        if (
            index is not None
            and index.skipped_annotations
            and not any(len(r.boxes) for r in index.records)
        ):
            first = index.issues[0] if index.issues else ""
            raise ValueError(
                f"{source}: none of its objects is of the checkpoint's classes {mine[:5]} "
                f"({index.skipped_annotations} skipped; first: {first})"
            )

    def _detector(self) -> nn.Module:
        if not self.spec.is_detector:
            where = f"{self.source}: " if self.source is not None else ""
            raise ValueError(
                f"{where}not a Faster R-CNN checkpoint (an RPN: train one with --model "
                "faster-rcnn); proposal checkpoints go to rpnkit propose"
            )
        return self.network


def default_workers(device: torch.device) -> int:
    return min(4, os.cpu_count() or 1) if device.type == "cuda" else 0


def load(
    path: str | Path,
    device: torch.device | str = "auto",
    *,
    fold_bn: bool = True,
    amp: str = "none",
    short_side: int = 800,
    max_size: int = 1333,
    workers: int | None = None,
) -> Predictor:
    """A checkpoint of ``rpnkit train`` or ``rpnkit demo`` ready for inference; whether it is
    an RPN or a Faster R-CNN is read from the file. Nothing in the file is executed."""
    device = resolve_device(device)
    network, spec = load_model(path, device)
    predictor = Predictor(
        network,
        spec,
        device=device,
        fold_bn=fold_bn,
        amp=amp,
        short_side=short_side,
        max_size=max_size,
        workers=workers,
    )
    predictor.source = Path(path)
    return predictor
