"""Running a network over a dataset in batches: the one loop behind proposals, detections and
evaluation. Unreadable images are left out and counted (and warned of where the batches are
collected: ``data.report_skipped``).

GPU->CPU synchronisation: one per batch, waiting for the previous batch's outputs (already
computed while the current batch was queued) in ``HostCopy.get``. (On CUDA the detector's
RoIAlign pools every level in one call on one canvas, without reading slice lengths on the host; the
paper's RoIPool, a preset option, still does, once per batch.)"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..config import check_count
from ..data import Batch, DataError, EmptyBatch, collate
from ..modeling.detector import FasterRCNN
from ..modeling.proposal_model import ProposalModel
from ..modeling.roi_heads import Detections, RoIHeadConfig
from ..modeling.rpn import ProposalConfig, Proposals
from .streaming import DevicePrefetcher, to_host


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
    num_workers: int = 0,
    skipped: list[str] | None = None,
    groups: Sequence[int] | None = None,
) -> Iterator[tuple[list[dict], Any]]:
    """Yield (each image's ``meta``, ``forward(batch)`` on the host) for consecutive batches of
    the readable items of ``dataset``, in order.

    A pipeline, so that the device never waits for the host: ``num_workers`` processes decode and
    resize the next batches (or read the JPEGs that the device decodes), batch k+1's copy to the
    device (and its decoding) is queued while batch k runs (on a thread when decoding: below),
    and batch k's outputs come back to the host asynchronously while batch k+1 is queued: the
    caller's work on batch k's results (pictures, JSON, metrics) overlaps the model's on k+1.
    ``precision`` (autocast) is entered around the forward only. The messages of unreadable
    images are appended to ``skipped``; none readable at all is a ``DataError``.

    ``groups`` (a key per item, e.g. ``DetectionDataset.aspect_groups``): each batch holds one
    group's items, taken from windows of ``GROUP_WINDOW`` batches of consecutive items
    (``grouped_batches``: wide and tall photographs apart pad less); each meta then carries its
    item's ``position``, for ``in_input_order``."""
    check_count("batch_size", batch_size)
    precision = precision or contextlib.nullcontext()
    on_device = device.type == "cuda" and bool(getattr(dataset, "leaves_pixels_to_device", False))
    if groups is None:
        order = {"batch_size": batch_size}
    else:
        dataset = Positioned(dataset)
        order = {"batch_sampler": grouped_batches(groups, batch_size, GROUP_WINDOW)}
    loader = DataLoader(
        dataset,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
        **order,
    )
    # Pixels the GPU may decode or resize: prefetched on a thread, which waits for nvJPEG and
    # queues the resizing (JPEGs 0.93 of the model's rate against 0.88 inline, PNGs 1.00 and
    # 0.97; large PNGs, which the workers shrink themselves, take the thread too, unmeasured);
    # images ready from the workers (decoding off): in this thread, as a thread doubled the
    # host time of the forward's launches (the GIL) when 4 workers bounded the run (H200:
    # docs/performance.md, sessions 9, 10 and 13)
    batches = iter(DevicePrefetcher(iter(loader), device, threaded=on_device))
    # a GPU's batch k is handed on once k+1 is queued; the CPU runs each forward to its end, so
    # holding k back would only delay it (and make a run's first results look later)
    lagging = device.type == "cuda"
    pending, readable, unreadable = None, 0, []
    with contextlib.closing(batches):  # a caller that stops early ends the thread
        for batch in tqdm(batches, total=len(loader), desc=desc, disable=not progress):
            unreadable += batch.skipped
            if skipped is not None:
                skipped += batch.skipped
            if isinstance(batch, EmptyBatch):  # every image of it was unreadable (reported)
                continue
            readable += len(batch.meta)
            with precision:
                output = to_host(forward(batch))
            if not lagging:  # nothing to overlap: the results are on the host already
                yield batch.meta, output.get()
                continue
            if pending is not None:
                yield pending[0], pending[1].get()
            pending = (batch.meta, output)
    if pending is not None:
        yield pending[0], pending[1].get()
    if readable == 0:
        first = f" (first: {unreadable[0]})" if unreadable else ""
        raise DataError(f"no readable image among the {len(dataset)} given{first}")


@dataclasses.dataclass
class Pace:
    """When a run's batches reached the host (``time.perf_counter``): ``started`` when the
    run began reading images, ``first`` and ``last`` the first and the last batch's outputs;
    ``images`` of all batches, ``later`` of those after the first. What a run's start-up and
    steady rate are read from, as results handed on in input order come a window at a time
    (``in_input_order``), too bursty to time."""

    started: float | None = None
    first: float | None = None
    last: float | None = None
    images: int = 0
    later: int = 0

    def track(self, batches: Iterable[tuple[list[dict], Any]]) -> Iterator[tuple[list[dict], Any]]:
        """``batches`` (metas, outputs) passed through, timed (from the first one asked for)."""
        self.started, self.first, self.last = time.perf_counter(), None, None
        self.images = self.later = 0
        for metas, output in batches:
            self.last = time.perf_counter()
            if self.first is None:
                self.first = self.last
            else:
                self.later += len(metas)
            self.images += len(metas)
            yield metas, output

    def rate(self, end: float | None = None) -> float | None:
        """The later batches' images per second, from the first batch's outputs to ``end``
        (default: the last batch's); None without later batches."""
        if self.first is None or self.later == 0:
            return None
        seconds = (self.last if end is None else end) - self.first
        return self.later / seconds if seconds > 0 else None

    def summary(self, end: float | None = None) -> str:
        """' (first results after S s, then R images/s)' (``rate(end)``, where there is one);
        '' before any batch."""
        if self.first is None:
            return ""
        rate = self.rate(end)
        then = f", then {rate:.1f} images/s" if rate is not None else ""
        return f" (first results after {self.first - self.started:.2f} s{then})"


GROUP_WINDOW = 8  # batches: how far ahead ``grouped_batches`` looks for an image's group


def grouped_batches(groups: Sequence[int], batch_size: int, window: int) -> list[list[int]]:
    """Batches of indices, each of one group, in windows of ``window`` batches of consecutive
    indices: within a window the indices are sorted by group (stably) and cut into batches, so
    each window ends in at most one partial batch per group."""
    batches, span = [], batch_size * window
    for start in range(0, len(groups), span):
        ids = sorted(range(start, min(start + span, len(groups))), key=lambda i: groups[i])
        for key in dict.fromkeys(groups[i] for i in ids):  # the window's groups, in order
            members = [i for i in ids if groups[i] == key]
            batches += [members[k : k + batch_size] for k in range(0, len(members), batch_size)]
    return batches


def in_input_order(pairs: Iterable[tuple[int | None, Any]], span: int) -> Iterator[Any]:
    """The values of (position, value) pairs in position order, from batches grouped within
    windows of ``span`` items (``grouped_batches``): a window's values are held until the next
    window begins (positions of unreadable items never come). A None position (ungrouped
    batches) passes straight through."""
    held: dict[int, Any] = {}
    for position, value in pairs:
        if position is None:
            yield value
            continue
        final = position // span * span  # every earlier window is complete
        for p in sorted(p for p in held if p < final):
            yield held.pop(p)
        held[position] = value
    for p in sorted(held):
        yield held.pop(p)


class Positioned(Dataset):
    """``dataset``'s items with their index as ``position`` (carried into the batch's meta)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        item = self.dataset[i]
        if isinstance(item, dict):
            item["position"] = i
        return item


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


def proposal_limit(config: ProposalConfig, top: int) -> ProposalConfig:
    """``config`` keeping at least ``top`` proposals per image (and per level before NMS): a
    dense image needs more than a model's default."""
    if top <= config.post_nms_top_n:
        return config
    return dataclasses.replace(
        config, post_nms_top_n=top, pre_nms_top_n=max(config.pre_nms_top_n, top)
    )


def detection_limits(
    detector: FasterRCNN, max_detections: int | None, score_floor: float | None = None
) -> tuple[ProposalConfig | None, RoIHeadConfig | None]:
    """The proposal setting and box head settings (None: the detector's own) of a call that
    keeps up to ``max_detections`` per image scoring at least ``score_floor``, where the
    detector's own settings would keep fewer: more than its ``detections_per_image`` raises
    that, its NMS candidates to five per detection and its RPN's proposals (RoIs) to at least
    as many; a floor below its ``score_threshold`` (0.05) lowers that. Fewer, or a higher
    floor, need nothing here: the caller keeps the leading ones of the model's best-first
    output. The detector is left as it is: calls with other limits may run beside this one
    (``detection_forward``); under ``torch.compile`` each such setting compiles its graph."""
    check_count("max_detections", max_detections, optional=True)
    heads = detector.roi_heads.config
    changes: dict = {}
    if score_floor is not None and score_floor < heads.score_threshold:
        changes["score_threshold"] = score_floor
    raised = max_detections is not None and max_detections > heads.detections_per_image
    if raised:
        changes["detections_per_image"] = max_detections
        changes["nms_candidates"] = max(heads.nms_candidates, 5 * max_detections)
    head = dataclasses.replace(heads, **changes) if changes else None
    if not raised:
        return None, head
    return proposal_limit(detector.rpn.config.test_proposals, max_detections), head


def detection_forward(
    detector: FasterRCNN, max_detections: int | None = None, score_floor: float | None = None
) -> Callable[[Batch], Detections]:
    """A batch's detections, up to ``max_detections`` per image scoring at least
    ``score_floor`` (``detection_limits``)."""
    proposal_config, head_config = detection_limits(detector, max_detections, score_floor)

    def forward(batch: Batch) -> Detections:
        return detector(
            batch.images,
            batch.image_sizes,
            image_scales=batch.image_scales,
            proposal_config=proposal_config,
            head_config=head_config,
        ).detections

    return forward


def to_original_pixels(meta: dict) -> Tensor:
    """(4,) factors taking xyxy boxes of a resized image (its batch ``meta``) back to its
    original pixels."""
    return original_scales([meta])[0]


def original_scales(metas: Sequence[dict]) -> Tensor:
    """(B, 4) ``to_original_pixels`` of a batch's images, in one tensor."""
    sizes = [(m["orig_size"], m["size"]) for m in metas]
    return torch.tensor([[ow / w, oh / h, ow / w, oh / h] for (oh, ow), (h, w) in sizes])


def per_image(metas: list[dict], counts: Tensor, boxes: Tensor, *fields: Tensor):
    """(meta, boxes, *fields) of each image of a batch on the host: the first ``counts[i]``
    rows of each, boxes in original pixels (``original_scales``, one product per batch).
    The slices view per-batch copies of the rows some image keeps, not the outputs' pinned
    buffers, which the next batches reuse."""
    counts = counts.tolist()
    kept = max(counts, default=0)
    boxes = boxes[:, :kept] * original_scales(metas)[:, None, :]
    fields = [f[:, :kept].clone() for f in fields]
    for i, (meta, n) in enumerate(zip(metas, counts)):
        yield meta, boxes[i, :n], *(f[i, :n] for f in fields)
