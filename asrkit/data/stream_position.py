"""Where each worker of a rank stands in the training stream, saved in checkpoints so a run resumes there.

Every training example carries its worker's ``IterableDataset.state_dict()`` after it; the collate step
attaches the last one to the batch (:class:`asrkit.data.streaming.StreamCollator`), :class:`StreamProgress`
takes it off when the batch is trained on and saves one position per rank and worker in the Lightning
checkpoint (via the datamodule's ``state_dict``).
"""

from __future__ import annotations

import logging
from typing import Any

import torch

log = logging.getLogger(__name__)

STREAM_POSITION = "stream_position"  # batch key added by StreamCollator, removed by StreamProgress.record


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
