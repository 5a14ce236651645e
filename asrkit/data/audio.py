"""Decoding and resampling with soundfile + torchaudio.

Why soundfile and not the ``datasets`` Audio decoder: ``datasets`` 4+ decodes through torchcodec,
which needs FFmpeg's shared libraries on the machine. soundfile ships libsndfile in its wheel and
reads WAV, FLAC, OGG/Opus and MP3 (Common Voice) with no system library, and decoding it ourselves
lets a broken file be counted and skipped instead of stopping a run. Datasets are therefore cast
to ``Audio(decode=False)`` and hold only bytes or paths until a DataLoader worker needs the samples.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import soundfile
import torch
import torchaudio.functional

TARGET_SAMPLING_RATE = 16_000


class AudioDecodeError(RuntimeError):
    """An audio file could not be read; the message names the file."""


def _source(audio: dict[str, Any]) -> tuple[Any, str]:
    """The file-like object (or path) soundfile should read, and a name for messages."""
    name = audio.get("path") or "<in-memory audio>"
    if audio.get("bytes"):
        return io.BytesIO(audio["bytes"]), name
    if audio.get("path"):
        return audio["path"], name
    raise AudioDecodeError(f"{name}: audio entry has neither bytes nor a path")


def audio_duration(audio: dict[str, Any]) -> float:
    """Duration in seconds from the file header alone (no samples are decoded)."""
    source, name = _source(audio)
    try:
        info = soundfile.info(source)
    except Exception as error:  # soundfile raises several types for unreadable input
        raise AudioDecodeError(f"{name}: {error}") from error
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
        raise AudioDecodeError(f"{audio.get('path') or '<in-memory audio>'}: no samples")
    if rate != sampling_rate:
        waveform = torchaudio.functional.resample(torch.from_numpy(samples), rate, sampling_rate)
        samples = waveform.numpy()
    return np.ascontiguousarray(samples, dtype=np.float32)
