"""Running a network over a dataset in batches: the one loop behind proposals, detections and
evaluation. Unreadable images (None items, already reported) are left out."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm import tqdm

from ..data import Batch, collate
from ..modeling.detector import FasterRCNN
from ..modeling.proposal_model import ProposalModel
from ..modeling.roi_heads import Detections
from ..modeling.rpn import ProposalConfig, Proposals


@torch.no_grad()
def run_batches(
    forward: Callable[[Batch], Any],
    dataset: Dataset,
    *,
    batch_size: int,
    device: torch.device,
    progress: bool = False,
    desc: str = "running",
    precision: contextlib.AbstractContextManager | None = None,
) -> Iterator[tuple[list[dict], Batch, Any]]:
    """Yield (items, batch on ``device``, ``forward(batch)``) for consecutive batches of the
    readable items of ``dataset``. ``precision`` (autocast) is entered around the forward
    only: what the caller does between batches runs outside it."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    precision = precision or contextlib.nullcontext()
    starts = range(0, len(dataset), batch_size)
    for start in tqdm(starts, desc=desc, disable=not progress, dynamic_ncols=True):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        items = [it for it in items if it is not None]
        if not items:
            continue
        batch = collate(items).to(device)
        with precision:
            output = forward(batch)
        yield items, batch, output


def first_stage(network: nn.Module) -> ProposalModel:
    """The proposal model of an RPN or of a detector."""
    return network.first_stage if isinstance(network, FasterRCNN) else network


def proposal_forward(
    network: nn.Module, proposal_config: ProposalConfig | None = None
) -> Callable[[Batch], Proposals]:
    model = first_stage(network)

    def forward(batch: Batch) -> Proposals:
        return model(
            batch.images,
            batch.image_sizes,
            image_scales=batch.image_scales,
            proposal_config=proposal_config,
        ).proposals

    return forward


def detection_forward(detector: FasterRCNN) -> Callable[[Batch], Detections]:
    def forward(batch: Batch) -> Detections:
        return detector(batch.images, batch.image_sizes, image_scales=batch.image_scales).detections

    return forward


def to_original_pixels(item: dict) -> Tensor:
    """(4,) factors taking xyxy boxes of a resized dataset item back to its original pixels."""
    oh, ow = item["orig_size"]
    h, w = item["image"].shape[1:]
    return torch.tensor([ow / w, oh / h, ow / w, oh / h])
