"""Whisper's batches: log-mel features over the model's window, and labels after ``<|startoftranscript|>``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from transformers import WhisperFeatureExtractor, WhisperTokenizer

from asrkit.data.padding import batch_fields, pad_labels


def whisper_inputs(
    extractor: WhisperFeatureExtractor, audios: Sequence[np.ndarray], attention_mask: bool = False
) -> dict[str, Any]:
    """Whisper's inputs for a batch: every utterance in the model's window, and the longer ones whole.

    ``input_features`` are the log-mel features of every utterance padded or cut to the window (what
    training and short-form decoding use); with ``attention_mask``, also which of their frames hold audio
    (what confines SpecAugment's time masks to the audio, as transformers' fine-tuning script does).
    Utterances longer than the window also go, uncut, into ``long_form``: ``rows`` (their positions in the
    batch), ``input_features`` padded to the longest of them and ``attention_mask`` (its frames), the inputs
    of transformers' long-form sequential decoding.
    """
    rate = extractor.sampling_rate
    features = extractor(audios, sampling_rate=rate, return_tensors="pt", return_attention_mask=attention_mask)
    batch = {"input_features": features.input_features}
    if attention_mask:
        batch["attention_mask"] = features.attention_mask
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
    (:func:`whisper_inputs`). ``attention_mask``: batches say which frames hold audio (the model's SpecAugment
    masks time within them). With ``label_length`` (``data.static_shapes``) labels are padded to that length; the
    features always span the window, so ``audio_length`` changes nothing.
    """

    supports_static_shapes = True

    def __init__(
        self,
        feature_extractor: WhisperFeatureExtractor,
        tokenizer: WhisperTokenizer,
        max_label_length: int,
        max_input_seconds: float,
        attention_mask: bool = False,
    ) -> None:
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        self.max_label_length = max_label_length  # longer training labels are dropped by the datamodule
        self.max_input_seconds = max_input_seconds  # the model's window; longer training audio is dropped
        self.attention_mask = attention_mask
        self.start_token_id = tokenizer.convert_tokens_to_ids("<|startoftranscript|>")

    @property
    def sampling_rate(self) -> int:
        return self.feature_extractor.sampling_rate

    def encode_text(self, texts: list[str]) -> list[list[int]]:
        """Label token ids (with the language/task prefix, without the start token) for each text."""
        encoded = self.tokenizer(texts).input_ids
        return [ids[1:] if ids and ids[0] == self.start_token_id else ids for ids in encoded]

    def __call__(
        self, examples: list[dict[str, Any] | None], audio_length: int | None = None, label_length: int | None = None
    ) -> dict[str, Any] | None:
        kept = [example for example in examples if example is not None]
        if not kept:
            return None
        batch = batch_fields(kept, len(examples) - len(kept), self.sampling_rate)
        batch |= whisper_inputs(self.feature_extractor, [example["audio"] for example in kept], self.attention_mask)
        batch["labels"] = pad_labels(self.encode_text([example["text"] for example in kept]), label_length)
        return batch
