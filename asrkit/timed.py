"""Timed transcripts of whole files: ``{"text", "segments"}`` per waveform, for :mod:`asrkit.transcribe`'s
JSON, SRT and WebVTT.

Whisper's segments are the ones its decoding cuts at the timestamps it predicts
(:func:`asrkit.whisper_segments.generate_segments`); a CTC model's are its greedy path's words
(:func:`asrkit.longform.ctc_words`, timed by the model's frame stride; with ``decoder=beam`` the best beam's
words, :meth:`asrkit.ctc_decoding.CTCDecoder.timed`) grouped at pauses and at a longest
length (:func:`asrkit.longform.group_words`). Either way the text is the one :meth:`Recognizer.__call__`
gives (what transcripts.txt holds), and the segments are made playable by
:func:`asrkit.subtitles.clean_segments` (within the file, in order, none empty).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from asrkit.longform import ctc_words, decode_ctc, group_words
from asrkit.recognizer import Recognizer
from asrkit.subtitles import clean_segments
from asrkit.whisper_segments import generate_segments, set_alignment_heads


def _ctc_batch(
    recognizer: Recognizer, batch: dict[str, Any], words: bool, max_seconds: float, max_pause: float
) -> list[dict[str, Any]]:
    logits = recognizer.ctc_logits(batch["inputs"], batch["lengths"])
    tokenizer = recognizer.processor.tokenizer
    stride = recognizer.seconds_per_frame
    if recognizer.ctc_decoder is not None:  # beam search: its text, its best beam's word frames
        timed = recognizer.ctc_decoder.timed(logits, stride)
    else:  # greedy: the greedy path's words
        texts = decode_ctc(tokenizer, logits)
        timed = [(text, ctc_words(tokenizer, values, stride)) for text, values in zip(texts, logits, strict=True)]
    return [
        {"text": text, "segments": group_words(timed_words, max_seconds, max_pause, words)}
        for text, timed_words in timed
    ]


def _whisper_batch(recognizer: Recognizer, batch: dict[str, Any], words: bool) -> list[dict[str, Any]]:
    hop = recognizer.processor.feature_extractor.hop_length  # samples per log-mel frame
    inputs = recognizer.to_device(batch["inputs"])
    frames = [-(-n // hop) for n in batch["lengths"]]
    return generate_segments(
        recognizer.model,
        recognizer.processor.tokenizer,
        **inputs,
        frames=frames,
        word_timestamps=words,
        **recognizer.generate_kwargs,
    )


def transcribe_timed(
    recognizer: Recognizer,
    waveforms: list[np.ndarray],
    batch_size: int,
    word_timestamps: bool = False,
    alignment_heads: list[list[int]] | None = None,
    max_segment_seconds: float = 10.0,
    segment_pause_seconds: float = 0.5,
) -> list[dict[str, Any]]:
    """``{"text", "segments"}`` of each mono float32 waveform at the recogniser's rate (see the module
    docstring); ``max_segment_seconds`` and ``segment_pause_seconds`` cut a CTC model's words into segments."""
    if word_timestamps and recognizer.kind == "seq2seq" and not recognizer.whisper:
        raise ValueError(f"word_timestamps=true: {recognizer.model.name_or_path} is not a Whisper or CTC model")
    if word_timestamps and recognizer.whisper and not isinstance(recognizer, Recognizer):
        raise ValueError(
            "word_timestamps=true: an exported Whisper (CTranslate2, ONNX) gives no word times; use its PyTorch export"
        )
    if word_timestamps and recognizer.whisper:
        set_alignment_heads(recognizer.model, alignment_heads, recognizer.model.name_or_path)
    collator, rate = recognizer.collator(), recognizer.sampling_rate
    results: list[dict[str, Any]] = []
    for start in range(0, len(waveforms), batch_size):
        chunk = waveforms[start : start + batch_size]
        batch = collator([{"index": i, "audio": audio, "reference": ""} for i, audio in enumerate(chunk)])
        if recognizer.kind == "ctc":
            found = _ctc_batch(recognizer, batch, word_timestamps, max_segment_seconds, segment_pause_seconds)
        elif recognizer.whisper and isinstance(recognizer, Recognizer):
            found = _whisper_batch(recognizer, batch, word_timestamps)
        else:  # another sequence-to-sequence model, or an exported Whisper (audio within its window): its text
            found = [
                {"text": text, "segments": [{"start": 0.0, "end": len(audio) / rate, "text": text}]}
                for text, audio in zip(recognizer(batch["inputs"], batch["lengths"]), chunk, strict=True)
            ]
        for result, audio in zip(found, chunk, strict=True):
            segments = clean_segments(result["segments"], len(audio) / rate)
            results.append({"text": result["text"].strip(), "segments": segments})
    return results
