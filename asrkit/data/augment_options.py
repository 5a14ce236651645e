"""``augment.waveform`` parsed and checked: which operations are on, with what settings.

Each wrong value is a one-line ValueError naming its key (``augment.waveform.noise.snr_db=[20, 5]: low must be
<= high``), raised where the config is checked before anything loads and again where the datamodule is made.
Every option is required: ``conf/augment/waveform.yaml`` is where their values and meanings live; an operation
set to null is off. The noise folder must hold at least one file whose extension names a format soundfile reads.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import soundfile
from omegaconf import DictConfig, OmegaConf

KEY = "augment.waveform"
# file extensions of the formats soundfile reads (its format names), and the usual others for them
AUDIO_EXTENSIONS = frozenset({name.lower() for name in soundfile.available_formats()} | {"aif", "oga", "opus"})


@dataclass(frozen=True)
class Speed:
    factors: tuple[float, ...]  # > 0; < 1 slows down (longer), > 1 speeds up
    p: float


@dataclass(frozen=True)
class Noise:
    dir: str
    snr_db: tuple[float, float]
    p: float


@dataclass(frozen=True)
class Gain:
    db: tuple[float, float]
    p: float


@dataclass(frozen=True)
class WaveformOptions:
    """``augment.waveform``, checked: each operation is None when turned off (``augment.waveform.<op>=null``)."""

    seed: int
    speed: Speed | None
    noise: Noise | None
    gain: Gain | None

    @classmethod
    def parse(cls, node: Mapping[str, Any]) -> WaveformOptions:
        """The options of ``node``; a wrong one is a one-line ValueError naming its key."""
        values = _fields(KEY, node, ("seed", "speed", "noise", "gain"))
        seed = values["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"{KEY}.seed={seed!r}: expected an integer (the run's: ${{seed}})")
        speed = noise = gain = None
        if values["speed"] is not None:
            fields = _fields(f"{KEY}.speed", values["speed"], ("factors", "p"))
            speed = Speed(_factors(f"{KEY}.speed.factors", fields["factors"]), _p(f"{KEY}.speed.p", fields["p"]))
        if values["noise"] is not None:
            fields = _fields(f"{KEY}.noise", values["noise"], ("dir", "snr_db", "p"))
            directory = _noise_dir(f"{KEY}.noise.dir", fields["dir"])
            noise = Noise(directory, _range(f"{KEY}.noise.snr_db", fields["snr_db"]), _p(f"{KEY}.noise.p", fields["p"]))
        if values["gain"] is not None:
            fields = _fields(f"{KEY}.gain", values["gain"], ("db", "p"))
            gain = Gain(_range(f"{KEY}.gain.db", fields["db"]), _p(f"{KEY}.gain.p", fields["p"]))
        return cls(seed, speed, noise, gain)

    @property
    def active(self) -> bool:
        return any(op is not None and op.p > 0 for op in (self.speed, self.noise, self.gain))


def waveform_problem(augment: Mapping[str, Any] | None) -> str | None:
    """What is wrong with ``augment.waveform`` (one line), or None (``asrkit.config_check`` asks before a run)."""
    node = (augment or {}).get("waveform")
    try:
        if node is not None:
            WaveformOptions.parse(node)
    except ValueError as error:
        return str(error)
    return None


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def _fields(key: str, node: Any, names: tuple[str, ...]) -> dict[str, Any]:
    node = _plain(node)
    if not isinstance(node, Mapping):
        raise ValueError(f"{key}={node!r}: expected a mapping of {', '.join(names)} (or null: off)")
    unknown = sorted(set(node) - set(names))
    if unknown:
        raise ValueError(f"{key}.{unknown[0]}: not an option of {key} (its options: {', '.join(names)})")
    missing = [name for name in names if name not in node]
    if missing:
        raise ValueError(f"{key}.{missing[0]}: missing (conf/augment/waveform.yaml documents every option)")
    return dict(node)


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{key}={value!r}: expected a number")
    return float(value)


def _p(key: str, value: Any) -> float:
    p = _number(key, value)
    if not 0 <= p <= 1:
        raise ValueError(f"{key}={value}: a probability, in [0, 1]")
    return p


def _range(key: str, value: Any) -> tuple[float, float]:
    value = _plain(value)
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError(f"{key}={value!r}: expected [low, high]")
    low, high = (_number(key, v) for v in value)
    if low > high:
        raise ValueError(f"{key}={list(value)}: low must be <= high")
    return low, high


def _factors(key: str, value: Any) -> tuple[float, ...]:
    value = _plain(value)
    if not isinstance(value, list | tuple) or not value:
        raise ValueError(f"{key}={value!r}: expected a non-empty list of speed factors, e.g. [0.9, 1.0, 1.1]")
    factors = tuple(_number(key, v) for v in value)
    if min(factors) <= 0:
        raise ValueError(f"{key}={list(value)}: factors must be > 0 (0.9: 11 % longer, 1.1: 9 % shorter)")
    return factors


def audio_files(directory: Path) -> list[Path]:
    """The files under ``directory`` (recursively) whose extension names a format soundfile reads, sorted."""
    found = []
    for root, _, names in os.walk(directory):
        found += [Path(root) / n for n in names if Path(n).suffix.lstrip(".").lower() in AUDIO_EXTENSIONS]
    return sorted(found)


def _noise_dir(key: str, value: Any) -> str:
    if not isinstance(value, str | os.PathLike) or not str(value):
        raise ValueError(f"{key}={value!r}: expected the folder of noise recordings")
    directory = Path(value).expanduser()
    if not directory.is_dir():
        raise ValueError(f"{key}={value}: no such directory")
    if not audio_files(directory):
        raise ValueError(f"{key}={value}: holds no audio file (searched recursively: .wav, .flac, .ogg, .mp3, ...)")
    return str(directory)
