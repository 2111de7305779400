"""The training data stream: a seeded, step-addressable sequence of batches (exact resume) that
is sharded over processes, optionally grouped by image orientation."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Dataset, Sampler


class StepBatchSampler(Sampler[list[int]]):
    """Batches of a seeded stream of epochs, each a fresh permutation, cut so that global step
    ``s`` always gets the same images: the stream can restart at any step (exact resume) and is
    sharded over ``world`` processes. Indices are encoded ``epoch * n + i`` so that the dataset
    can seed its augmentation by epoch in any worker process (``EpochIndexed``).

    With ``groups`` (one group id per item: ``DetectionDataset.aspect_groups``, wide or tall)
    every global batch holds one group's items, as detectron2's aspect-ratio grouping and
    torchvision's ``GroupedBatchSampler`` do: each epoch's permutation is dealt into one queue
    per group and a queue gives a batch when it holds one; what is left at an epoch's end waits
    for the next. A batch of wide images then pads to about its own size instead of a square
    (COCO128 at 800 px: 60 % of the padded pixels were image, docs/performance.md), and
    training meets fewer batch sizes. A group with fewer items than a global batch joins the
    largest. Resuming replays the deal up to the step (cheap: indices only)."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        seed: int,
        start_step: int = 0,
        rank: int = 0,
        world: int = 1,
        groups: Sequence[int] | None = None,
    ) -> None:
        if n == 0:
            raise ValueError("the training set is empty: no usable images were found")
        if groups is not None and len(groups) != n:
            raise ValueError(f"groups: expected one group per item ({n}), got {len(groups)}")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start_step, self.rank, self.world = start_step, rank, world
        self.groups = None if groups is None else _merge_small_groups(groups, batch_size * world)

    def _epoch(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return [epoch * self.n + int(i) for i in torch.randperm(self.n, generator=g)]

    def __iter__(self) -> Iterator[list[int]]:
        if self.groups is not None:
            yield from self._grouped()
            return
        global_batch = self.batch_size * self.world
        position = self.start_step * global_batch + self.rank * self.batch_size
        epoch, offset = divmod(position, self.n)
        stream = self._epoch(epoch)[offset:]
        while True:
            while len(stream) < global_batch:
                epoch += 1
                stream += self._epoch(epoch)
            yield stream[: self.batch_size]
            stream = stream[global_batch:]

    def _grouped(self) -> Iterator[list[int]]:
        """This rank's share of each global batch of one group, from ``start_step`` on."""
        batches = self._dealt()
        for _ in range(self.start_step):  # the deal replayed up to the resume step
            next(batches)
        first = self.rank * self.batch_size
        for batch in batches:
            yield batch[first : first + self.batch_size]

    def _dealt(self) -> Iterator[list[int]]:
        """Every global batch: each epoch's permutation dealt into one queue per group."""
        global_batch = self.batch_size * self.world
        queues: dict[int, list[int]] = {}
        epoch = 0
        while True:
            for key in self._epoch(epoch):
                queue = queues.setdefault(self.groups[key % self.n], [])
                queue.append(key)
                if len(queue) == global_batch:
                    yield queue.copy()
                    queue.clear()
            epoch += 1

    def __len__(self) -> int:  # endless: a large number for DataLoader's bookkeeping
        return 2**31


def _merge_small_groups(groups: Sequence[int], global_batch: int) -> list[int]:
    """The groups, those with fewer items than a global batch merged into the largest: their
    queue would otherwise fill across epochs with copies of the same few images."""
    counts = Counter(groups)
    largest = counts.most_common(1)[0][0]
    return [g if counts[g] >= global_batch else largest for g in groups]


class EpochIndexed(Dataset):
    """Decodes ``epoch * n + i`` and tells the dataset the epoch before fetching item i."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int):
        epoch, i = divmod(key, len(self.dataset))
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return self.dataset[i]
