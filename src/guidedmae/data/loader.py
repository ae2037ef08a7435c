"""The loader that shards, shuffles and resumes a data set: one per epoch, any number of processes.

Every sample is augmented with its own generator, derived from (seed, epoch, index) by its data set: a
sample comes out the same whatever the number of workers or the batch it is resumed from. With persistent
workers (data.persistent_workers) one loader serves the whole run; its workers learn each epoch from the
samples they are asked for, (epoch, index) pairs, so the batches are those of a loader built per epoch.
"""

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from guidedmae.data.datasets import SizedDataset
from guidedmae.data.seeding import derived_generator
from guidedmae.infra.memory import LOADER_TRIM_THRESHOLD, keep_freed_memory

__all__ = [
    "EpochLoader",
    "ResumableDistributedSampler",
    "build_loader",
    "read_every_sample",
    "reuse_freed_memory",
]


class ResumableDistributedSampler(DistributedSampler):
    """DistributedSampler whose order depends on (seed, epoch) and which can start mid-epoch.

    The data set's indices are shuffled with a generator derived from (seed, epoch), padded by
    repetition (or cut, with drop_last) to a multiple of num_replicas, and dealt out round-robin:
    rank r gets positions r, r + R, r + 2R, ... The first `skip` of this rank's indices are left out,
    so resuming after b batches of size B is skip = b * B.

    A data set stored in shards (it has `shard_sizes`) is dealt whole shards instead, so that each rank
    reads its own files: the shards are shuffled by (seed, epoch) and dealt round-robin, the samples of
    each shard shuffled by (seed, epoch, shard), and each rank's list cut, or wrapped around, to the
    same length. The writer shuffled the samples across shards, so this mixes as well as a global
    shuffle for batches smaller than a shard.
    """

    dataset: SizedDataset

    def __init__(
        self,
        dataset: SizedDataset,
        *,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        skip: int = 0,
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
        )
        if not 0 <= skip <= self.num_samples:
            raise ValueError(f"cannot skip {skip} of the {self.num_samples} samples of rank {rank}")
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        shard_sizes = getattr(self.dataset, "shard_sizes", None)
        if shard_sizes is not None:
            return iter(self._shard_wise_order(shard_sizes)[self.skip :].tolist())
        size = len(self.dataset)
        if self.shuffle:
            order = torch.randperm(size, generator=derived_generator(self.seed, self.epoch))
        else:
            order = torch.arange(size)
        if self.total_size > size:
            order = order.repeat(math.ceil(self.total_size / size))
        shard = order[: self.total_size][self.rank :: self.num_replicas]
        return iter(shard[self.skip :].tolist())

    def _shard_wise_order(self, shard_sizes: tuple[int, ...]) -> Tensor:
        if len(shard_sizes) < self.num_replicas:
            raise ValueError(
                f"{len(shard_sizes)} shards cannot be dealt to {self.num_replicas} processes: write at least "
                "one shard per process (guidedmae data shard --samples-per-shard)"
            )
        starts = np.concatenate([[0], np.cumsum(shard_sizes)])
        shards = torch.arange(len(shard_sizes))
        if self.shuffle:
            shards = shards[torch.randperm(len(shards), generator=derived_generator(self.seed, self.epoch))]
        parts = []
        for shard in shards[self.rank :: self.num_replicas].tolist():
            indices = torch.arange(int(starts[shard]), int(starts[shard + 1]))
            if self.shuffle:
                generator = derived_generator(self.seed, self.epoch, shard)
                indices = indices[torch.randperm(len(indices), generator=generator)]
            parts.append(indices)
        order = torch.cat(parts)
        if len(order) < self.num_samples:
            order = order.repeat(math.ceil(self.num_samples / len(order)))
        return order[: self.num_samples]

    def __len__(self) -> int:
        return self.num_samples - self.skip


def reuse_freed_memory(worker_id: int = 0) -> None:
    """A DataLoader worker's worker_init_fn: keep each sample's freed arrays for the next (guidedmae.infra.memory;
    a worker's memory stays bounded by its peak)."""
    keep_freed_memory(LOADER_TRIM_THRESHOLD)


