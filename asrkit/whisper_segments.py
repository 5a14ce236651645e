"""Whisper's timed segments (and, when asked, word times) for :mod:`asrkit.transcribe`'s subtitles and JSON.

The same ``generate()`` calls as :func:`asrkit.models.whisper_generation.generate_texts` (files within the window in one
short-form call, longer ones by long-form sequential decoding with ``return_timestamps=True``), with
``return_segments=True``: transformers then also returns, per file, the segments it cut at the timestamp
tokens the model predicted (``start``/``end`` in seconds from the file's start, ``tokens``). The texts come
from the very ``sequences`` ``generate_texts`` decodes, so what transcripts.txt says does not change. A
window in which the model predicts no pair of timestamps is one segment, and the window moves on by a whole
window. Such a segment has no timestamp after its text (transformers then ends it at a timestamp the model
put before its text, if any): it is taken to last to the end of its window, so that a model fine-tuned with
``<|notimestamps|>`` (the demo) still gets segments that follow each other and cover the audio, one per
window. A file within the window is one such segment (short-form decoding is asked for no timestamps, as
evaluation decodes it).

Word times (``word_timestamps``) come from the cross-attention of the decoder heads that follow the audio
(``generation_config.alignment_heads``, the ``return_token_timestamps`` of transformers: dynamic time warping
of their attention over the tokens); a token's time is where it starts, a word is the tokens from one that
begins with a space to the next. Asking for them makes transformers switch the model to eager attention.
"""

from __future__ import annotations

from typing import Any

import torch

from asrkit.models.whisper_generation import timestamps_beyond_window


def set_alignment_heads(model: Any, heads: list[list[int]] | None, checkpoint: str) -> None:
    """Check (and, when given, set) the cross-attention heads word timestamps are read from."""
    if heads:
        layers, count = model.config.decoder_layers, model.config.decoder_attention_heads
        pairs = [[int(layer), int(head)] for layer, head in heads]
        if any(not (0 <= layer < layers and 0 <= head < count) for layer, head in pairs):
            raise ValueError(f"alignment_heads={pairs}: {checkpoint} has {layers} decoder layers of {count} heads")
        model.generation_config.alignment_heads = pairs
    elif not getattr(model.generation_config, "alignment_heads", None):
        raise ValueError(
            f"word_timestamps=true: {checkpoint} has no generation_config.alignment_heads (the decoder heads "
            "whose cross-attention follows the audio): set alignment_heads=[[layer,head],...] or word_timestamps=false"
        )


def _words(tokenizer: Any, tokens: list[int], times: list[float], end: float) -> list[dict[str, Any]]:
    """Words of one segment's tokens, each from its first token's time to the time of the token after it."""
    pieces = tokenizer.convert_ids_to_tokens(tokens)
    groups: list[list[int]] = []  # positions of each word's tokens
    for position, (token, piece) in enumerate(zip(tokens, pieces, strict=True)):
        if token >= tokenizer.eos_token_id:  # <|endoftext|>, the prompt tokens and the timestamps
            continue
        if not groups or piece.startswith("Ġ"):
            groups.append([])
        groups[-1].append(position)
    words = []
    for group in groups:
        after = group[-1] + 1
        words.append(
            {
                "start": float(times[group[0]]),
                "end": float(times[after]) if after < len(times) else end,
                "word": tokenizer.decode([tokens[p] for p in group]).strip(),
            }
        )
    return words


def _closed(tokens: list[int], eos: int, timestamp_begin: int) -> bool:
    """Whether a timestamp token follows the segment's last text token (its end was predicted)."""
    text = [position for position, token in enumerate(tokens) if token < eos]
    return not text or any(token >= timestamp_begin for token in tokens[text[-1] + 1 :])


def _file_segments(model: Any, tokenizer: Any, segments: list[dict[str, Any]], words: bool) -> list[dict[str, Any]]:
    window = model.config.max_source_positions * 0.02  # seconds: 1500 encoder positions of 20 ms in 30 s
    timestamp_begin = model.generation_config.no_timestamps_token_id + 1
    timed = []
    for segment in segments:
        tokens = segment["tokens"].tolist()
        start, end = float(segment["start"]), float(segment["end"])
        if not _closed(tokens, tokenizer.eos_token_id, timestamp_begin):  # heard over its whole window
            end = max(end, start + window)
        kept: dict[str, Any] = {
            "start": start,
            "end": end,
            "text": tokenizer.decode(tokens, skip_special_tokens=True).strip(),
        }
        if words:
            times = segment["token_timestamps"].tolist()
            kept["words"] = _words(tokenizer, tokens, times, kept["end"])
        timed.append(kept)
    return timed


def _generate(model: Any, tokenizer: Any, words: bool, **kwargs: Any) -> list[tuple[str, list[dict[str, Any]]]]:
    out = model.generate(return_segments=True, return_token_timestamps=words or None, **kwargs)
    texts = tokenizer.batch_decode(out["sequences"], skip_special_tokens=True)
    return [
        (text, _file_segments(model, tokenizer, segments, words))
        for text, segments in zip(texts, out["segments"], strict=True)
    ]


@torch.no_grad()
def generate_segments(
    model: Any,
    tokenizer: Any,
    input_features: torch.Tensor,
    frames: list[int],
    long_form: dict[str, Any] | None = None,
    word_timestamps: bool = False,
    **generate_kwargs: Any,
) -> list[dict[str, Any]]:
    """``{"text", "segments"}`` per file of a batch of Whisper inputs
    (:func:`asrkit.models.whisper_collator.whisper_inputs`); ``frames`` are each file's log-mel frames (what the
    word timestamps of a file within the window are read over)."""
    long_rows = list(long_form["rows"]) if long_form else []
    short_rows = [row for row in range(len(input_features)) if row not in long_rows]
    results: list[Any] = [None] * len(input_features)
    if short_rows:
        kwargs: dict[str, Any] = {"input_features": input_features[short_rows]}
        if word_timestamps:  # the DTW reads the attention over the audio's frames only, not the padding
            mask = torch.zeros(len(short_rows), input_features.shape[-1], dtype=torch.long)
            for i, row in enumerate(short_rows):
                mask[i, : frames[row]] = 1
            kwargs["attention_mask"] = mask.to(input_features.device)
        found = _generate(model, tokenizer, word_timestamps, **kwargs, **generate_kwargs)
        for row, result in zip(short_rows, found, strict=True):
            results[row] = result
    if long_rows:
        assert long_form is not None
        beyond = timestamps_beyond_window(model)
        if beyond:  # as generate_texts: no timestamp past the window
            generate_kwargs = generate_kwargs | {
                "suppress_tokens": [*(model.generation_config.suppress_tokens or []), *beyond]
            }
        found = _generate(
            model,
            tokenizer,
            word_timestamps,
            input_features=long_form["input_features"],
            attention_mask=long_form["attention_mask"],
            return_timestamps=True,
            **generate_kwargs,
        )
        for row, result in zip(long_rows, found, strict=True):
            results[row] = result
    return [{"text": text, "segments": segments} for text, segments in results]
