"""The one drop rule: which examples of a split are kept, and why the others are not.

Both data paths call it: the map-style path (:mod:`asrkit.data.indexed`) on every row before training, the
streaming one (:mod:`asrkit.data.streaming`) on each example as it arrives. An example is dropped, with the
first reason that applies, when

1. its audio cannot be used: ``missing file``, ``empty file`` (0 bytes), ``unreadable audio`` (bytes that are
   no audio) or ``no samples`` (a header with no frames), all known from the header, read up front on the
   map-style path where the duration cell is empty (else when the example is decoded); and ``silent audio``
   (a peak below :data:`SILENCE_PEAK`), known only once decoded;
2. its duration lies outside the split's range (``duration outside [low, high] s``): training's
   ``data.min/max_duration_in_seconds`` (capped at the model's input window), or for validation and test the
   ``data.eval_*`` range, which is unbounded unless set;
3. its prepared transcript is empty and ``data.require_text`` is true (``empty transcript``);
4. (training) its label is longer than the model takes (``label longer than N tokens``).

The duration comes from the source's duration column when the cell holds a number, else from the file's
header (no samples are decoded): an empty cell is not a reason to drop a readable file.

Silence is dropped because a silent utterance paired with a transcript teaches a model to write words where
there is no speech (hallucination), and pre-training learns nothing from it. The threshold is a fixed peak
of 1e-4 of full scale (-80 dBFS, about 3 steps of 16-bit audio): digital silence and dither, far below any
recording with speech in it, so it is no data option. Multi-channel audio and other sampling rates are no
reason to drop: :func:`asrkit.data.audio.decode_audio` mixes down to mono and resamples to the model's rate.

Where a reason is logged, the first :data:`NAMED_FILES` files it dropped are named, not every one.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from asrkit.data.audio import (
    EMPTY_FILE,
    MISSING_FILE,
    NO_SAMPLES,
    UNREADABLE,
    AudioDecodeError,
    audio_duration,
    decode_audio,
)

log = logging.getLogger(__name__)

SILENT = "silent audio"
EMPTY_TEXT = "empty transcript"
#: the reasons that lie in the audio itself (the others are the split's rule: duration, text, label length)
AUDIO_PROBLEMS = (MISSING_FILE, EMPTY_FILE, UNREADABLE, NO_SAMPLES, SILENT)
SILENCE_PEAK = 1e-4  # of full scale: a decoded example whose largest |sample| is below this is silent
NAMED_FILES = 3  # files named per reason in the log


@dataclass(frozen=True)
class FilterRules:
    """The drop rule of one split (see the module docstring for the order the reasons are tried in)."""

    min_seconds: float = 0.0
    max_seconds: float = math.inf
    require_text: bool = True  # false: an empty transcript is kept (pre-training, unlabelled audio)
    max_label_length: int | None = None  # tokens; None: labels are not measured

    @property
    def out_of_range(self) -> str:
        return f"duration outside [{self.min_seconds}, {self.max_seconds}] s"

    @property
    def label_too_long(self) -> str:
        return f"label longer than {self.max_label_length} tokens"

    def reason(
        self, duration: float | None, text: str, label_length: int | None = None, problem: str | None = None
    ) -> str | None:
        """Why an example with this duration (None: unreadable), prepared text, label length and audio problem
        (one of :data:`AUDIO_PROBLEMS`, found in its header) is dropped; None when it is kept."""
        if problem is not None:
            return problem
        if duration is None:
            return UNREADABLE
        if not self.min_seconds <= duration <= self.max_seconds:
            return self.out_of_range
        if not text and self.require_text:
            return EMPTY_TEXT
        if self.max_label_length is not None and label_length is not None and label_length > self.max_label_length:
            return self.label_too_long
        return None

    def label_lengths(self, texts: list[str], encode: Callable[[list[str]], list[list[int]]]) -> list[int] | None:
        """Token counts of ``texts`` when labels are measured (``max_label_length`` set), else None."""
        if self.max_label_length is None:
            return None
        return [len(ids) for ids in encode(texts)]


def cell_duration(value: Any) -> float | None:
    """A duration cell as a number of seconds; None for an empty cell (None, NaN, "")."""
    if value is None or value == "":
        return None
    seconds = float(value)
    return None if math.isnan(seconds) else seconds


def header_duration(audio: Mapping[str, Any]) -> tuple[float | None, str | None]:
    """The duration in a file's header and None, or None and why the header cannot be used."""
    try:
        return audio_duration(audio), None
    except AudioDecodeError as error:
        return None, error.reason


def row_duration(cell: Any, audio: Mapping[str, Any]) -> tuple[float | None, str | None]:
    """The duration of a row (its duration cell when it holds a number, else its file's header) and, when the
    header was read and cannot be used, why."""
    seconds = cell_duration(cell)
    return header_duration(audio) if seconds is None else (seconds, None)


def decode_kept(audio: Mapping[str, Any], sampling_rate: int) -> tuple[np.ndarray | None, str | None]:
    """Mono samples at ``sampling_rate`` and None, or None and why the example is dropped once decoded (a
    file that broke after its header was read, or :data:`SILENT`)."""
    try:
        samples = decode_audio(dict(audio), sampling_rate)
    except AudioDecodeError as error:
        return None, error.reason
    if float(np.abs(samples).max()) < SILENCE_PEAK:
        return None, SILENT
    return samples, None


def log_drops(where: str, dropped: Counter[str], total: int, names: Mapping[str, list[str]] | None = None) -> None:
    """One warning per reason: ``<where>: dropped n of total examples: <reason> (first: a.wav, b.wav)``."""
    for reason, count in dropped.items():
        first = (names or {}).get(reason)
        named = f" (first: {', '.join(first[:NAMED_FILES])})" if first else ""
        log.warning("%s: dropped %d of %d examples: %s%s", where, count, total, reason, named)
