"""Streaming (``data.streaming=true``): examples are read, filtered and decoded while training consumes them.

Nothing is downloaded or indexed up front: each split is a ``datasets.IterableDataset`` (``load_dataset(...,
streaming=True)``), and :class:`AudioTextStream` filters every example as it arrives, by the duration
column when the source has one, else by its file header, then by transcript and (training) label length,
exactly the rules of the map-style path; unreadable audio yields ``None``, which the collator counts as a
skipped example. Drops are counted and logged at the end of each pass.

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
  is trained on (:class:`StreamProgress`) and saves one position per rank and worker in the Lightning
  checkpoint. A resumed run loads those states, so each worker continues after the last example that was
  trained on, without reading or decoding the consumed part again (``datasets`` skips finished shards and
  the rows before the position). With a shuffle buffer, the examples that were waiting in the buffer at
  the checkpoint are not seen again in that pass (``datasets`` does not save buffers); nothing is repeated.
  The positions are kept only when the number of ranks and of workers is the same as when they were saved.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import datasets
import torch
from datasets.distributed import split_dataset_by_node
from torch.utils.data import DataLoader

from asrkit.data.audio import AudioDecodeError, audio_duration, decode_audio
from asrkit.data.sources import AUDIO, DURATION, TEXT

log = logging.getLogger(__name__)

STREAM_POSITION = "stream_position"  # batch key added by StreamCollator, removed by StreamProgress.record
UNREADABLE = "unreadable audio"


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
    """Yields ``(example, position)`` pairs: the example dict the collators take (or ``None`` for audio that
    cannot be read), and for an ``endless`` (training) stream where its worker's stream stands after it.

    ``collator`` supplies ``encode_text`` and ``max_label_length`` for the label-length filter; pass it
    only for training. ``resume_from`` maps a worker id to the position to continue from.
    """

    def __init__(
        self,
        dataset: datasets.IterableDataset,
        name: str,
        sampling_rate: int,
        prepare_text: Callable[[str], str],
        duration_range: tuple[float, float],
        collator: Any = None,
        require_text: bool = True,
        endless: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.dataset = dataset
        self.name = name
        self.sampling_rate = sampling_rate
        self.prepare_text = prepare_text
        self.duration_range = duration_range
        self.collator = collator
        self.max_label_length = getattr(collator, "max_label_length", None)
        self.require_text = require_text  # false: keep empty transcripts (pre-training)
        self.endless = endless
        self.rank, self.world_size = rank, world_size
        self.resume_from: dict[int, dict[str, Any]] = {}

    def _examine(self, row: dict[str, Any], index: int) -> tuple[dict[str, Any] | None, str | None]:
        """The example and ``None``, or ``None`` and the reason it is dropped."""
        text = self.prepare_text(row[TEXT] or "")
        low, high = self.duration_range
        try:
            duration = row.get(DURATION)
            duration = audio_duration(row[AUDIO]) if duration is None else float(duration)
            if not low <= duration <= high:
                return None, f"duration outside [{low}, {high}] s"
            if not text and self.require_text:
                return None, "empty transcript"
            if self.max_label_length and len(self.collator.encode_text([text])[0]) > self.max_label_length:
                return None, f"label longer than {self.max_label_length} tokens"
            audio = decode_audio(row[AUDIO], self.sampling_rate)
        except AudioDecodeError as error:
            log.warning("skipping undecodable audio: %s", error)
            return None, UNREADABLE
        return {"index": index, "audio": audio, "text": text, "reference": text}, None  # scored as labelled

    def __iter__(self) -> Iterator[tuple[dict[str, Any] | None, dict[str, Any] | None]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        start = self.resume_from.get(worker)
        data_pass = start["pass"] if start else 0
        while True:
            self.dataset.set_epoch(data_pass)  # a new shard order and buffer seed on every pass
            count = 0
            if start is not None:
                self.dataset.load_state_dict(start["state"])
                count = start["count"]
            first, kept, dropped = count, 0, Counter()
            for row in self.dataset:
                state = self.dataset.state_dict() if self.endless else None
                index = (count * workers + worker) * self.world_size + self.rank  # unique over ranks, workers
                count += 1
                example, reason = self._examine(row, index)
                if reason is not None:
                    dropped[reason] += 1
                    if reason != UNREADABLE:
                        continue
                kept += example is not None
                position = None
                if self.endless:
                    position = {"worker": worker, "workers": workers, "pass": data_pass, "count": count, "state": state}
                yield example, position
            for reason, number in dropped.items():
                log.warning(
                    "%s stream, pass %d, rank %d, worker %d: dropped %d of %d examples: %s",
                    self.name,
                    data_pass,
                    self.rank,
                    worker,
                    number,
                    count - first,
                    reason,
                )
            if not self.endless or (count == first and start is None):  # the end, or no shard for this worker
                return
            if kept == 0 and start is None:
                raise ValueError(
                    f"{self.name} stream: no example is left after filtering in a whole pass (dropped: {dict(dropped)})"
                )
            data_pass, start = data_pass + 1, None


class StreamCollator:
    """The model's collator on the examples, with the stream position after the last one attached."""

    def __init__(self, collator: Callable[[list[dict[str, Any] | None]], dict[str, Any] | None]) -> None:
        self.collator = collator

    def __call__(self, items: list[tuple[dict[str, Any] | None, dict[str, Any] | None]]) -> Any:
        batch = self.collator([example for example, _ in items])
        positions = [position for _, position in items if position is not None]
        if batch is not None and positions:  # a batch of undecodable audio only is re-read on resume
            batch[STREAM_POSITION] = positions[-1]
        return batch


