"""Sliced inference for large images with small objects: an image larger than a tile runs as
overlapping ``tile_size`` x ``tile_size`` tiles at native resolution (optionally plus one view
of the whole image resized as in plain inference), the views of consecutive images batched
through the model together; each view's boxes are brought back to the image's pixels and
merged with cross-tile NMS. An image that fits in one tile runs whole, resized, exactly as in
plain inference.

Each tile owns a core, the part of the image nearer to it than to its neighbours: the grid's
tiles overlap by at least ``overlap`` px and the core borders run through the middles of the
overlaps, so an object up to ``overlap`` px wide lies whole inside the tile whose core holds
its centre. A tile keeps only the boxes centred in its core: an object cut by a tile's border
is found whole by the next tile and kept once, not twice. The cores are widened by
``overlap / 8`` px on each side (``CORE_MARGIN``), so that an object centred on a core border
is not lost when both tiles place its centre a pixel across it: both whole views are kept and
the NMS merges them (a cut view stays outside: its centre lies over ``overlap / 2`` px beyond
the border). The full view keeps only the boxes larger than ``overlap``, the objects no tile
can hold whole.

Shapes: a view's boxes (n, 4) xyxy in the view's pixels -> the item's pixels (``View.place``);
the merged result of an image is ``Proposals`` or ``Detections`` with B = 1 (at least one
slot, zero padding), in the item's pixels, with the item's ``meta``.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from numbers import Integral

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.ops import batched_nms
from tqdm import tqdm

from ..config import check_count
from ..data import Compose, DataError, collate
from ..data.dataset import report_skipped
from ..modeling.roi_heads import Detections
from ..modeling.rpn import Proposals
from ..modeling.sizes import SIZE_DIVISIBLE
from .streaming import to_host

CORE_MARGIN = 1 / 8  # of the overlap: how far a tile's kept centres may reach past its core


# tiles overlap by this many pixels unless told: an object up to this size lies whole in one
DEFAULT_TILE_OVERLAP = 64


@dataclass(frozen=True)
class SliceConfig:
    """Tiles of ``tile_size`` px overlapping by at least ``overlap`` px; ``full_view`` adds the
    whole image resized, for large objects."""

    tile_size: int = 512
    overlap: int = DEFAULT_TILE_OVERLAP
    full_view: bool = False

    def __post_init__(self) -> None:
        size, overlap = self.tile_size, self.overlap
        if not (_is_int(size) and size >= SIZE_DIVISIBLE):
            raise ValueError(f"tile size must be an integer >= {SIZE_DIVISIBLE}, got {size!r}")
        if not (_is_int(overlap) and 0 <= overlap < size):
            raise ValueError(
                f"tile overlap must be an integer in [0, tile size {size}), got {overlap!r}"
            )
        if not isinstance(self.full_view, bool):
            raise ValueError(f"full_view must be True or False, got {self.full_view!r}")

    def applies(self, height: int, width: int) -> bool:
        """Whether an image of this size is sliced (larger than a tile on either side)."""
        return height > self.tile_size or width > self.tile_size


def _is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def tile_starts(length: int, size: int, overlap: int) -> list[int]:
    """Starts of the tiles along a side of ``length`` px: every ``size - overlap`` px, the last
    one flush with the end (overlapping its neighbour by more)."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size, size - overlap))
    return [*starts, length - size]


def core_bounds(starts: list[int], size: int) -> list[tuple[float, float]]:
    """Each tile's core along one side: [low, high) between the middles of its overlaps with
    its neighbours (unbounded at the image's ends)."""
    middles = [(nxt + cur + size) / 2 for cur, nxt in itertools.pairwise(starts)]
    lows, highs = [-math.inf, *middles], [*middles, math.inf]
    return list(zip(lows, highs))


def tile_grid(height: int, width: int, config: SliceConfig) -> list[tuple[tuple, tuple]]:
    """[(window (x0, y0, x1, y1), core (x_low, y_low, x_high, y_high))] of the tiles of an
    image, row by row; windows in pixels (x1, y1 exclusive), cores widened by the margin."""
    size, m = config.tile_size, config.overlap * CORE_MARGIN
    xs, ys = tile_starts(width, size, config.overlap), tile_starts(height, size, config.overlap)
    x_cores, y_cores = core_bounds(xs, size), core_bounds(ys, size)
    return [
        (
            (x0, y0, min(width, x0 + size), min(height, y0 + size)),
            (cx[0] - m, cy[0] - m, cx[1] + m, cy[1] + m),
        )
        for y0, cy in zip(ys, y_cores)
        for x0, cx in zip(xs, x_cores)
    ]


