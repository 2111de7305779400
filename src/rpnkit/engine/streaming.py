"""Keeping the GPU fed: batches copied to the device ahead of time on a side stream, and model
outputs copied back to the host without stopping the device.

- ``DevicePrefetcher``: while the model runs on batch k, batch k+1 (pinned by the DataLoader)
  is copied on a second CUDA stream, so host-to-device copies overlap compute.
- ``to_host``: an output's tensors copied to pinned host memory asynchronously, with an event
  to wait on only when the values are needed (the next batch is already queued by then).

On the CPU both are plain: batches are used where they are, outputs are already on the host.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from ..data import Batch, EmptyBatch


def batch_tensors(batch: Batch) -> list[Tensor]:
    t = batch.targets
    tensors = [batch.images, batch.image_sizes, t.boxes, t.mask, t.ignore, t.labels]
    if batch.image_scales is not None:
        tensors.append(batch.image_scales)
    if batch.proposals is not None:
        tensors += list(batch.proposals)
    return tensors


class DevicePrefetcher:
    """Batches from ``batches`` (an iterator of CPU batches; ``EmptyBatch`` entries, batches of
    only unreadable images, pass through as they are) on ``device``, the next one copied while
    the current one is in use."""

    def __init__(self, batches: Iterator[Batch | EmptyBatch], device: torch.device) -> None:
        self.batches = batches
        self.device = device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def _load(self) -> tuple[bool, Batch | EmptyBatch | None]:
        try:
            batch = next(self.batches)
        except StopIteration:
            return False, None
        if not isinstance(batch, Batch):
            return True, batch
        if self.stream is None:
            return True, batch.to(self.device)
        with torch.cuda.stream(self.stream):
            return True, batch.to(self.device)

    def __iter__(self) -> Iterator[Batch | EmptyBatch]:
        more, upcoming = self._load()
        while more:
            batch = upcoming
            if isinstance(batch, Batch) and self.stream is not None:
                current = torch.cuda.current_stream(self.device)
                current.wait_stream(self.stream)
                for t in batch_tensors(batch):  # used on this stream: keep it allocated
                    t.record_stream(current)
            more, upcoming = self._load()
            yield batch


@dataclasses.dataclass
class HostCopy:
    """An output on its way to the host; ``get()`` waits for it (and nothing queued after)."""

    value: Any
    event: torch.cuda.Event | None = None

    def get(self) -> Any:
        if self.event is not None:
            self.event.synchronize()
        return self.value


def to_host(output: Any) -> HostCopy:
    """A dataclass of tensors (``Proposals``, ``Detections``) copied to pinned host memory
    asynchronously."""
    fields = {
        f.name: getattr(output, f.name)
        for f in dataclasses.fields(output)
        if isinstance(getattr(output, f.name), Tensor)
    }
    device = next(iter(fields.values())).device
    if device.type != "cuda":
        return HostCopy(output)
    host = dataclasses.replace(
        output, **{k: v.to("cpu", non_blocking=True) for k, v in fields.items()}
    )
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(device))
    return HostCopy(host, event)
