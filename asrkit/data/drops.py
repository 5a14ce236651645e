"""Drops found while the loaders read, carried to the main process on the batches and added to the counts.

Up front the map-style path drops what headers, duration cells and transcripts show (:mod:`asrkit.data.indexed`).
What is only known once an example is decoded (silence; a file that broke, or whose header was never read
because its duration cell held a number) happens in a DataLoader worker, another process: the loaders' collate
step puts each such drop on its batch under :data:`DROPPED` (a streaming batch also carries the stream's
rule drops since the batch before), and :class:`DropLog` takes them off in ``on_before_batch_transfer``, so
they reach ``excluded``, ``metrics.json`` (``data.dropped.<role>.<reason>``) and the left-out counts.

A drop is counted once per example: a map-style example by its row (an epoch or a validation run that meets
it again adds nothing); a training stream's per pass (a bad example is met, and dropped, on every pass). Each
rank counts what its own loaders met (rank 0 writes metrics.json: under DDP its share of the decode-time drops).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

DROPPED = "dropped"  # batch key: the Drop records of the examples the batch's reading dropped


class Drop(NamedTuple):
    role: str
    key: Hashable  # what tells one example of the role from another (a row; a stream's pass and index)
    reason: str
    name: str  # the file, for the log
    seconds: float | None  # its duration, where known


def attach_drops(batch: dict[str, Any] | None, drops: list[Drop]) -> dict[str, Any] | None:
    """``batch`` with ``drops`` under :data:`DROPPED` (a batch of drops only when the collator made none)."""
    if not drops:
        return batch
    batch = {} if batch is None else batch
    batch[DROPPED] = drops
    return batch


class CountingCollator:
    """A map-style loader's collate step: the model's collator on the decoded examples, the decode-time drops
    (:class:`Drop` items from :class:`asrkit.data.indexed.AudioTextDataset`) attached to the batch."""

    def __init__(self, collator: Callable[[list[dict[str, Any] | None]], dict[str, Any] | None]) -> None:
        self.collator = collator

    def __call__(self, items: list[dict[str, Any] | Drop]) -> dict[str, Any] | None:
        drops = [item for item in items if isinstance(item, Drop)]
        batch = self.collator([None if isinstance(item, Drop) else item for item in items])  # skipped: counted
        return attach_drops(batch, drops)


class DropLog:
    """The drops the loaders met, per role; added to the up-front counts by :meth:`merged`."""

    def __init__(self) -> None:
        self.drops: dict[str, dict[Hashable, Drop]] = {}

    def record(self, batch: Any, sizes: dict[str, int] | None = None) -> Any:
        """Take the drops off a batch (None when nothing else is left of it). ``sizes``: the number of examples
        of each map-style role; when every one of them has been dropped, the run stops with an error."""
        if not isinstance(batch, dict) or DROPPED not in batch:
            return batch
        for drop in batch.pop(DROPPED):
            seen = self.drops.setdefault(drop.role, {})
            if drop.key in seen:
                continue
            seen[drop.key] = drop  # (the loaders log the first files of each reason where they meet them)
            if sizes and len(seen) == sizes.get(drop.role):
                reasons = dict(Counter(d.reason for d in seen.values()))
                raise ValueError(f"{drop.role} split: every example was dropped when it was read (dropped: {reasons})")
        return batch or None

    def merged(self, excluded: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """``excluded`` (per role: utterances, hours, reasons) with the drops met while reading added."""
        merged = {role: dict(entry, reasons=dict(entry["reasons"])) for role, entry in excluded.items()}
        for role, drops in self.drops.items():
            entry = merged.setdefault(role, {"utterances": 0, "hours": 0.0, "reasons": {}})
            entry["utterances"] += len(drops)
            entry["hours"] += sum(d.seconds or 0.0 for d in drops.values()) / 3600
            for reason, count in Counter(d.reason for d in drops.values()).items():
                entry["reasons"][reason] = entry["reasons"].get(reason, 0) + count
        return merged