@dataclass
class View:
    """One input of the network cut from an item: ``item`` (collated as usual), ``factors``
    (4,) and ``offset`` (4,) taking its boxes to the item's pixels; it keeps the boxes centred
    in ``core`` (item pixels; None: all) and at least ``min_side`` px on their longer side."""

    item: dict
    factors: Tensor
    offset: Tensor
    core: tuple[float, float, float, float] | None = None
    min_side: float = 0.0

    def place(self, boxes: Tensor, *rest: Tensor) -> tuple[Tensor, ...]:
        """(n, 4) boxes in view pixels and per-box columns -> those kept, in item pixels."""
        boxes = boxes.float() * self.factors + self.offset
        keep = torch.ones(len(boxes), dtype=torch.bool)
        if self.core is not None:
            cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
            x_low, y_low, x_high, y_high = self.core
            keep &= (cx >= x_low) & (cx < x_high) & (cy >= y_low) & (cy < y_high)
        if self.min_side > 0:
            keep &= (boxes[:, 2:] - boxes[:, :2]).max(dim=1).values >= self.min_side
        return (boxes[keep], *(t[keep] for t in rest))


def _view_item(item: dict, image: Tensor, scale: float) -> dict:
    """A batch item for ``image`` (3, h, w) cut from ``item``: no GT (its GT stays with the
    item), the item's names, the resize factor from original pixels."""
    return {
        "image": image,
        "boxes": torch.zeros((0, 4)),
        "labels": torch.zeros(0, dtype=torch.int64),
        "ignore": torch.zeros(0, dtype=torch.bool),
        "image_id": item["image_id"],
        "file_name": item["file_name"],
        "scale": scale,
    }


def resized_view(item: dict, resize: Compose | None, min_side: float = 0.0) -> View:
    """The whole item, resized by ``resize`` (as in plain inference; None: as it is)."""
    image, scale = item["image"], float(item.get("scale", 1.0))
    h, w = image.shape[1:]
    if resize is not None:
        pixels = image.permute(1, 2, 0).numpy()  # (h, w, 3) uint8, as the dataset read it
        (pixels, _), factor = resize(pixels, np.zeros((0, 4), np.float32), None)
        image, scale = torch.from_numpy(np.array(pixels)).permute(2, 0, 1), scale * factor
    vh, vw = image.shape[1:]
    factors = torch.tensor([w / vw, h / vh, w / vw, h / vh])  # as runner.to_original_pixels
    return View(_view_item(item, image, scale), factors, torch.zeros(4), None, min_side)


def make_views(item: dict, config: SliceConfig, resize: Compose | None) -> list[View]:
    """The views of one item: itself resized when it fits in a tile; else its tiles at native
    resolution, and with ``full_view`` itself resized, for its objects over ``overlap``."""
    image = item["image"]
    h, w = image.shape[1:]
    if not config.applies(h, w):
        return [resized_view(item, resize)]
    scale = float(item.get("scale", 1.0))
    views = [
        View(
            _view_item(item, image[:, y0:y1, x0:x1].clone(), scale),
            torch.ones(4),
            torch.tensor([x0, y0, x0, y0], dtype=torch.float32),
            core,
        )
        for (x0, y0, x1, y1), core in tile_grid(h, w, config)
    ]
    if config.full_view:
        views.append(resized_view(item, resize, min_side=float(config.overlap)))
    return views


@dataclass
class Merge:
    """How an image's views are merged: ``kind`` ``"proposals"`` (class-agnostic) or
    ``"detections"`` (NMS within classes), at ``iou``, keeping the best ``limit`` (None: as
    many as the views keep together)."""

    kind: str
    iou: float
    limit: int | None = None

    def __call__(self, parts: list[tuple[Tensor, ...]], single: bool):
        boxes = torch.cat([p[0] for p in parts])
        scores = torch.cat([p[1] for p in parts])
        labels = torch.cat([p[2] for p in parts]) if self.kind == "detections" else None
        if single:  # one view (an image that fits in a tile): plain inference's boxes as they are
            order = torch.arange(len(boxes))[: self.limit]
        else:
            groups = labels if labels is not None else torch.zeros(len(boxes), dtype=torch.int64)
            order = best_after_nms(boxes, scores, groups, self.iou, self.limit)
        return self._pack(boxes[order], scores[order], None if labels is None else labels[order])

    def _pack(self, boxes: Tensor, scores: Tensor, labels: Tensor | None):
        """(n, 4), (n,), (n,) -> B = 1 padded to at least one slot."""
        n, pad = len(boxes), max(0, 1 - len(boxes))
        boxes = torch.cat([boxes, torch.zeros((pad, 4))])[None]
        scores = torch.cat([scores, torch.zeros(pad)])[None]
        num = torch.tensor([n])
        if labels is None:
            return Proposals(boxes, scores, torch.zeros(scores.shape, dtype=torch.int64), num)
        return Detections(boxes, scores, torch.cat([labels, labels.new_zeros(pad)])[None], num)


