"""Waveform augmentation of the training audio (``augment.waveform``): speed perturbation, additive noise, gain.

Applied where an example is decoded (in the DataLoader workers), to the training split only: validation and test
audio, and the examples the validation report plays back, are never augmented. Each example's draws come from
its own ``torch.Generator`` seeded by (``seed``, epoch, example key): the same audio for the same example in the
same epoch whatever the number of workers or the order of reading, new draws every epoch, and no draw from (or
effect on) the global generators that dropout and the model's masks use. The key is the example's row on the
map-style path, and a digest of its file name (or bytes) on a stream, whose positions depend on its workers.
Every example draws the same numbers in the same order whichever operations are on, so turning one off leaves
the others' draws as they were. The operations run on one thread, as in a DataLoader worker: torch's convolution
(resampling) sums in an order that depends on the thread count, and the main process (``data.num_workers=0``)
would otherwise give samples that differ in the last bit.

The operations, in this order, each with its probability ``p``:

- speed: resampling by a factor drawn uniformly from ``factors`` (Kaldi's speed perturbation, tempo and pitch
  together; 0.9 makes an utterance 1/0.9 = 11 % longer). Durations (for the drop rule and bucketing) are measured
  before it, so a factor that would make an example longer than the training limit (``data.max_duration_in_seconds``
  capped at the model's input window: Whisper's 30 s, the demo's 3 s) is left out of that example's choice;
  cropping would cut words its transcript still has. Bucketing's ``max_batch_seconds`` is not re-checked: a batch
  slowed by 0.9 holds up to 11 % more padded audio than the cap.
- noise: a segment of a recording from ``noise.dir`` (any file soundfile reads, found recursively and listed once
  at the start; unreadable ones are counted and skipped with a warning), resampled to the model's rate, looped or
  cropped to the example's length, added at an SNR drawn uniformly from ``snr_db``.
- gain: the level changed by a number of dB drawn uniformly from ``db``, unclipped (the samples are floats; the
  feature extractors take values beyond 1). It matters to Whisper (log-mel features of the absolute level); a
  wav2vec2 feature extractor with ``do_normalize`` undoes it.

Why ``torchaudio.functional`` (``resample``, ``add_noise``, ``gain``) and not audiomentations or
torch-audiomentations: torchaudio is already a dependency, and these functions take a per-example
``torch.Generator``'s draws as plain numbers; audiomentations draws from numpy's and Python's global generators,
which makes per-example seeding a matter of reseeding globals in every worker, and torch-audiomentations is
built for batches on the GPU and lightly maintained. (``torchaudio.functional.speed`` is ``resample`` from
``int(factor * rate)``, which truncates 0.95 x 16000 to 15199, a 15199:16000 kernel that takes seconds;
resampling from the rounded rate is the same operation without that.)
"""

from __future__ import annotations

import hashlib
import logging
import math
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import torch
import torchaudio.functional

from asrkit.data.augment_options import KEY, WaveformOptions, audio_files

log = logging.getLogger(__name__)

DRAWS = 8  # numbers every example draws: speed (on, factor), noise (on, snr, file, offset), gain (on, dB)
NAMED = 3  # unreadable noise files named in the warning


@dataclass(frozen=True)
class NoiseFile:
    path: str
    frames: int
    rate: int


def list_noise(directory: str) -> list[NoiseFile]:
    """The readable noise recordings under ``directory``, from their headers; the others are counted in a warning."""
    readable, unreadable = [], []
    for path in audio_files(Path(directory)):
        try:
            info = soundfile.info(str(path))
        except Exception:  # soundfile raises several types for unreadable input
            unreadable.append(path)
            continue
        if info.frames > 0:
            readable.append(NoiseFile(str(path), info.frames, info.samplerate))
        else:
            unreadable.append(path)
    if unreadable:
        log.warning(
            "%s.noise.dir=%s: skipping %d of %d noise files that cannot be read or hold no samples (first: %s)",
            KEY,
            directory,
            len(unreadable),
            len(unreadable) + len(readable),
            ", ".join(str(p) for p in unreadable[:NAMED]),
        )
    if not readable:
        raise ValueError(f"{KEY}.noise.dir={directory}: none of its {len(unreadable)} audio files can be read")
    return readable


