"""The training data stream: a seeded, step-addressable sequence of batches (exact resume) that
is sharded over processes."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler


class StepBatchSampler(Sampler[list[int]]):
    """Batches of a seeded stream of epochs, each a fresh permutation, cut so that global step
    ``s`` always gets the same images: the stream can restart at any step (exact resume) and is
    sharded over ``world`` processes. Indices are encoded ``epoch * n + i`` so that the dataset
    can seed its augmentation by epoch in any worker process (``EpochIndexed``)."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        seed: int,
        start_step: int = 0,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        if n == 0:
            raise ValueError("the training set is empty: no usable images were found")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start_step, self.rank, self.world = start_step, rank, world

    def _epoch(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return [epoch * self.n + int(i) for i in torch.randperm(self.n, generator=g)]

    def __iter__(self) -> Iterator[list[int]]:
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

    def __len__(self) -> int:  # endless: a large number for DataLoader's bookkeeping
        return 2**31


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
