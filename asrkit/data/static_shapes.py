"""``data.static_shapes``: training batches of a few fixed shapes, for Gaudi (HPU graphs) and ``torch.compile``.

A graph compiler compiles once per input shape; batches padded to their longest utterance and label give it a
new shape at almost every step (recompiles are what make dynamic shapes slow on HPU). With static shapes:

- audio is padded up to an *edge*, the longest utterance of its duration bucket
  (:class:`asrkit.data.sampler.DurationBucketBatchSampler`; without ``data.bucketing`` there is one bucket, so
  one edge: the longest training utterance), plus :data:`SLACK_SECONDS` for durations read from metadata, rounded
  up to :data:`QUANTUM` samples (a batch longer than its bucket's edge, from speed perturbation, takes the next
  edge up). Whisper's features always span the model's window: its audio shape is fixed anyway.
- labels are padded to one length: the model's limit where it has one (Whisper: ``model.max_label_length``,
  which the drop rule already enforces), else the longest encoded training label (CTC), measured when the
  training loader is made;
- each bucket's incomplete batch is left out (the sampler's ``drop_last``): at most ``batch size - 1``
  examples per bucket per epoch, a different draw each epoch. So an epoch's batches take at most one shape per
  bucket (:func:`batch_shapes` counts them; ``benchmarks/compute_options.py`` prints the count).

Padding is inert: the attention mask / frame lengths (audio) and the ignore index (labels) keep it out of the
loss (tests/test_static_shapes.py checks that the loss of a batch padded to its edge equals that of the same
batch padded to its longest, for both families).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from asrkit.data.collator import Collator

log = logging.getLogger(__name__)

SLACK_SECONDS = 0.01  # durations from a metadata column may be rounded (to ms) or off by a resampled sample
QUANTUM = 320  # samples an edge is rounded up to: 20 ms at 16 kHz, one wav2vec2 frame


@dataclass(frozen=True)
class StaticShapes:
    """The audio lengths (samples, ascending) a training batch is padded up to, and the label length."""

    audio_edges: tuple[int, ...]
    label_length: int

    def audio_length(self, longest: int) -> int:
        """The first edge that holds ``longest`` samples (past the last one: the longest, with a warning)."""
        for edge in self.audio_edges:
            if longest <= edge:
                return edge
        log.warning(
            "data.static_shapes: a batch of %d samples is longer than the last edge (%d): padded to its longest, a "
            "new shape (durations in the data's metadata shorter than the audio?)",
            longest,
            self.audio_edges[-1],
        )
        return longest


def audio_edges(
    durations: Sequence[float], buckets: Sequence[Sequence[int]], sampling_rate: int, max_seconds: float | None = None
) -> tuple[int, ...]:
    """Each bucket's longest duration as a padded length in samples (see the module docstring); with
    ``max_seconds`` (the longest that speed perturbation may make an utterance), the last edge reaches that far."""
    seconds = [max(durations[i] for i in bucket) for bucket in buckets if bucket]
    if max_seconds is not None and math.isfinite(max_seconds):
        seconds[-1] = max(seconds[-1], max_seconds)

    def samples(value: float) -> int:
        return math.ceil(math.ceil((value + SLACK_SECONDS) * sampling_rate) / QUANTUM) * QUANTUM

    return tuple(sorted({samples(value) for value in seconds}))


def label_length(collator: Collator, transcripts: Iterable[str]) -> int:
    """The model's label limit where it has one, else the longest encoded training transcript (tokens)."""
    if collator.max_label_length is not None:
        return collator.max_label_length
    longest = max((len(ids) for ids in collator.encode_text(list(transcripts))), default=0)
    if longest == 0:
        raise ValueError("data.static_shapes=true: the training transcripts give no labels to size the batches by")
    return longest


def check_collator(collator: Collator) -> None:
    """A collator that cannot pad to given lengths is refused, in one line naming the key."""
    if not getattr(collator, "supports_static_shapes", False):
        raise ValueError(
            f"data.static_shapes=true: {type(collator).__name__} has no static-shape mode (Whisper and CTC "
            "fine-tuning have one); set data.static_shapes=false"
        )


class StaticShapeCollator:
    """The model's collator, told to pad each training batch to :class:`StaticShapes`."""

    def __init__(self, collator: Collator, shapes: StaticShapes) -> None:
        check_collator(collator)
        self.collator = collator
        self.shapes = shapes

    def __call__(self, examples: list[dict[str, Any] | None]) -> dict[str, Any] | None:
        longest = max((len(example["audio"]) for example in examples if example is not None), default=0)
        if not longest:
            return self.collator(examples)
        length = self.shapes.audio_length(longest)
        return self.collator(examples, audio_length=length, label_length=self.shapes.label_length)


def batch_shapes(batches: Iterable[dict[str, Any] | None]) -> set[tuple[tuple[str, tuple[int, ...]], ...]]:
    """The distinct shapes of a stream of batches: the shapes of their tensors, by name."""
    shapes = set()
    for batch in batches:
        if batch is not None:
            shapes.add(tuple(sorted((k, tuple(v.shape)) for k, v in batch.items() if isinstance(v, torch.Tensor))))
    return shapes
