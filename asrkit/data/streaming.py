"""Streaming (``data.streaming=true``): examples are read, filtered and decoded while training consumes them.

Nothing is downloaded or indexed up front: each split is a ``datasets.IterableDataset`` (``load_dataset(...,
streaming=True)``), and :class:`AudioTextStream` filters every example as it arrives by the drop rule both
paths share (:mod:`asrkit.data.filtering`); audio that cannot be used (a missing, empty, unreadable or silent
file...) yields ``None``, which the collator counts as a skipped example. Drops are logged at the end of each
pass, naming the first files of each reason, and ride on the batches to the main process
(:mod:`asrkit.data.drops`), where they are counted in ``metrics.json``. A pass in which no example is kept is
an error that names the split and the reasons.

- Shuffling: a buffer of ``data.shuffle_buffer_size`` examples (and a shuffled shard order), seeded by
  ``data.shuffle_seed``, reshuffled on every pass over the data (``IterableDataset.set_epoch``).
- Training never runs out: at the end of a pass the stream starts the next one, so ranks that keep
  different numbers of examples after filtering never wait for each other; ``trainer.max_steps`` ends
  training (Lightning sees one endless epoch). Validation and test streams are read once.
- DDP: each rank reads its own part (``datasets.distributed.split_dataset_by_node``: whole shards when
  their number divides by the world size, else every world-size-th example), and each DataLoader worker
  its own shards within that.
- Resuming: every training example carries the ``IterableDataset.state_dict()`` of its worker's stream
  after it; the collate step attaches the last one to the batch, the datamodule records it when the batch
  is trained on (:mod:`asrkit.data.stream_position`) and saves one position per rank and worker in the
  Lightning checkpoint. A resumed run loads those states, so each worker continues after the last example that was
  trained on, without reading or decoding the consumed part again (``datasets`` skips finished shards and
  the rows before the position). With a shuffle buffer, the examples that were waiting in the buffer at
  the checkpoint are not seen again in that pass (``datasets`` does not save buffers); nothing is repeated.
  The positions are kept only when the number of ranks and of workers is the same as when they were saved.
- Augmentation (training, when the run augments: :mod:`asrkit.data.augment`): each kept example, with its
  pass as the epoch and a digest of its file as its key (its position depends on the workers).
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import datasets
import torch
from datasets.distributed import split_dataset_by_node
from torch.utils.data import DataLoader

from asrkit.data.audio import audio_name
from asrkit.data.augment import WaveformAugment, stream_key
from asrkit.data.collator import Collator
from asrkit.data.columns import AUDIO, DURATION, TEXT
from asrkit.data.drops import Drop, attach_drops
from asrkit.data.filtering import AUDIO_PROBLEMS, NAMED_FILES, FilterRules, decode_kept, log_drops, row_duration
from asrkit.data.options import DataOptions
from asrkit.data.reading import read_role
from asrkit.data.sampler import own_generator
from asrkit.data.stream_position import STREAM_POSITION, StreamProgress

log = logging.getLogger(__name__)

END = "end of pass"  # the example of the last item of an evaluation pass, which only carries its last drops


def shard_stream(
    dataset: datasets.IterableDataset,
    shuffle_buffer_size: int = 0,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    max_samples: int | None = None,
) -> datasets.IterableDataset:
    """The first ``max_samples`` examples, shuffled with a seeded buffer, and this rank's part of them.

    Shuffling comes before the split by node and uses the same seed on every rank, so that the ranks
    agree on the shard order and their parts are disjoint.
    """
    if max_samples is not None:
        dataset = dataset.take(max_samples)
    if shuffle_buffer_size > 0:
        dataset = dataset.shuffle(seed=seed, buffer_size=shuffle_buffer_size)
    if world_size > 1:
        dataset = split_dataset_by_node(dataset, rank=rank, world_size=world_size)
    return dataset


class AudioTextStream(torch.utils.data.IterableDataset):
    """Yields ``(example, position, drops)``: the example dict the collators take (or ``None`` for audio that
    cannot be used), for an ``endless`` (training) stream where its worker's stream stands after it, and the
    :class:`asrkit.data.drops.Drop` records of the examples dropped since the item before. An evaluation pass
    ends with ``(END, None, drops)`` when examples were dropped after its last one.

    Each example goes through the drop rule ``rules`` (:mod:`asrkit.data.filtering`); ``encode_text`` measures
    labels when the rule limits their length. ``resume_from`` maps a worker id to the position to continue from.
    ``augment`` augments each kept example (training).
    """

    def __init__(
        self,
        dataset: datasets.IterableDataset,
        name: str,
        sampling_rate: int,
        prepare_text: Callable[[str], str],
        rules: FilterRules,
        encode_text: Callable[[list[str]], list[list[int]]] | None = None,
        endless: bool = False,
        rank: int = 0,
        world_size: int = 1,
        augment: WaveformAugment | None = None,
    ) -> None:
        self.dataset = dataset
        self.name = name
        self.sampling_rate = sampling_rate
        self.prepare_text = prepare_text
        self.rules = rules
        self.encode_text = encode_text
        self.endless = endless
        self.rank, self.world_size = rank, world_size
        self.augment = augment
        self.resume_from: dict[int, dict[str, Any]] = {}

    def plain(self) -> AudioTextStream:
        """This stream without augmentation (what ``ASRDataModule.examples`` reads)."""
        stream = copy.copy(self)
        stream.augment = None
        return stream

    def _examine(
        self, row: dict[str, Any], index: int, data_pass: int
    ) -> tuple[dict[str, Any] | None, str | None, float | None]:
        """The example and ``None``, or ``None`` and the reason it is dropped; and its duration where known."""
        text = self.prepare_text(row[TEXT] or "")
        duration, problem = row_duration(row.get(DURATION), row[AUDIO])
        lengths = self.rules.label_lengths([text], self.encode_text) if self.encode_text and duration else None
        reason = self.rules.reason(duration, text, lengths[0] if lengths else None, problem)
        if reason is not None:
            return None, reason, duration
        audio, reason = decode_kept(row[AUDIO], self.sampling_rate)
        if reason is not None:
            return None, reason, duration
        if self.augment is not None:
            audio = self.augment(audio, stream_key(row[AUDIO]), data_pass)
        return {"index": index, "audio": audio, "text": text, "reference": text}, None, duration  # scored as labelled

    def __iter__(self) -> Iterator[tuple[Any, dict[str, Any] | None, list[Drop]]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        start = self.resume_from.get(worker)
        data_pass = start["pass"] if start else 0
        # datasets keeps the epoch in a tensor shared by all DataLoader workers (for the main process to set
        # between epochs); each worker here moves through its passes on its own, so it needs its own epoch
        dataset = copy.deepcopy(self.dataset)
        pending: list[Drop] = []  # dropped since the last item yielded (a training stream's go on to its next pass)
        while True:
            dataset.set_epoch(data_pass)  # a new shard order and buffer seed on every pass
            count = 0
            if start is not None:
                dataset.load_state_dict(start["state"])
                count = start["count"]
            first, kept, dropped, names = count, 0, Counter(), {}
            for row in dataset:
                state = dataset.state_dict() if self.endless else None
                index = (count * workers + worker) * self.world_size + self.rank  # unique over ranks, workers
                count += 1
                example, reason, seconds = self._examine(row, index, data_pass)
                if reason is not None:
                    dropped[reason] += 1
                    if dropped[reason] <= NAMED_FILES:
                        names.setdefault(reason, []).append(audio_name(row[AUDIO]))
                    pending.append(Drop(self.name, (data_pass, index), reason, audio_name(row[AUDIO]), seconds))
                    if reason not in AUDIO_PROBLEMS:  # the rule's drops take no place in a batch
                        continue
                kept += example is not None
                position = None
                if self.endless:
                    position = {"worker": worker, "workers": workers, "pass": data_pass, "count": count, "state": state}
                yield example, position, pending
                pending = []
            where = f"{self.name} stream, pass {data_pass}, rank {self.rank}, worker {worker}"
            log_drops(where, dropped, count - first, names)
            if kept == 0 and count > first and start is None:
                raise ValueError(
                    f"{self.name} split: no example is left after filtering in a whole pass of the stream "
                    f"({where}; dropped: {dict(dropped)})"
                )
            if not self.endless or (count == first and start is None):  # the end, or no shard for this worker
                if pending:
                    yield END, None, pending
                return
            data_pass, start = data_pass + 1, None


class StreamCollator:
    """The model's collator on the examples, with the stream position after the last one attached."""

    def __init__(self, collator: Callable[[list[dict[str, Any] | None]], dict[str, Any] | None]) -> None:
        self.collator = collator

    def __call__(self, items: list[tuple[Any, dict[str, Any] | None, list[Drop]]]) -> Any:
        batch = self.collator([example for example, _, _ in items if example is not END])
        positions = [position for _, position, _ in items if position is not None]
        if batch is not None and positions:  # a batch of undecodable audio only is re-read on resume
            batch[STREAM_POSITION] = positions[-1]
        return attach_drops(batch, [drop for _, _, drops in items for drop in drops])


