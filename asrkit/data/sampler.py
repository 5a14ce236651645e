"""Duration-bucketed training batches: utterances of similar length share a batch, so little of it is padding.

Utterances are sorted by duration (known before any audio is decoded: the datamodule's ``durations``
come from metadata or file headers) and cut into ``num_buckets`` buckets of equal count. Each epoch,
every bucket is shuffled and cut into batches of ``batch_size`` examples, or fewer where
``max_batch_seconds`` caps the padded audio of a batch (examples x longest utterance); then the
batches of all buckets are shuffled together. The epoch's batching depends only on ``seed`` and the
epoch number (``set_epoch``), so every rank computes the same batches.

Under DDP each rank takes a disjoint share and all ranks take the same number of batches. Batches are
dealt to the ranks in groups of ``num_replicas`` from the same bucket, so the ranks of one step work on
similar lengths and none waits long for the others. An epoch leaves out at most ``num_replicas - 1``
batches (what does not fill a last group); a random few each epoch. One process leaves out none.

Training without bucketing uses it too, with one bucket: a seeded shuffle that a resumed run can continue
in the middle of an epoch (``resume``).

``with_epoch=True`` yields ``(index, epoch)`` pairs instead of indices, so that a dataset that augments its
examples (:mod:`asrkit.data.augment`) knows the epoch in the DataLoader workers: they are persistent (made once,
with a copy of the dataset), and the sampler, which Lightning tells the epoch, runs in the main process.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterator, Sequence

import torch
import torch.distributed
from torch.utils.data import BatchSampler, DistributedSampler, Sampler

log = logging.getLogger(__name__)


def own_generator(seed: int) -> torch.Generator:
    """A DataLoader's own generator: its iterators draw their workers' base seed from it, not from torch's global
    one. Otherwise each new epoch's iterator would move the global generator that dropout and masking draw from,
    and a run resumed mid-training (whose iterator is made at another point) would draw other masks."""
    return torch.Generator().manual_seed(seed)


def _world(sampler: Sampler | None, num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """World size, rank: given, else a DistributedSampler's (Lightning injects one) or torch.distributed's."""
    if num_replicas is not None:
        return num_replicas, rank or 0
    if isinstance(sampler, DistributedSampler):
        return sampler.num_replicas, sampler.rank
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


class DurationBucketBatchSampler(BatchSampler):
    """Batches of indices into a dataset whose utterance ``durations`` (seconds) are known.

    ``sampler`` is there for Lightning: under DDP it re-creates a ``BatchSampler`` subclass with a
    ``DistributedSampler`` in that argument, and only the rank and world size are read from it. Give
    ``num_replicas`` and ``rank`` to set them yourself; otherwise an initialised torch.distributed
    group gives them, else one process is assumed. ``num_buckets=1`` is a plain seeded shuffle.

    ``resume=(epoch, batches)``: the first pass over ``epoch`` (a resumed run's) starts after its first
    ``batches`` batches, the ones trained on before the checkpoint (the order depends only on the seed and the
    epoch). It is an argument, not a setter, because Lightning re-creates the sampler from its arguments.
    """

    def __init__(
        self,
        sampler: Sampler | None,
        durations: Sequence[float],
        batch_size: int,
        num_buckets: int = 20,
        max_batch_seconds: float | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
        resume: tuple[int, int] | None = None,
        with_epoch: bool = False,
    ) -> None:
        if batch_size < 1 or num_buckets < 1:
            raise ValueError(f"data.bucketing: batch size ({batch_size}) and num_buckets ({num_buckets}) must be >= 1")
        if not durations:
            raise ValueError("data.bucketing: no utterances to batch")
        longest = max(durations)
        if max_batch_seconds is not None and max_batch_seconds < longest:
            raise ValueError(
                f"data.bucketing.max_batch_seconds={max_batch_seconds} is shorter than the longest training "
                f"utterance ({longest:.2f} s): raise it or lower data.max_duration_in_seconds"
            )
        self.num_replicas, self.rank = _world(sampler, num_replicas, rank)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} is outside a world of {self.num_replicas} processes")
        # Lightning calls set_epoch on dataloader.sampler and dataloader.batch_sampler.sampler, never on the
        # batch sampler itself: it finds this one's set_epoch as its ``sampler``
        self.sampler = self
        self.durations = list(durations)
        self.batch_size = batch_size
        self.max_batch_seconds = max_batch_seconds
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        self.with_epoch = with_epoch
        self._resume = tuple(resume) if resume else None  # (epoch, batches of it already trained on)
        order = sorted(range(len(self.durations)), key=self.durations.__getitem__)
        count = min(num_buckets, len(order))
        self.buckets = [order[len(order) * b // count : len(order) * (b + 1) // count] for b in range(count)]
        self.bucket_batch_sizes = [self._bucket_batch_size(bucket) for bucket in self.buckets]
        total = sum(len(batches) for batches in self._bucket_batches(random.Random(0)))
        self._length = total // self.num_replicas  # batches per rank, the same every epoch
        log.info(
            "training batches: %s, %d per rank per epoch%s",
            f"{count} duration buckets" if count > 1 else "a seeded shuffle",
            self._length,
            f" ({total % self.num_replicas} left out)" if total % self.num_replicas else "",
        )

    def _bucket_batch_size(self, bucket: list[int]) -> int:
        if self.max_batch_seconds is None:
            return self.batch_size
        longest = max(self.durations[i] for i in bucket)
        return max(1, min(self.batch_size, math.floor(self.max_batch_seconds / longest)))

    def _bucket_batches(self, rng: random.Random) -> list[list[list[int]]]:
        """Per bucket, its batches (shuffled within the bucket when ``shuffle``)."""
        per_bucket = []
        for bucket, size in zip(self.buckets, self.bucket_batch_sizes, strict=True):
            members = list(bucket)
            if self.shuffle:
                rng.shuffle(members)
            batches = [members[start : start + size] for start in range(0, len(members), size)]
            if self.drop_last and batches and len(batches[-1]) < size:
                batches.pop()
            per_bucket.append(batches)
        return per_bucket

    def _groups(self, rng: random.Random) -> list[list[list[int]]]:
        """Groups of ``num_replicas`` batches, each group from one bucket where possible, in random order."""
        groups, leftovers = [], []
        for batches in self._bucket_batches(rng):
            whole = len(batches) - len(batches) % self.num_replicas
            groups += [batches[i : i + self.num_replicas] for i in range(0, whole, self.num_replicas)]
            leftovers += batches[whole:]  # kept in bucket order: neighbours have similar lengths
        surplus = len(leftovers) % self.num_replicas  # left out this epoch, from either end, at random
        start = rng.randint(0, surplus) if self.shuffle and surplus else 0
        stop = start + len(leftovers) - surplus
        groups += [leftovers[i : i + self.num_replicas] for i in range(start, stop, self.num_replicas)]
        if self.shuffle:
            rng.shuffle(groups)
        return groups

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before each epoch: a new shuffle, the same on every rank."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int] | list[tuple[int, int]]]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        skip = self._resume[1] if self._resume is not None and self._resume[0] == self.epoch else 0
        self._resume = None
        for group in self._groups(rng)[skip:]:
            yield [(index, self.epoch) for index in group[self.rank]] if self.with_epoch else group[self.rank]

    def __len__(self) -> int:
        return self._length