def stream_loader(stream: AudioTextStream, batch_size: int, num_workers: int, collator: Any) -> DataLoader:
    """A DataLoader over a stream; each worker reads its own shards (workers beyond the shard count idle)."""
    return DataLoader(
        stream, batch_size=batch_size, num_workers=num_workers, collate_fn=StreamCollator(collator), pin_memory=False
    )


class StreamProgress:
    """Where each worker of this rank stands in the training stream, as of the last batch trained on."""

    def __init__(self) -> None:
        self.positions: dict[int, dict[str, Any]] = {}
        self.saved_ranks: list[dict[int, dict[str, Any]]] | None = None

    def record(self, batch: Any) -> Any:
        """Take the position off a training batch about to be trained on (``on_before_batch_transfer``)."""
        if isinstance(batch, dict) and STREAM_POSITION in batch:
            position = batch.pop(STREAM_POSITION)
            self.positions[position["worker"]] = position
        return batch

    def state_dict(self) -> dict[str, Any]:
        """Every rank's positions (gathered: only rank 0 writes the checkpoint); call on all ranks."""
        ranks = [self.positions]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            ranks = [{} for _ in range(torch.distributed.get_world_size())]
            torch.distributed.all_gather_object(ranks, self.positions)
        return {"ranks": ranks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.saved_ranks = [{int(worker): p for worker, p in rank.items()} for rank in state.get("ranks", [])]

    def resume_positions(self, rank: int, world_size: int, num_workers: int) -> dict[int, dict[str, Any]]:
        """The positions saved for this rank, if the run has the same ranks and workers as the saved one."""
        if not self.saved_ranks or not any(self.saved_ranks):
            return {}
        workers = max(num_workers, 1)
        saved_workers = {p["workers"] for positions in self.saved_ranks for p in positions.values()}
        if len(self.saved_ranks) != world_size or saved_workers != {workers}:
            log.warning(
                "the checkpoint's stream positions come from %d rank(s) with %s DataLoader worker(s); "
                "this run has %d with %d: the training stream starts again from its beginning",
                len(self.saved_ranks),
                sorted(saved_workers),
                world_size,
                workers,
            )
            return {}
        self.positions = dict(self.saved_ranks[rank])  # saved again as they are until a worker moves on
        log.info("resuming the training stream at %s", {w: (p["pass"], p["count"]) for w, p in self.positions.items()})
        return self.positions
