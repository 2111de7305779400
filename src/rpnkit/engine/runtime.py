"""Running a trained model: load it from a checkpoint, propose boxes for images, folders or
datasets, and write COCO-style results."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import config_from_dict
from ..data import DetectionDataset
from ..data.images import load_rgb
from ..data.readers import IMAGE_SUFFIXES, DataError, DatasetIndex, Record, read_dataset
from ..data.transforms import Compose
from ..evaluation.recall import batched_proposals, to_original_pixels
from ..modeling.backbones.fold import fold_batch_norm
from ..modeling.presets import ModelConfig, build_model
from ..modeling.proposal_model import ProposalModel
from .checkpoint import load_checkpoint


def load_model(
    path: str | Path, device: torch.device | str = "cpu", *, fold_bn: bool = False
) -> tuple[ProposalModel, ModelConfig]:
    """A ProposalModel and its config from a checkpoint written by ``rpnkit train`` or
    ``rpnkit demo`` (for a Faster R-CNN checkpoint, the detector, whose RPN proposes, and its
    first-stage config). Nothing in the file is executed. ``fold_bn``: fold the backbone's
    batch norms into its convolutions (``fold_for_inference``), for inference only."""
    state = load_checkpoint(path)
    if isinstance(state["config"], dict) and state["config"].get("kind") == "faster-rcnn":
        from .detect import load_detector  # its RPN proposes; its outputs carry .proposals

        detector, detector_config, _ = load_detector(path, device, fold_bn=fold_bn)
        return detector, detector_config.model
    try:
        config = config_from_dict(ModelConfig, state["config"], where=f"{path} config")
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: the checkpoint's model config is not usable: {err}") from err
    # the checkpoint holds every weight: do not load pretrained backbone files first
    bare = dataclasses.replace(config, backbone=dataclasses.replace(config.backbone, weights=None))
    model = build_model(bare)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise ValueError(f"{path}: the weights do not fit the model config: {err}") from err
    model = model.to(device).eval()
    return (fold_for_inference(model) if fold_bn else model), config


def fold_for_inference(model: nn.Module) -> nn.Module:
    """Fold the backbone's batch norms into its convolutions, in place: the same function with
    less memory traffic (effnet-lite0's backbone: about 16 % less time on a 2-core CPU). The
    model can then no longer be trained or saved in the checkpoint's layout."""
    model.eval()
    probe = torch.rand(1, 3, 128, 128, device=model.pixel_mean.device)
    fold_batch_norm(model.backbone, probe)
    return model


def inference_precision(amp: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context to run inference in: ``"none"`` (float32), ``"bf16"`` or ``"fp16"`` autocast.

    Convolutions and matmuls then run in half precision; rpnkit decodes and selects boxes in
    float32 either way. With the backbone's batch norms folded (as the CLI does) bf16 is where
    the GPU gains most (docs/performance.md); on a CPU without bf16 units it is slower.
    """
    if amp == "none":
        return contextlib.nullcontext()
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    if amp not in dtypes:
        raise ValueError(f"--amp {amp!r}: expected none, bf16 or fp16")
    if amp == "fp16" and device.type != "cuda":
        raise ValueError(f"--amp fp16 needs a CUDA device (got {device}); use bf16 on the CPU")
    return torch.autocast(device.type, dtype=dtypes[amp])


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def index_for_input(
    path: str | Path,
    *,
    split: str = "val",
    fmt: str | None = None,
    split_file=None,
    strict: bool = False,
) -> DatasetIndex:
    """An image, a folder of images, or a dataset (COCO, VOC, YOLO) as a DatasetIndex; plain
    images get no boxes and integer ids in name order."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
        files = [path]
    elif path.is_dir() and fmt is None and not _looks_like_dataset(path):
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    else:
        return read_dataset(path, split=split, fmt=fmt, split_file=split_file, strict=strict)
    records = []
    for i, f in enumerate(files):
        try:
            h, w = load_rgb(f).shape[:2]
        except DataError:
            if strict:
                raise
            continue
        empty = np.zeros((0,), np.float32)
        records.append(
            Record(
                f,
                i,
                w,
                h,
                np.zeros((0, 4), np.float32),
                empty.astype(np.int64),
                empty.astype(bool),
                empty,
            )
        )
    return DatasetIndex(records, [], source=str(path))


def _looks_like_dataset(path: Path) -> bool:
    return (
        (path / "data.yaml").is_file()
        or any(path.glob("annotations/*"))
        or any(path.glob("Annotations/*"))
        or any(path.glob("*.xml"))
    )


@torch.no_grad()
def propose(
    model: ProposalModel,
    dataset: DetectionDataset,
    *,
    top: int = 100,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> Iterator[tuple[dict, np.ndarray, np.ndarray]]:
    """For each readable image: (item, (K, 4) xyxy boxes in original-image pixels, (K,) scores)."""
    model.to(device).eval()
    for items, _, proposals in batched_proposals(
        model, dataset, batch_size=batch_size, device=device, progress=progress, desc="proposing"
    ):
        boxes, scores, num = proposals.boxes.cpu(), proposals.scores.cpu(), proposals.num.cpu()
        for i, item in enumerate(items):
            n = min(int(num[i]), top)
            yield item, (boxes[i, :n] * to_original_pixels(item)).numpy(), scores[i, :n].numpy()


def coco_results(
    image_id, file_name: str, boxes: np.ndarray, scores: np.ndarray, **extra
) -> list[dict]:
    """COCO results entries: ``bbox`` as [x, y, w, h] in pixels, rounded to 0.01."""
    return [
        {
            "file_name": file_name,
            "image_id": image_id,
            "bbox": [
                round(float(b[0]), 2),
                round(float(b[1]), 2),
                round(float(b[2] - b[0]), 2),
                round(float(b[3] - b[1]), 2),
            ],
            "score": round(float(s), 5),
            **extra,
        }
        for b, s in zip(boxes, scores)
    ]


def write_json(path: str | Path, data) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)
    return path


def eval_dataset(index: DatasetIndex, short: int, max_size: int) -> DetectionDataset:
    from ..data.transforms import ResizeShortest

    return DetectionDataset(index, Compose((ResizeShortest(short, max_size),)))


def format_table(metrics: dict[str, float], ks: Sequence[int]) -> str:
    """A text table: rows AR (0.5:0.95), recall@0.5 and @0.7; columns k x sizes."""
    lines = []
    sizes = ("", "_small", "_medium", "_large")
    header = f"{'':>14}" + "".join(f"{'k=' + str(k):>9}" for k in ks)
    for size in sizes:
        name = size.removeprefix("_") or "all"
        lines.append(f"[{name}]")
        lines.append(header)
        for label, key in (
            ("AR 0.5:0.95", "AR@{k}"),
            ("recall@0.5", "recall@{k}@0.5"),
            ("recall@0.7", "recall@{k}@0.7"),
        ):
            values = [metrics.get(key.format(k=k) + size, float("nan")) for k in ks]
            lines.append(f"{label:>14}" + "".join(f"{v:9.3f}" for v in values))
    return "\n".join(lines)
