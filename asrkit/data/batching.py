"""Collators: a list of decoded examples in, one padded model batch out (one collator per model family).

Every collator drops the examples whose audio could not be decoded (the dataset yields ``None`` for
them), counts them in ``num_skipped``, and reports what throughput is measured on: ``num_samples``
and ``audio_seconds``. ``indices`` and ``references`` travel with the batch for evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import WhisperFeatureExtractor, WhisperTokenizer

IGNORE_INDEX = -100  # label positions the loss skips


def pad_labels(sequences: Sequence[Sequence[int]]) -> torch.Tensor:
    """Right-pad token id lists with :data:`IGNORE_INDEX`."""
    longest = max(len(sequence) for sequence in sequences)
    labels = torch.full((len(sequences), longest), IGNORE_INDEX, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        labels[row, : len(sequence)] = torch.as_tensor(sequence, dtype=torch.long)
    return labels


def _common_fields(examples: list[dict[str, Any]], num_skipped: int, sampling_rate: int) -> dict[str, Any]:
    return {
        "indices": [example["index"] for example in examples],
        "references": [example["reference"] for example in examples],
        "num_samples": len(examples),
        "audio_seconds": sum(len(example["audio"]) for example in examples) / sampling_rate,
        "num_skipped": num_skipped,
    }


class WhisperCollator:
    """Log-mel features over the model's fixed window, and labels that start after ``<|startoftranscript|>``.

    Labels are ``<|lang|><|task|><|notimestamps|> text <|endoftext|>``: the model prepends the
    decoder start token itself when it shifts labels into decoder inputs.
    """

    def __init__(
        self,
        feature_extractor: WhisperFeatureExtractor,
        tokenizer: WhisperTokenizer,
        max_label_length: int,
        max_input_seconds: float,
    ) -> None:
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        self.max_label_length = max_label_length  # longer training labels are dropped by the datamodule
        self.max_input_seconds = max_input_seconds  # the model's input window; longer audio is dropped
        self.start_token_id = tokenizer.convert_tokens_to_ids("<|startoftranscript|>")

    @property
    def sampling_rate(self) -> int:
        return self.feature_extractor.sampling_rate

    def encode_text(self, texts: list[str]) -> list[list[int]]:
        """Label token ids (with the language/task prefix, without the start token) for each text."""
        encoded = self.tokenizer(texts).input_ids
        return [ids[1:] if ids and ids[0] == self.start_token_id else ids for ids in encoded]

    def __call__(self, examples: list[dict[str, Any] | None]) -> dict[str, Any] | None:
        kept = [example for example in examples if example is not None]
        if not kept:
            return None
        features = self.feature_extractor(
            [example["audio"] for example in kept], sampling_rate=self.sampling_rate, return_tensors="pt"
        )
        batch = _common_fields(kept, len(examples) - len(kept), self.sampling_rate)
        batch["input_features"] = features.input_features
        batch["labels"] = pad_labels(self.encode_text([example["text"] for example in kept]))
        return batch