def build_loader(
    dataset: SizedDataset,
    *,
    batch_size: int,
    num_workers: int,
    shuffle: bool,
    drop_last: bool,
    seed: int,
    epoch: int = 0,
    start_batch: int = 0,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> DataLoader:
    """The batches of `rank` for one epoch, starting at batch `start_batch` (to resume mid-epoch).

    Build one loader per epoch (it is cheap): the epoch sets both the sample order and the
    augmentations, and workers are not persistent, so each new loader hands them the epoch.
    drop_last drops the incomplete last batch (and, across ranks, the samples that do not divide).
    """
    if batch_size < 1 or num_workers < 0 or start_batch < 0:
        got = f"batch_size={batch_size}, num_workers={num_workers}, start_batch={start_batch}"
        raise ValueError(f"need batch_size >= 1, num_workers >= 0 and start_batch >= 0, got {got}")
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    sampler = ResumableDistributedSampler(
        dataset,
        num_replicas=world_size,
        rank=rank,
        shuffle=shuffle,
        seed=seed,
        drop_last=drop_last,
        skip=start_batch * batch_size,
    )
    sampler.set_epoch(epoch)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=False,
        # The loader draws its workers' base seed from this, never from the global RNG.
        generator=derived_generator(seed, epoch),
        worker_init_fn=reuse_freed_memory,
    )


class _EpochTagged(SizedDataset):
    """A data set asked for (epoch, index): each worker's copy takes the epoch before the sample."""

    def __init__(self, dataset: SizedDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> dict[str, Tensor]:
        epoch, index = item
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        return self.dataset[index]


class _EpochTaggedSampler(Sampler):
    """A sampler's indices as (its epoch, index) pairs."""

    def __init__(self, sampler: ResumableDistributedSampler) -> None:
        self.sampler = sampler

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.sampler.epoch, index) for index in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


class EpochLoader:
    """The batches of every epoch of a run (build_loader's), from one loader whose workers persist, or
    from a loader built per epoch. `epoch(e, start_batch)` gives the loader of epoch e from that batch."""

    def __init__(self, dataset: SizedDataset, *, persistent: bool, **options: Any) -> None:
        self.dataset, self.options = dataset, options
        self.persistent = persistent and options["num_workers"] > 0
        if self.persistent:
            self.sampler = ResumableDistributedSampler(
                dataset,
                num_replicas=options["world_size"],
                rank=options["rank"],
                shuffle=options["shuffle"],
                seed=options["seed"],
                drop_last=options["drop_last"],
            )
            self.loader = DataLoader(
                _EpochTagged(dataset),
                batch_size=options["batch_size"],
                sampler=_EpochTaggedSampler(self.sampler),
                num_workers=options["num_workers"],
                drop_last=options["drop_last"],
                pin_memory=options["pin_memory"],
                persistent_workers=True,
                generator=derived_generator(options["seed"], 0),
                worker_init_fn=reuse_freed_memory,
            )

    def epoch(self, epoch: int, start_batch: int = 0) -> DataLoader:
        if not self.persistent:
            return build_loader(self.dataset, epoch=epoch, start_batch=start_batch, **self.options)
        skip = start_batch * self.options["batch_size"]
        if not 0 <= skip <= self.sampler.num_samples:
            raise ValueError(f"cannot skip {skip} of the {self.sampler.num_samples} samples of this rank")
        self.sampler.set_epoch(epoch)
        self.sampler.skip = skip
        return self.loader


def _discard(sample: object) -> None:
    """A sample read only to check that it can be (a module-level function: workers unpickle it)."""


def read_every_sample(dataset: SizedDataset, num_workers: int) -> None:
    """Read every sample of `dataset` once, in `num_workers` worker processes: a sample that cannot be read
    (a broken image, NaN in a .npy) raises its error, naming its file, now rather than when it is used."""
    loader = DataLoader(
        dataset,
        batch_size=None,
        num_workers=num_workers,
        collate_fn=_discard,
        worker_init_fn=reuse_freed_memory,
    )
    for _ in loader:
        pass
