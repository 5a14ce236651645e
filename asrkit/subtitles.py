"""Timed segments -> subtitle files (SubRip ``.srt``, WebVTT ``.vtt``) and the per-file JSON of
:mod:`asrkit.transcribe`.

A segment is ``{"start": seconds, "end": seconds, "text": str}`` plus ``"words": [{"start", "end", "word"}]``
when word timestamps were asked for. What the models give is not always fit for a player: Whisper's
long-form windows can end past the audio (a window is padded) and a window's first timestamp can lie before
the previous window's last one; CTC word groups are fine but may be empty. :func:`clean_segments` makes any
list playable: empty texts dropped, times clipped to the audio, each start at or after the previous end
(never overlapping, never going back), and a segment squeezed to no time at all merged into the one before.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

FORMATS = ("txt", "json", "srt", "vtt")


def _clip(value: float, low: float, high: float) -> float:
    return min(max(float(value), low), high)


def _clean_words(words: list[dict[str, Any]], start: float, end: float) -> list[dict[str, Any]]:
    """Words within their segment, in order, each starting at or after the previous one's end."""
    cleaned: list[dict[str, Any]] = []
    previous = start
    for word in words:
        text = str(word["word"]).strip()
        if not text:
            continue
        word_start = _clip(word["start"], previous, end)
        word_end = _clip(word["end"], word_start, end)
        cleaned.append({"start": word_start, "end": word_end, "word": text})
        previous = word_end
    return cleaned


def clean_segments(segments: Iterable[dict[str, Any]], duration: float) -> list[dict[str, Any]]:
    """Segments fit for a subtitle player over ``duration`` seconds of audio (see the module docstring)."""
    cleaned: list[dict[str, Any]] = []
    previous = 0.0
    for segment in segments:
        text = str(segment["text"]).strip()
        if not text:
            continue
        start = _clip(segment["start"], previous, duration)
        end = _clip(segment["end"], start, duration)
        words = segment.get("words")
        if end <= start and cleaned:  # squeezed out (it started past the audio or before the previous end)
            last = cleaned[-1]
            last["text"] = f"{last['text']} {text}"
            if words is not None:
                last["words"] = last.get("words", []) + _clean_words(words, last["end"], last["end"])
            continue
        kept: dict[str, Any] = {"start": start, "end": end, "text": text}
        if words is not None:
            kept["words"] = _clean_words(words, start, end)
        cleaned.append(kept)
        previous = end
    return cleaned


def format_timestamp(seconds: float, separator: str = ",") -> str:
    """``HH:MM:SS,mmm`` (SubRip) or, with ``separator="."``, ``HH:MM:SS.mmm`` (WebVTT); rounded to the millisecond."""
    milliseconds = max(0, round(seconds * 1000))
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    secs, milliseconds = divmod(milliseconds, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{milliseconds:03d}"


def to_srt(segments: list[dict[str, Any]]) -> str:
    """SubRip: numbered cues from 1, ``start --> end`` with a comma before the milliseconds, a blank line after each."""
    cues = [
        f"{number}\n{format_timestamp(s['start'])} --> {format_timestamp(s['end'])}\n{s['text']}\n"
        for number, s in enumerate(segments, start=1)
    ]
    return "\n".join(cues)


def to_vtt(segments: list[dict[str, Any]]) -> str:
    """WebVTT: the ``WEBVTT`` header, then one cue per segment with a full stop before the milliseconds."""
    cues = [
        f"{format_timestamp(s['start'], '.')} --> {format_timestamp(s['end'], '.')}\n{s['text']}\n" for s in segments
    ]
    return "WEBVTT\n\n" + "\n".join(cues)


def check_formats(formats: str | Iterable[str]) -> list[str]:
    """The asked formats, checked: a name outside :data:`FORMATS` is an error naming the setting."""
    asked = [str(name).lower() for name in ([formats] if isinstance(formats, str) else formats)]
    unknown = [name for name in asked if name not in FORMATS]
    if unknown:
        raise ValueError(f"formats={asked}: {', '.join(unknown)} unknown; choose from {', '.join(FORMATS)}")
    return asked


def write_subtitles(out: Path, stem: str, result: dict[str, Any], formats: Iterable[str]) -> list[Path]:
    """``<out>/<stem>.json`` / ``.srt`` / ``.vtt`` of one transcribed file (``txt`` is the shared transcripts.txt)."""
    written = []
    for name in formats:
        path = out / f"{stem}.{name}"
        if name == "json":
            path.write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        elif name == "srt":
            path.write_text(to_srt(result["segments"]), encoding="utf-8")
        elif name == "vtt":
            path.write_text(to_vtt(result["segments"]), encoding="utf-8")
        else:
            continue
        written.append(path)
    return written
