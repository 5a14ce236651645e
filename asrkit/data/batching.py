"""Collators: a list of decoded examples in, one padded model batch out (one collator per model family).

Every collator drops the examples whose audio could not be decoded (the dataset yields ``None`` for
them), counts them in ``num_skipped``, and reports what throughput is measured on: ``num_samples``
and ``audio_seconds``. ``indices`` and ``references`` travel with the batch for evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, WhisperFeatureExtractor, WhisperTokenizer

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


def whisper_inputs(extractor: WhisperFeatureExtractor, audios: Sequence[np.ndarray]) -> dict[str, Any]:
    """Whisper's inputs for a batch: every utterance in the model's window, and the longer ones whole.

    ``input_features`` are the log-mel features of every utterance padded or cut to the window (what
    training and short-form decoding use). Utterances longer than the window also go, uncut, into
    ``long_form``: ``rows`` (their positions in the batch), ``input_features`` padded to the longest of
    them and ``attention_mask`` (its frames), the inputs of transformers' long-form sequential decoding.
    """
    rate = extractor.sampling_rate
    batch = {"input_features": extractor(audios, sampling_rate=rate, return_tensors="pt").input_features}
    rows = [row for row, audio in enumerate(audios) if len(audio) > extractor.n_samples]
    if rows:
        whole = extractor(
            [audios[row] for row in rows],
            sampling_rate=rate,
            return_tensors="pt",
            truncation=False,
            padding="longest",
            return_attention_mask=True,
        )
        batch["long_form"] = {
            "rows": rows,
            "input_features": whole.input_features,
            "attention_mask": whole.attention_mask,
        }
    return batch


class WhisperCollator:
    """Log-mel features over the model's fixed window, and labels that start after ``<|startoftranscript|>``.

    Labels are ``<|lang|><|task|><|notimestamps|> text <|endoftext|>`` (``<|notimestamps|> text
    <|endoftext|>`` for an English-only model): the model prepends the decoder start token itself when it
    shifts labels into decoder inputs. Training uses ``input_features`` (training data is never longer than
    the window); evaluation also finds the utterances longer than the window, whole, under ``long_form``
    (:func:`whisper_inputs`).
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
        self.max_input_seconds = max_input_seconds  # the model's window; longer training audio is dropped
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
        batch = _common_fields(kept, len(examples) - len(kept), self.sampling_rate)
        batch |= whisper_inputs(self.feature_extractor, [example["audio"] for example in kept])
        batch["labels"] = pad_labels(self.encode_text([example["text"] for example in kept]))
        return batch


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


class Wav2Vec2CTCCollator:
    """Normalised raw waveforms (:func:`pad_waveforms`) and character labels padded with :data:`IGNORE_INDEX`.

    The tokenizer is either given, or built from the training transcripts: the datamodule hands them
    to :meth:`build_vocabulary` before it encodes any text, and ``vocabulary`` (texts -> tokenizer,
    see :func:`asrkit.data.vocab.build_ctc_tokenizer`) makes the tokenizer.
    """

    def __init__(
        self,
        feature_extractor: Wav2Vec2FeatureExtractor,
        tokenizer: Wav2Vec2CTCTokenizer | None = None,
        vocabulary: Callable[[list[str]], Wav2Vec2CTCTokenizer] | None = None,
    ) -> None:
        if tokenizer is None and vocabulary is None:
            raise ValueError("Wav2Vec2CTCCollator needs a tokenizer or a vocabulary builder")
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        self.vocabulary = None if tokenizer is not None else vocabulary

    @property
    def sampling_rate(self) -> int:
        return self.feature_extractor.sampling_rate

    def build_vocabulary(self, texts: list[str]) -> None:
        """Make the tokenizer from the prepared training transcripts (kept as it is when one was given)."""
        if self.vocabulary is None:
            return
        tokenizer = self.vocabulary(texts)
        if self.tokenizer is not None and tokenizer.get_vocab() != self.tokenizer.get_vocab():
            raise ValueError(
                "the training transcripts changed after the CTC vocabulary was built from them; "
                "build one datamodule per module"
            )
        self.tokenizer = tokenizer

    def encode_text(self, texts: list[str]) -> list[list[int]]:
        """Character ids for each text (spaces become the word delimiter, unknown characters ``[UNK]``)."""
        if self.tokenizer is None:
            raise RuntimeError(
                "the CTC vocabulary is not built yet: the datamodule calls build_vocabulary(training "
                "transcripts) first, or give model.tokenizer"
            )
        return self.tokenizer(texts).input_ids

    def __call__(self, examples: list[dict[str, Any] | None]) -> dict[str, Any] | None:
        kept = [example for example in examples if example is not None]
        if not kept:
            return None
        batch = _common_fields(kept, len(examples) - len(kept), self.sampling_rate)
        batch |= pad_waveforms(
            [example["audio"] for example in kept],
            normalize=self.feature_extractor.do_normalize,
            return_attention_mask=self.feature_extractor.return_attention_mask,
        )
        batch["labels"] = pad_labels(self.encode_text([example["text"] for example in kept]))
        return batch
