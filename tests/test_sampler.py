"""Duration-bucketed batches: each index once per epoch, disjoint DDP shares, less padding, a seconds cap."""

from __future__ import annotations

import random
import statistics

import numpy as np
import pytest
from lightning.fabric.utilities.data import _replace_dunder_methods, _set_sampler_epoch
from lightning.pytorch.trainer.states import RunningStage
from lightning.pytorch.utilities.data import _update_dataloader
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

from asrkit.data.padding import padding_fraction
from asrkit.data.sampler import DurationBucketBatchSampler


def _skewed_durations(count: int = 1000, seed: int = 0) -> list[float]:
    """Seconds, log-normal like real corpora: mostly short utterances, a long tail up to 30 s."""
    rng = np.random.default_rng(seed)
    return [float(d) for d in np.clip(rng.lognormal(1.0, 0.8, count), 0.3, 30.0)]


def _indices(batches: list[list[int]]) -> list[int]:
    return [index for batch in batches for index in batch]


@pytest.mark.parametrize("max_batch_seconds", [None, 60.0])
def test_every_index_once_per_epoch_reshuffled_each_epoch(max_batch_seconds: float | None) -> None:
    durations = _skewed_durations()
    sampler = DurationBucketBatchSampler(None, durations, batch_size=16, max_batch_seconds=max_batch_seconds)
    epochs = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert sorted(_indices(batches)) == list(range(len(durations)))
        epochs.append(batches)
    assert epochs[0] != epochs[1]
    sampler.set_epoch(0)
    assert list(sampler) == epochs[0]  # an epoch's batches depend on the seed and the epoch only


def test_ranks_take_disjoint_shares_of_the_same_size() -> None:
    durations, world = _skewed_durations(999), 3
    shares = [
        list(DurationBucketBatchSampler(None, durations, 16, seed=7, num_replicas=world, rank=rank))
        for rank in range(world)
    ]
    single = list(DurationBucketBatchSampler(None, durations, 16, seed=7))
    assert {len(share) for share in shares} == {len(single) // world}
    seen = [set(_indices(share)) for share in shares]
    for a in range(world):
        for b in range(a + 1, world):
            assert not seen[a] & seen[b], f"ranks {a} and {b} share examples"
    assert len(set().union(*seen)) >= len(durations) - (world - 1) * 16  # at most world-1 batches left out
    # the ranks of one step get batches of similar length, so none waits long for the others
    spread = [
        max(max(durations[i] for i in share[step]) for share in shares)
        / min(max(durations[i] for i in share[step]) for share in shares)
        for step in range(len(shares[0]))
    ]
    assert statistics.median(spread) < 1.5


def test_bucketing_pads_far_less_than_random_batches_on_skewed_lengths() -> None:
    durations = _skewed_durations()
    order = list(range(len(durations)))
    random.Random(0).shuffle(order)
    random_batches = [order[start : start + 16] for start in range(0, len(order), 16)]
    bucketed = list(DurationBucketBatchSampler(None, durations, 16))

    def mean_padding(batches: list[list[int]]) -> float:
        return statistics.mean(padding_fraction([durations[i] for i in batch]) for batch in batches)

    assert mean_padding(random_batches) > 0.4
    assert mean_padding(bucketed) < 0.25 * mean_padding(random_batches)


def test_audio_seconds_cap_bounds_every_batch() -> None:
    durations, cap = _skewed_durations(), 60.0
    batches = list(DurationBucketBatchSampler(None, durations, batch_size=64, max_batch_seconds=cap))
    for batch in batches:
        assert len(batch) <= 64
        assert len(batch) * max(durations[i] for i in batch) <= cap  # the padded audio, so the sum too
    assert max(len(batch) for batch in batches) > 16 > min(len(batch) for batch in batches)
    with pytest.raises(ValueError, match="max_batch_seconds"):
        DurationBucketBatchSampler(None, durations, batch_size=16, max_batch_seconds=5.0)


def test_lightning_ddp_sampler_injection_keeps_the_buckets_and_takes_the_rank() -> None:
    durations = _skewed_durations(200)
    dataset = list(range(len(durations)))
    with _replace_dunder_methods(BatchSampler):  # what Lightning wraps train_dataloader() in
        loader = DataLoader(dataset, batch_sampler=DurationBucketBatchSampler(None, durations, 8, seed=3))
    distributed = DistributedSampler(dataset, num_replicas=2, rank=1, shuffle=True)
    replaced = _update_dataloader(loader, distributed, mode=RunningStage.TRAINING)
    sampler = replaced.batch_sampler
    assert isinstance(sampler, DurationBucketBatchSampler)
    assert (sampler.num_replicas, sampler.rank) == (2, 1)
    expected = DurationBucketBatchSampler(None, durations, 8, seed=3, num_replicas=2, rank=1)
    assert list(sampler) == list(expected)


def test_lightning_sets_the_epoch_of_the_batch_sampler() -> None:
    durations = _skewed_durations(200)
    loader = DataLoader(list(range(200)), batch_sampler=DurationBucketBatchSampler(None, durations, 8))
    first = list(loader.batch_sampler)
    _set_sampler_epoch(loader, 1)  # what Lightning's fit loop calls before each epoch
    assert loader.batch_sampler.epoch == 1 and list(loader.batch_sampler) != first


def test_a_resumed_sampler_continues_its_epoch_after_the_batches_trained_on_also_under_ddp() -> None:
    """resume=(epoch, k) skips the epoch's first k batches once; it survives Lightning re-creating the sampler."""
    durations = _skewed_durations(200)
    whole = DurationBucketBatchSampler(None, durations, 8, seed=3)
    whole.set_epoch(2)
    resumed = DurationBucketBatchSampler(None, durations, 8, seed=3, resume=(2, 5))
    resumed.set_epoch(2)
    assert list(resumed) == list(whole)[5:]
    assert list(resumed) == list(whole)  # the next pass over the epoch is whole again
    other_epoch = DurationBucketBatchSampler(None, durations, 8, seed=3, resume=(1, 5))
    other_epoch.set_epoch(2)
    assert list(other_epoch) == list(whole)

    dataset = list(range(len(durations)))
    with _replace_dunder_methods(BatchSampler):
        sampler = DurationBucketBatchSampler(None, durations, 8, seed=3, resume=(0, 4))
        loader = DataLoader(dataset, batch_sampler=sampler)
    distributed = DistributedSampler(dataset, num_replicas=2, rank=1, shuffle=True)
    replaced = _update_dataloader(loader, distributed, mode=RunningStage.TRAINING).batch_sampler
    assert list(replaced) == list(DurationBucketBatchSampler(None, durations, 8, seed=3, num_replicas=2, rank=1))[4:]
