"""Decoding and resampling with soundfile + torchaudio.

Why soundfile and not the ``datasets`` Audio decoder: ``datasets`` 4+ decodes through torchcodec,
which needs FFmpeg's shared libraries on the machine. soundfile ships libsndfile in its wheel and
reads WAV, FLAC, OGG/Opus and MP3 (Common Voice) with no system library, and decoding it ourselves
lets a broken file be counted and skipped instead of stopping a run. Datasets are therefore cast
to ``Audio(decode=False)`` and hold only bytes or paths until a DataLoader worker needs the samples.

A file that cannot be used raises :class:`AudioDecodeError` with one of the reasons below, so that a run's drop
counts tell a path that is wrong (``missing file``) from a download cut short (``empty file``), bytes that are
no audio (``unreadable audio``) and a header with nothing after it (``no samples``).
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
import soundfile
import torch
import torchaudio.functional

TARGET_SAMPLING_RATE = 16_000

MISSING_FILE = "missing file"  # a path that does not exist on this machine
EMPTY_FILE = "empty file"  # 0 bytes
UNREADABLE = "unreadable audio"  # bytes soundfile cannot read as audio
NO_SAMPLES = "no samples"  # a readable header with no frames after it


class AudioDecodeError(RuntimeError):
    """An audio file could not be read; the message names the file, ``reason`` says why (one of the above)."""

    def __init__(self, message: str, reason: str = UNREADABLE) -> None:
        super().__init__(message)
        self.reason = reason


def audio_name(audio: dict[str, Any]) -> str:
    """What messages call an audio entry: its path, or a placeholder for bytes without one."""
    return audio.get("path") or "<in-memory audio>"


def _source(audio: dict[str, Any]) -> tuple[Any, str]:
    """The file-like object (or path) soundfile should read, and a name for messages."""
    name = audio_name(audio)
    if audio.get("bytes"):
        return io.BytesIO(audio["bytes"]), name
    if audio.get("bytes") is not None:  # b"": the stored bytes of an empty file
        raise AudioDecodeError(f"{name}: 0 bytes", EMPTY_FILE)
    path = audio.get("path")
    if path and "://" not in path:  # a local file (a URL is left to soundfile to refuse)
        if not os.path.exists(path):
            raise AudioDecodeError(f"{name}: no such file", MISSING_FILE)
        if os.path.getsize(path) == 0:
            raise AudioDecodeError(f"{name}: 0 bytes", EMPTY_FILE)
    if path:
        return path, name
    raise AudioDecodeError(f"{name}: audio entry has neither bytes nor a path")


def audio_duration(audio: dict[str, Any]) -> float:
    """Duration in seconds from the file header alone (no samples are decoded); a header of 0 frames raises
    :class:`AudioDecodeError` (``no samples``)."""
    source, name = _source(audio)
    try:
        info = soundfile.info(source)
    except Exception as error:  # soundfile raises several types for unreadable input
        raise AudioDecodeError(f"{name}: {error}") from error
    if info.frames == 0:
        raise AudioDecodeError(f"{name}: no samples after the header", NO_SAMPLES)
    return info.frames / info.samplerate


def decode_audio(audio: dict[str, Any], sampling_rate: int = TARGET_SAMPLING_RATE) -> np.ndarray:
    """Decode to mono float32 at ``sampling_rate``. Raises :class:`AudioDecodeError` naming the file."""
    if audio.get("array") is not None:  # already decoded upstream
        samples, rate = np.asarray(audio["array"], dtype=np.float32), int(audio["sampling_rate"])
    else:
        source, name = _source(audio)
        try:
            samples, rate = soundfile.read(source, dtype="float32", always_2d=True)
        except Exception as error:
            raise AudioDecodeError(f"{name}: {error}") from error
        samples = samples.mean(axis=1)
    if samples.size == 0:
        raise AudioDecodeError(f"{audio_name(audio)}: no samples", NO_SAMPLES)
    if rate != sampling_rate:
        waveform = torchaudio.functional.resample(torch.from_numpy(samples), rate, sampling_rate)
        samples = waveform.numpy()
    return np.ascontiguousarray(samples, dtype=np.float32)
