"""Keeping the GPU fed: batches copied to the device ahead of time on a side stream, and model
outputs copied back to the host without stopping the device.

- ``DevicePrefetcher``: while the model runs on batch k, a thread copies (and decodes) the
  next batches (pinned by the DataLoader) on a second CUDA stream, so host-to-device copies
  and decoding overlap compute and the launching of it.
- ``to_host``: an output's tensors copied to pinned host memory asynchronously, with an event
  to wait on only when the values are needed (the next batch is already queued by then).

On the CPU both are plain: batches are used where they are, outputs are already on the host.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from ..data import Batch, EmptyBatch
from ..data.dataset import report_skipped


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
    only unreadable images, pass through as they are) on ``device``.

    On CUDA a thread takes the next ``ahead`` batches from the loader and copies them (and
    decodes their JPEGs, ``data.device_images``) on a second stream, while the caller's thread
    queues the model's work: neither the copies nor the decoding (nvJPEG waits for its own
    work) hold up the launches. PyTorch's operators release the GIL while they run. An error
    of the loader (a ``DataError`` under ``strict``) is raised in the caller's thread, where
    the batches' unreadable images are warned of too (``SkippedSample``, each once).
    ``threaded``: None for CUDA only (on the CPU the model needs the cores)."""

    def __init__(
        self,
        batches: Iterator[Batch | EmptyBatch],
        device: torch.device,
        ahead: int = 2,
        threaded: bool | None = None,
    ) -> None:
        if device.type == "cuda" and device.index is None:  # the thread needs the index
            device = torch.device("cuda", torch.cuda.current_device())
        self.batches = batches
        self.device = device
        self.ahead = ahead
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.threaded = self.stream is not None if threaded is None else threaded

    def __iter__(self) -> Iterator[Batch | EmptyBatch]:
        """The batches, each one's unreadable images reported here, in the caller's process
        and thread (``data.report_skipped``: a DataLoader worker's warnings never reach the
        caller's filters), each image once however often it is met (an epoch each)."""
        reported: set[str] = set()
        with contextlib.closing(self._batches()) as batches:  # closed with this one: its thread
            for batch in batches:
                skipped = getattr(batch, "skipped", ())  # anything else passes through as is
                report_skipped(dict.fromkeys(m for m in skipped if m not in reported))
                reported.update(skipped)
                yield batch

    def _batches(self) -> Iterator[Batch | EmptyBatch]:
        if not self.threaded:
            for batch in self.batches:
                yield batch.to(self.device) if isinstance(batch, Batch) else batch
            return
        ready: queue.Queue = queue.Queue(maxsize=self.ahead)
        stop = threading.Event()
        worker = threading.Thread(target=self._produce, args=(ready, stop), daemon=True)
        worker.start()
        try:
            while (item := self._next(ready, worker)) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield self._in_use(*item)
        finally:
            stop.set()
            # unblock a producer waiting to put; one still waiting for the loader's next batch
            # (after Ctrl-C, until the loader notices its workers are gone) is left behind
            # after STOP_WAIT_S: a daemon thread, it ends at its next batch
            deadline = time.monotonic() + STOP_WAIT_S
            while worker.is_alive() and time.monotonic() < deadline:
                with contextlib.suppress(queue.Empty):
                    ready.get(timeout=0.05)

    def _produce(self, ready: queue.Queue, stop: threading.Event) -> None:
        """The thread: each batch on the device, with an event marking when it is there."""

        def put(item) -> bool:
            while not stop.is_set():
                with contextlib.suppress(queue.Full):
                    ready.put(item, timeout=0.05)
                    return True
            return False

        try:
            if self.stream is not None:
                torch.cuda.set_device(self.device)  # a new thread starts on the first GPU
            for batch in self.batches:
                event = None
                if isinstance(batch, Batch) and self.stream is None:
                    batch = batch.to(self.device)
                elif isinstance(batch, Batch):
                    with torch.cuda.stream(self.stream):
                        batch = batch.to(self.device)
                        event = torch.cuda.Event()
                        event.record(self.stream)
                if not put((batch, event)):
                    return
            put(_END)
        except BaseException as err:  # raised again in the caller's thread
            put(err)

    @staticmethod
    def _next(ready: queue.Queue, worker: threading.Thread):
        while True:
            try:
                return ready.get(timeout=1.0)
            except queue.Empty:
                if not worker.is_alive() and ready.empty():
                    raise RuntimeError("the prefetching thread ended without a word") from None

    def _in_use(self, batch, event):
        if event is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(event)
            for t in batch_tensors(batch):  # used on this stream: keep it allocated
                t.record_stream(current)
        return batch


_END = object()
STOP_WAIT_S = 10.0  # how long a closed prefetcher waits for its thread


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
