"""The one drop rule: which examples of a split are kept, and why the others are not.

Both data paths call it: the map-style path (:mod:`asrkit.data.indexed`) on every row before training, the
streaming one (:mod:`asrkit.data.streaming`) on each example as it arrives. An example is dropped, with the
first reason that applies, when

1. its audio cannot be read (``unreadable audio``): no header, or (streaming, and every path once decoded)
   no samples;
2. its duration lies outside the split's range (``duration outside [low, high] s``): training's
   ``data.min/max_duration_in_seconds`` (capped at the model's input window), or for validation and test the
   ``data.eval_*`` range, which is unbounded unless set;
3. its prepared transcript is empty and ``data.require_text`` is true (``empty transcript``);
4. (training) its label is longer than the model takes (``label longer than N tokens``).

The duration comes from the source's duration column when the cell holds a number, else from the file's
header (no samples are decoded): an empty cell is not a reason to drop a readable file.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from asrkit.data.audio import AudioDecodeError, audio_duration

log = logging.getLogger(__name__)

UNREADABLE = "unreadable audio"
EMPTY_TEXT = "empty transcript"


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

    def reason(self, duration: float | None, text: str, label_length: int | None = None) -> str | None:
        """Why an example with this duration (None: unreadable), prepared text and label length is dropped;
        None when it is kept."""
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


def header_duration(audio: Mapping[str, Any]) -> float | None:
    """The duration in a file's header; None (with a warning naming the file) when it cannot be read."""
    try:
        return audio_duration(audio)
    except AudioDecodeError as error:
        log.warning("unreadable audio: %s", error)
        return None


def row_duration(cell: Any, audio: Mapping[str, Any]) -> float | None:
    """The duration of a row: its duration cell when it holds a number, else its file's header."""
    seconds = cell_duration(cell)
    return header_duration(audio) if seconds is None else seconds


def log_drops(where: str, dropped: Counter[str], total: int) -> None:
    """One warning per reason: ``<where>: dropped n of total examples: <reason>``."""
    for reason, count in dropped.items():
        log.warning("%s: dropped %d of %d examples: %s", where, count, total, reason)