def best_after_nms(
    boxes: Tensor, scores: Tensor, groups: Tensor, iou: float, limit: int | None
) -> Tensor:
    """``batched_nms(boxes, scores, groups, iou)[:limit]``, without the NMS of every box: greedy
    NMS keeps or drops a box by the better-scored boxes alone, so NMS of the best m boxes
    decides each of them as NMS of all does (boxes of equal scores may be taken in another
    order). m grows from 4 ``limit`` until ``limit`` boxes are kept or every box is in. (The
    126 tiles of a 6000x4000 image keeping 3000 proposals each gave one NMS 378,000 boxes:
    320 s on a CPU.)"""
    if limit is None or len(boxes) <= 4 * limit:
        return batched_nms(boxes, scores, groups, iou)[:limit]  # by decreasing score
    ranked = scores.argsort(descending=True, stable=True)
    best = 4 * limit
    while True:
        head = ranked[:best]
        kept = head[batched_nms(boxes[head], scores[head], groups[head], iou)]
        if len(kept) >= limit or best >= len(ranked):
            return kept[:limit]
        best *= 4


@dataclass
class _Image:
    """An item on its way: its ``meta`` (without the image), its views, their kept outputs."""

    meta: dict
    views: list[View]
    parts: list[tuple[Tensor, ...]] = field(default_factory=list)


def _only(items: list):
    return items[0]


def _image_meta(item: dict) -> dict:
    """The item without its image, at the size it was given (as ``batching``'s meta)."""
    meta = {k: v for k, v in item.items() if k not in ("image", "proposals")}
    meta["size"] = tuple(item["image"].shape[1:])
    meta.setdefault("orig_size", meta["size"])
    return meta


def _run_views(forward, pending: list[tuple[_Image, View]], device, precision) -> None:
    """One batch of views through ``forward``; each view's kept boxes go to its image."""
    batch = collate([view.item for _, view in pending]).to(device)
    with precision:
        output = to_host(forward(batch)).get()
    for (image, view), found in zip(pending, output.per_image()):
        image.parts.append(view.place(*(t.cpu() for t in found)))


@torch.no_grad()
def sliced_batches(
    forward: Callable,
    dataset: Dataset,
    config: SliceConfig,
    merge: Merge,
    *,
    resize: Compose | None,
    batch_size: int,
    device: torch.device,
    precision: contextlib.AbstractContextManager | None = None,
    num_workers: int = 0,
    skipped: list[str] | None = None,
    progress: bool = False,
    desc: str = "running",
) -> Iterator[tuple[list[dict], Proposals | Detections]]:
    """As ``runner.run_batches``, one image at a time: ([meta], merged output with B = 1) for
    each readable item of ``dataset`` (at native resolution), in order; boxes in the item's
    pixels (``meta["size"]``). ``batch_size`` views (tiles of one or more images) per forward.
    """
    check_count("batch_size", batch_size)
    precision = precision or contextlib.nullcontext()
    loader = DataLoader(dataset, batch_size=1, num_workers=num_workers, collate_fn=_only)
    images: deque[_Image] = deque()
    pending: list[tuple[_Image, View]] = []
    # on the CPU a part batch costs its share; a GPU's full batches of several images' tiles
    # are worth waiting one image for
    flush = torch.device(device).type != "cuda"
    readable, unreadable = 0, []
    for item in tqdm(loader, total=len(dataset), desc=desc, disable=not progress):
        if not isinstance(item, dict):  # Unreadable: reported here, not in a worker
            report_skipped([str(item)])
            unreadable.append(str(item))
            if skipped is not None:
                skipped.append(str(item))
            continue
        readable += 1
        image = _Image(_image_meta(item), make_views(item, config, resize))
        images.append(image)
        pending += [(image, view) for view in image.views]
        while len(pending) >= batch_size:
            _run_views(forward, pending[:batch_size], device, precision)
            del pending[:batch_size]
        if flush and pending and len(image.views) >= batch_size:  # its last tiles now: a large
            _run_views(forward, pending, device, precision)  # image's results as soon as it is
            pending.clear()  # done, for a part batch's cost
        yield from _finished(images, merge)
    if pending:
        _run_views(forward, pending, device, precision)
    yield from _finished(images, merge)
    if readable == 0:
        first = f" (first: {unreadable[0]})" if unreadable else ""
        raise DataError(f"no readable image among the {len(dataset)} given{first}")


def _finished(images: deque[_Image], merge: Merge) -> Iterator[tuple[list[dict], object]]:
    """The leading images whose every view has run, merged, in input order."""
    while images and len(images[0].parts) == len(images[0].views):
        image = images.popleft()
        yield [image.meta], merge(image.parts, single=len(image.views) == 1)