def stream_loader(stream: AudioTextStream, batch_size: int, num_workers: int, collator: Any) -> DataLoader:
    """A DataLoader over a stream; each worker reads its own shards (workers beyond the shard count idle)."""
    return DataLoader(
        stream,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=StreamCollator(collator),
        pin_memory=False,
        generator=own_generator(0),  # the order is the stream's; this only keeps torch's global generator still
    )


class StreamingSplits:
    """The streaming provider behind :class:`asrkit.data.datamodule.ASRDataModule` (``data.streaming=true``)."""

    def __init__(self, options: DataOptions, collator: Collator, augment: WaveformAugment | None = None) -> None:
        self.options = options
        self.collator = collator
        self.augment = augment  # of the training examples
        self.prepare_text = options.filters.prepare_text()
        self.datasets: dict[str, AudioTextStream] = {}  # per role
        self.progress = StreamProgress()
        self.excluded: dict[str, dict[str, Any]] = {}  # not counted up front: each stream logs its drops
        self._rank = (0, 1)

    def prepare(self) -> None:
        pass  # nothing is downloaded or indexed up front

    def setup(self, role: str, rank: int = 0, world_size: int = 1) -> None:
        """This rank's part of a split, filtered and decoded as it is read; training's never ends."""
        if role in self.datasets:
            return
        self._rank = (rank, world_size)
        train = role == "train"
        dataset = shard_stream(
            read_role(self.options, role, self.prepare_text, streaming=True),
            **(self._shuffle() if train else {}),
            rank=rank,
            world_size=world_size,
            max_samples=self.options.source.max_samples(role),
        )
        self.datasets[role] = AudioTextStream(
            dataset,
            role,
            self.collator.sampling_rate,
            self.prepare_text,
            self.options.filters.rules(role, self.collator),
            encode_text=self.collator.encode_text if train else None,
            endless=train,
            rank=rank,
            world_size=world_size,
            augment=self.augment if train else None,
        )

    def _shuffle(self) -> dict[str, int]:
        return {
            "shuffle_buffer_size": self.options.stream.shuffle_buffer_size,
            "seed": self.options.stream.shuffle_seed,
        }

    def training_transcripts(self) -> list[str]:
        """Every prepared training transcript, read once from the stream's text column (unfiltered)."""
        log.info("reading the training transcripts once to build the CTC vocabulary")
        dataset = read_role(self.options, "train", self.prepare_text, streaming=True)
        return [self.prepare_text(row[TEXT] or "") for row in dataset.select_columns([TEXT])]

    def loader(self, role: str, batch_size: int, longest_first: bool = False) -> DataLoader:
        """Batches in the stream's order (``longest_first`` cannot apply: nothing is measured before it is read)."""
        stream = self.datasets[role]
        if role == "train":  # a resumed run continues where the checkpoint's training batches ended
            stream.resume_from = self.progress.resume_positions(*self._rank, self.options.batches.num_workers)
        return stream_loader(stream, batch_size, self.options.batches.num_workers, self.collator)

    def record(self, batch: Any, epoch: int | None) -> Any:
        return self.progress.record(batch)  # a training batch carries its stream position

    def state_dict(self) -> dict[str, Any]:
        """The training stream's position (saved in Lightning checkpoints)."""
        return self.progress.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.progress.load_state_dict(state)
