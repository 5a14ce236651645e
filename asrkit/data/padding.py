"""Model-free batch building: padding of waveforms and label ids, and the fields every batch carries.

The collators themselves live with their models (:mod:`asrkit.models.whisper_collator`,
:mod:`asrkit.models.ctc`, :mod:`asrkit.models.pretrain_collator`); what they need from :mod:`asrkit.data` is
here, and :class:`asrkit.data.collator.Collator` says what the datamodule needs from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

IGNORE_INDEX = -100  # label positions the loss skips


def pad_labels(sequences: Sequence[Sequence[int]], length: int | None = None) -> torch.Tensor:
    """Right-pad token id lists with :data:`IGNORE_INDEX`, to the longest or to ``length`` (static shapes)."""
    longest = max(len(sequence) for sequence in sequences)
    if length is not None and length < longest:
        raise ValueError(f"a label of {longest} tokens does not fit the static label length {length}")
    labels = torch.full((len(sequences), length or longest), IGNORE_INDEX, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        labels[row, : len(sequence)] = torch.as_tensor(sequence, dtype=torch.long)
    return labels


def batch_fields(examples: list[dict[str, Any]], num_skipped: int, sampling_rate: int) -> dict[str, Any]:
    """What every batch carries besides its model inputs: ``indices`` and ``references`` (for evaluation),
    ``num_samples`` and ``audio_seconds`` (throughput), and ``num_skipped`` (examples dropped when read: files
    that failed to decode, silence; their reasons reach metrics.json through :mod:`asrkit.data.drops`)."""
    return {
        "indices": [example["index"] for example in examples],
        "references": [example["reference"] for example in examples],
        "num_samples": len(examples),
        "audio_seconds": sum(len(example["audio"]) for example in examples) / sampling_rate,
        "num_skipped": num_skipped,
    }


def padding_fraction(lengths: Sequence[int], padded: int | None = None) -> float:
    """Share of a padded batch that is padding: 1 - real samples / (examples x ``padded``, by default the longest)."""
    padded = max(padded or 0, max(lengths, default=0))
    return 1.0 - sum(lengths) / (len(lengths) * padded) if lengths and padded else 0.0


def pad_waveforms(
    waveforms: Sequence[np.ndarray],
    normalize: bool = True,
    return_attention_mask: bool = True,
    length: int | None = None,
) -> dict[str, Any]:
    """Raw waveforms as one zero-padded batch (to the longest, or to ``length`` samples: static shapes), each
    normalised over its own samples when ``normalize``.

    The normalisation is ``Wav2Vec2FeatureExtractor``'s (zero mean, unit variance, eps 1e-7, padding
    excluded), so a batch here gives the model what the exported processor gives it one file at a time.
    Returns ``input_values``, ``input_lengths`` (samples), ``padding_fraction`` and, when asked,
    ``attention_mask`` (models with a group-norm front end, such as wav2vec2-base, are trained without).
    """
    lengths = [len(waveform) for waveform in waveforms]
    if length is not None and length < max(lengths):
        raise ValueError(f"audio of {max(lengths)} samples does not fit the static length {length}")
    padded = length or max(lengths)
    values = torch.zeros(len(waveforms), padded, dtype=torch.float32)
    for row, waveform in enumerate(waveforms):
        samples = torch.from_numpy(np.asarray(waveform, dtype=np.float32))
        if normalize:
            samples = (samples - samples.mean()) / torch.sqrt(samples.var(unbiased=False) + 1e-7)
        values[row, : len(samples)] = samples
    batch: dict[str, Any] = {
        "input_values": values,
        "input_lengths": torch.tensor(lengths, dtype=torch.long),
        "padding_fraction": padding_fraction(lengths, padded),
    }
    if return_attention_mask:
        positions = torch.arange(padded)[None, :]
        batch["attention_mask"] = (positions < batch["input_lengths"][:, None]).long()
    return batch
