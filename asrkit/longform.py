"""Long audio through a CTC model: chunks with context on each side, logits stitched per utterance, and the
timestamps of the greedy path.

A wav2vec2-family model attends over all of its input, so memory grows with the square of a file's length.
:func:`ctc_logits` cuts an utterance longer than ``chunk_length_s`` into windows of that length that
overlap by ``stride_length_s`` on each side (transformers' ASR pipeline's ``chunk_length_s`` /
``stride_length_s``), runs each window, keeps the logits of its middle part only (the frames that heard
``stride_length_s`` of context on both sides; at the file's ends, the ends) and concatenates them. Windows
start on a multiple of the model's frame stride (``inputs_to_logits_ratio`` samples), so a window's frame ``j``
is the whole file's frame ``start / ratio + j`` and the stitched logits have exactly the frames of the file
heard whole: for a model whose receptive field is within the context, the same logits.

Every CTC decoder starts from those per-utterance logits (frames, symbols): :func:`decode_ctc` is the one
place they are turned into texts (greedy, :func:`asrkit.models.ctc.greedy_decode`), and :func:`ctc_words`
reads word times off the greedy path; :func:`group_words` makes subtitle segments of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from asrkit.models.ctc import greedy_decode, utterance_logits


@dataclass(frozen=True)
class Window:
    """One model call: samples ``[start, stop)`` of the utterance in, its frames ``[keep_from, keep_to)`` kept
    (frame numbers of the whole utterance)."""

    start: int
    stop: int
    keep_from: int
    keep_to: int


def plan_windows(num_samples: int, num_frames: int, ratio: int, chunk: int, context: int) -> list[Window]:
    """The windows covering ``num_samples`` samples (``num_frames`` frames, one per ``ratio`` samples):
    ``chunk`` samples each, ``context`` samples of them on each side heard but not kept. Each window's kept
    frames begin where the previous window's end, and the last one keeps every frame to ``num_frames``.
    """
    step = (chunk - 2 * context) // ratio  # frames kept per window
    context_frames = -(-context // ratio)  # rounded up: at least the asked context
    if step <= 0:
        raise ValueError(
            f"chunk_length_s must be more than twice stride_length_s (and a frame, {ratio} samples, more): "
            f"a window of {chunk} samples with {context} of context on each side keeps nothing"
        )
    windows = []
    for keep_from in range(0, num_frames, step):
        keep_to = min(keep_from + step, num_frames)
        start = max(0, keep_from - context_frames) * ratio
        last = keep_to == num_frames
        stop = num_samples if last else min(num_samples, (keep_to + context_frames) * ratio + ratio)
        windows.append(Window(start, stop, keep_from, keep_to))
        if last:
            break
    return windows


def _chunked_logits(
    model: Any, waveform: torch.Tensor, chunk: int, context: int, batch_size: int, masked: bool
) -> torch.Tensor:
    """The stitched logits of one utterance (its normalised, unpadded waveform) heard window by window,
    ``batch_size`` windows per call; ``masked``: the model takes an attention mask (its padded windows get one)."""
    ratio = int(model.config.inputs_to_logits_ratio)
    frames = int(model._get_feat_extract_output_lengths(torch.tensor(len(waveform))))
    windows = plan_windows(len(waveform), frames, ratio, chunk, context)
    kept: list[torch.Tensor] = []
    for first in range(0, len(windows), batch_size):
        group = windows[first : first + batch_size]
        lengths = torch.tensor([w.stop - w.start for w in group])
        batch = torch.zeros(len(group), int(lengths.max()), dtype=waveform.dtype, device=waveform.device)
        for row, window in enumerate(group):
            batch[row, : window.stop - window.start] = waveform[window.start : window.stop]
        mask = (torch.arange(batch.shape[1]) < lengths[:, None]).to(batch.device, torch.long) if masked else None
        for window, logits in zip(group, utterance_logits(model, batch, lengths, mask), strict=True):
            offset = window.start // ratio
            kept.append(logits[window.keep_from - offset : window.keep_to - offset])
    stitched = torch.cat(kept)
    if len(stitched) != frames:  # a front end whose frames do not shift with the window's start
        raise RuntimeError(f"{type(model).__name__}: stitched {len(stitched)} frames for an utterance of {frames}")
    return stitched


@torch.no_grad()
def ctc_logits(
    model: Any,
    input_values: torch.Tensor,
    input_lengths: list[int],
    attention_mask: torch.Tensor | None,
    chunk_seconds: float | None,
    context_seconds: float,
    sampling_rate: int,
) -> list[torch.Tensor]:
    """Per-utterance logits of a zero-padded batch: utterances within ``chunk_seconds`` (or all, when it is
    null or 0) as :func:`asrkit.models.ctc.utterance_logits` gives them, longer ones window by window, as many
    windows per call as the batch has utterances (the memory the batch size was chosen for)."""
    chunk = int(round((chunk_seconds or 0) * sampling_rate))
    context = int(round(context_seconds * sampling_rate))
    long_rows = [row for row, n in enumerate(input_lengths) if chunk and n > chunk]
    short_rows = [row for row in range(len(input_lengths)) if row not in long_rows]
    logits: list[Any] = [None] * len(input_lengths)
    if short_rows:
        longest = max(input_lengths[row] for row in short_rows)
        mask = None if attention_mask is None else attention_mask[short_rows, :longest]
        short = utterance_logits(
            model, input_values[short_rows, :longest], torch.tensor([input_lengths[r] for r in short_rows]), mask
        )
        for row, values in zip(short_rows, short, strict=True):
            logits[row] = values
    for row in long_rows:
        waveform = input_values[row, : input_lengths[row]]
        masked = attention_mask is not None
        logits[row] = _chunked_logits(model, waveform, chunk, context, len(input_lengths), masked)
    return logits


def decode_ctc(tokenizer: Any, logits: Sequence[Any], beam_search: Any = None) -> list[str]:
    """The texts of per-utterance CTC logits (frames, symbols; tensors or arrays): every CTC text asrkit reports,
    from a PyTorch model or an export, comes from here. ``beam_search``: a :class:`asrkit.ctc_decoding.CTCDecoder`
    (decoder=beam); None: greedy, as training decodes."""
    if beam_search is not None:
        return beam_search(logits)
    return greedy_decode(tokenizer, logits)


def ctc_words(tokenizer: Any, logits: Any, seconds_per_frame: float) -> list[dict[str, Any]]:
    """The words of the greedy path with their times: a word starts at its first symbol's first frame and ends
    after its last symbol's last frame (frames times the model's stride, ``inputs_to_logits_ratio / rate``)."""
    decoded = tokenizer.decode(torch.as_tensor(logits).argmax(dim=-1), output_word_offsets=True)
    return [
        {
            "start": offset["start_offset"] * seconds_per_frame,
            "end": offset["end_offset"] * seconds_per_frame,
            "word": offset["word"],
        }
        for offset in decoded.word_offsets
    ]


def group_words(
    words: list[dict[str, Any]], max_seconds: float, max_pause: float, keep_words: bool
) -> list[dict[str, Any]]:
    """Subtitle segments of timed words: a new segment after a pause longer than ``max_pause`` seconds or when
    the current one would pass ``max_seconds``; ``keep_words`` keeps each segment's words in it."""
    segments: list[dict[str, Any]] = []
    current: list[dict[str, Any]] = []
    for word in words:
        if current and (
            word["start"] - current[-1]["end"] > max_pause or word["end"] - current[0]["start"] > max_seconds
        ):
            segments.append(_segment(current, keep_words))
            current = []
        current.append(word)
    if current:
        segments.append(_segment(current, keep_words))
    return segments


def _segment(words: list[dict[str, Any]], keep_words: bool) -> dict[str, Any]:
    segment: dict[str, Any] = {
        "start": words[0]["start"],
        "end": words[-1]["end"],
        "text": " ".join(w["word"] for w in words),
    }
    if keep_words:
        segment["words"] = [dict(w) for w in words]
    return segment