def example_seed(seed: int, epoch: int, key: int) -> int:
    """The seed of one example's draws in one epoch (a hash: nearby seeds, epochs and keys draw unrelated numbers)."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # manual_seed takes a non-negative 63-bit number


def stream_key(audio: Mapping[str, Any]) -> int:
    """What identifies a streamed example whatever its position: its file name, else its bytes (or samples)."""
    if audio.get("path"):
        return zlib.crc32(str(audio["path"]).encode())
    if audio.get("bytes"):
        return zlib.crc32(audio["bytes"])
    return zlib.crc32(np.asarray(audio.get("array", [])).tobytes())


@contextmanager
def _one_thread() -> Iterator[None]:
    """torch on one thread inside (DataLoader workers already are; the main process is put back as it was)."""
    threads = torch.get_num_threads()
    if threads != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if threads != 1:
            torch.set_num_threads(threads)


def _between(bounds: tuple[float, float], u: float) -> float:
    return bounds[0] + u * (bounds[1] - bounds[0])


class WaveformAugment:
    """Augments one decoded training example: ``augment(audio, key, epoch)`` (mono float32 at ``sampling_rate``).

    ``max_seconds``: the longest training audio the run keeps (the drop rule's limit); speed factors that would
    make an example longer are not drawn for it. The noise files are listed when this is made (in the main process).
    """

    def __init__(self, options: WaveformOptions, sampling_rate: int, max_seconds: float = math.inf) -> None:
        self.options = options
        self.sampling_rate = sampling_rate
        self.max_samples = max_seconds * sampling_rate
        self.noise_files = list_noise(options.noise.dir) if options.noise is not None else []

    def describe(self) -> str:
        """One line: what is on, with its probability."""
        speed, noise, gain = self.options.speed, self.options.noise, self.options.gain
        parts = []
        if speed is not None:
            parts.append(f"speed x{'/'.join(f'{f:g}' for f in speed.factors)} (p {speed.p:g})")
        if noise is not None:
            low, high = noise.snr_db
            parts.append(
                f"noise at {low:g}-{high:g} dB SNR from {len(self.noise_files)} files in {noise.dir} (p {noise.p:g})"
            )
        if gain is not None:
            parts.append(f"gain {gain.db[0]:+g} to {gain.db[1]:+g} dB (p {gain.p:g})")
        return "; ".join(parts) + f"; seed {self.options.seed}, new draws each epoch"

    def __call__(self, audio: np.ndarray, key: int, epoch: int) -> np.ndarray:
        generator = torch.Generator().manual_seed(example_seed(self.options.seed, epoch, key))
        u = torch.rand(DRAWS, generator=generator, dtype=torch.float64).tolist()
        wave = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
        speed, noise, gain = self.options.speed, self.options.noise, self.options.gain
        with _one_thread():
            if speed is not None and u[0] < speed.p:
                wave = self._speed(wave, speed.factors, u[1])
            if noise is not None and u[2] < noise.p:
                wave = self._noise(wave, _between(noise.snr_db, u[3]), u[4], u[5])
            if gain is not None and u[6] < gain.p:
                wave = torchaudio.functional.gain(wave, _between(gain.db, u[7]))
        return np.ascontiguousarray(wave.numpy(), dtype=np.float32)

    def _speed(self, wave: torch.Tensor, factors: tuple[float, ...], u: float) -> torch.Tensor:
        rate = self.sampling_rate
        fits = [f for f in factors if math.ceil(wave.numel() * rate / round(f * rate)) <= self.max_samples]
        if not fits:  # every factor would push it past the limit: left as it is
            return wave
        factor = fits[int(u * len(fits))]
        if round(factor * rate) == rate:
            return wave
        return torchaudio.functional.resample(wave, round(factor * rate), rate)

    def _noise(self, wave: torch.Tensor, snr_db: float, u_file: float, u_offset: float) -> torch.Tensor:
        noise_file = self.noise_files[int(u_file * len(self.noise_files))]
        length = wave.numel()
        needed = math.ceil(length * noise_file.rate / self.sampling_rate)  # frames at the file's rate
        start, stop = 0, noise_file.frames
        if noise_file.frames > needed:
            start = int(u_offset * (noise_file.frames - needed + 1))
            stop = start + needed
        try:
            samples, _ = soundfile.read(noise_file.path, start=start, stop=stop, dtype="float32", always_2d=True)
        except Exception as error:  # broken since it was listed: this example goes without noise
            log.warning("%s.noise: cannot read %s (%s): no noise for this example", KEY, noise_file.path, error)
            return wave
        noise = torch.from_numpy(samples.mean(axis=1))
        if noise_file.frames <= needed:  # a short recording, looped from a random point
            noise = torch.roll(noise, -int(u_offset * noise.numel()))
        if noise_file.rate != self.sampling_rate:
            noise = torchaudio.functional.resample(noise, noise_file.rate, self.sampling_rate)
        noise = noise.repeat(math.ceil(length / noise.numel()))[:length]
        if float(noise.square().sum()) == 0.0:  # digital silence has no level to scale to an SNR
            return wave
        return torchaudio.functional.add_noise(wave[None], noise[None], torch.tensor([snr_db]))[0]


def training_augment(node: Mapping[str, Any] | None, sampling_rate: int, max_seconds: float) -> WaveformAugment | None:
    """The augmentation of a run's training examples from ``augment.waveform`` (None when it is null or turns
    nothing on), logged in one line."""
    options = WaveformOptions.parse(node) if node is not None else None
    if options is None or not options.active:
        return None
    augment = WaveformAugment(options, sampling_rate, max_seconds)
    log.info("training audio augmentation: %s", augment.describe())
    return augment
