"""Deterministic, resumable, shardable batching over in-memory datasets.

The order of epoch ``e`` is a pure function of (seed, e), so a resumed run skips exactly the batches it already
did, and each DDP rank takes its own interleaved slice of the same permutation.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from convgen.data.datasets import ArrayDataset


class BatchLoader:
    def __init__(
        self,
        dataset: ArrayDataset,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size

    def indices(self, epoch: int) -> torch.Tensor:
        n = len(self.dataset)
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(n, generator=gen)
        else:
            order = torch.arange(n)
        per_rank = n // self.world_size if self.world_size > 1 else n
        return order[self.rank :: self.world_size][:per_rank]

    def __len__(self) -> int:
        per_rank = len(self.dataset) // self.world_size if self.world_size > 1 else len(self.dataset)
        full, rest = divmod(per_rank, self.batch_size)
        return full + (0 if self.drop_last or rest == 0 else 1)

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        idx = self.indices(epoch)
        for b in range(start, len(self)):
            yield self.dataset.batch(idx[b * self.batch_size : (b + 1) * self.batch_size])
