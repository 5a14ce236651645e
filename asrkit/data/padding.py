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


def pad_labels(sequences: Sequence[Sequence[int]]) -> torch.Tensor:
    """Right-pad token id lists with :data:`IGNORE_INDEX`."""
    longest = max(len(sequence) for sequence in sequences)
    labels = torch.full((len(sequences), longest), IGNORE_INDEX, dtype=torch.long)
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


def padding_fraction(lengths: Sequence[int]) -> float:
    """Share of a padded batch that is padding: 1 - real samples / (examples x longest)."""
    return 1.0 - sum(lengths) / (len(lengths) * max(lengths)) if lengths and max(lengths) else 0.0


def pad_waveforms(
    waveforms: Sequence[np.ndarray], normalize: bool = True, return_attention_mask: bool = True
) -> dict[str, Any]:
    """Raw waveforms as one zero-padded batch, each normalised over its own samples when ``normalize``.

    The normalisation is ``Wav2Vec2FeatureExtractor``'s (zero mean, unit variance, eps 1e-7, padding
    excluded), so a batch here gives the model what the exported processor gives it one file at a time.
    Returns ``input_values``, ``input_lengths`` (samples), ``padding_fraction`` and, when asked,
    ``attention_mask`` (models with a group-norm front end, such as wav2vec2-base, are trained without).
    """
    lengths = [len(waveform) for waveform in waveforms]
    values = torch.zeros(len(waveforms), max(lengths), dtype=torch.float32)
    for row, waveform in enumerate(waveforms):
        samples = torch.from_numpy(np.asarray(waveform, dtype=np.float32))
        if normalize:
            samples = (samples - samples.mean()) / torch.sqrt(samples.var(unbiased=False) + 1e-7)
        values[row, : len(samples)] = samples
    batch: dict[str, Any] = {
        "input_values": values,
        "input_lengths": torch.tensor(lengths, dtype=torch.long),
        "padding_fraction": padding_fraction(lengths),
    }
    if return_attention_mask:
        positions = torch.arange(max(lengths))[None, :]
        batch["attention_mask"] = (positions < batch["input_lengths"][:, None]).long()
    return batch
