"""The flat ``data.*`` keys users know, parsed into a few small frozen records.

``conf/data/*.yaml`` documents every key where it is declared; :meth:`DataOptions.parse` routes each key to
the record that uses it (where the examples come from, which are kept, how they are batched, how a stream is
read) and rejects a key none of them knows, naming it. The records are what the data path passes around, and
what the preprocessed cache's key is made of.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from asrkit.data.collator import Collator
from asrkit.data.columns import AUDIO, ROLES, TEXT
from asrkit.data.filtering import FilterRules
from asrkit.data.text import chars_to_ignore_pattern, prepare_label_text_ignoring

LOCAL_FOLDER_PATHS = ("audiofolder", "manifest")  # data.path values that read data.data_dir and nothing else


@dataclass(frozen=True)
class SourceOptions:
    """Where each split's examples come from: one source (``path`` ...), several (``sources``, data=mix), or,
    for training, several (dataset config, split) pairs concatenated (``configs`` x ``splits``)."""

    path: str
    train_split: str | None = None
    validation_split: str | None = None
    test_split: str | None = None
    name: str | None = None
    data_dir: str | None = None
    revision: str | None = None
    cache_dir: str | None = None
    audio_column: str = AUDIO
    text_column: str = TEXT
    duration_column: str | None = None
    configs: tuple[str, ...] | None = None
    splits: tuple[str, ...] | None = None
    sources: dict[str, dict[str, Any]] | None = None
    mixing: str = "interleave"
    stopping_strategy: str = "first_exhausted"
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    preprocessed_dir: str | None = None

    def __post_init__(self) -> None:
        if self.path in LOCAL_FOLDER_PATHS and not self.data_dir:
            raise ValueError(
                f"data.data_dir={self.data_dir or 'null'}: data.path={self.path} reads a local folder; give "
                "data.data_dir=/path/to/it"
            )
        if not self.configs and not self.splits:
            return
        if not self.configs or not self.splits or len(self.configs) != len(self.splits):
            raise ValueError(
                f"data.configs={list(self.configs or [])} and data.splits={list(self.splits or [])}: two lists of "
                "the same length, one dataset config per split (e.g. [clean, clean, other] and "
                "[train.100, train.360, train.500])"
            )
        if self.train_split:
            raise ValueError(
                f"data.train_split={self.train_split} and data.configs/data.splits both name the training data: "
                "set data.train_split=null"
            )

    @property
    def train_parts(self) -> list[tuple[str, str]]:
        """The (dataset config, split) pairs of the training data, when ``configs`` x ``splits`` give it."""
        return list(zip(self.configs or (), self.splits or (), strict=True))

    def split_name(self, role: str) -> str | None:
        """What the dataset calls the split that plays ``role`` (train, validation, test) in this run."""
        if role == "train" and self.train_parts:
            return " + ".join(f"{config}:{split}" for config, split in self.train_parts)
        return getattr(self, f"{role}_split")

    def max_samples(self, role: str) -> int | None:
        return self.max_train_samples if role == "train" else self.max_eval_samples

    def load_kwargs(self) -> dict[str, Any]:
        """The arguments of :func:`asrkit.data.sources.load_split` that every split shares."""
        keys = ("path", "name", "data_dir", "revision", "cache_dir", "audio_column", "text_column", "duration_column")
        return {key: getattr(self, key) for key in keys}


@dataclass(frozen=True)
class FilterOptions:
    """Which examples are kept (:mod:`asrkit.data.filtering`) and how transcripts become label text."""

    min_duration_in_seconds: float = 0.0
    max_duration_in_seconds: float = 30.0
    eval_min_duration_in_seconds: float | None = None
    eval_max_duration_in_seconds: float | None = None
    require_text: bool = True
    do_lower_case: bool = False
    do_remove_punctuation: bool = False
    chars_to_ignore: str | tuple[str, ...] | None = None

    def rules(self, role: str, collator: Collator) -> FilterRules:
        """The drop rule of ``role``: training's range capped at the model's window and its label limit, or the
        evaluation range (whole unless data.eval_* is set)."""
        if role != "train":
            low, high = self.eval_min_duration_in_seconds or 0.0, self.eval_max_duration_in_seconds or math.inf
            return FilterRules(low, high, self.require_text)
        high = self.max_duration_in_seconds
        if collator.max_input_seconds is not None:
            high = min(high, collator.max_input_seconds)
        return FilterRules(self.min_duration_in_seconds, high, self.require_text, collator.max_label_length)

    def prepare_text(self) -> partial:
        """Transcript -> label text (``data.chars_to_ignore`` deleted, case and punctuation as set)."""
        return partial(
            prepare_label_text_ignoring,
            chars_to_ignore=chars_to_ignore_pattern(self.chars_to_ignore),
            do_lower_case=self.do_lower_case,
            do_remove_punctuation=self.do_remove_punctuation,
        )


@dataclass(frozen=True)
class BatchOptions:
    """How examples are batched: sizes (global; per device derived by :class:`asrkit.batch_plan.BatchPlan`),
    loader workers, duration bucketing (:class:`asrkit.data.sampler.DurationBucketBatchSampler`) and fixed
    training batch shapes (:mod:`asrkit.data.static_shapes`)."""

    global_batch_size: int = 32
    per_device_batch_size: int | None = None
    eval_batch_size: int | None = None
    num_workers: int = 0
    preprocessing_num_workers: int | None = None
    bucketing: dict[str, Any] = field(default_factory=dict)
    static_shapes: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.static_shapes, bool):
            raise ValueError(f"data.static_shapes={self.static_shapes!r}: true or false")

    @property
    def bucketed(self) -> bool:
        return bool(self.bucketing.get("enabled"))

    def sampler_options(self) -> dict[str, Any]:
        return {key: value for key, value in self.bucketing.items() if key != "enabled"}


@dataclass(frozen=True)
class StreamOptions:
    """``data.streaming``: read each split as it is consumed (:mod:`asrkit.data.streaming`)."""

    streaming: bool = False
    shuffle_buffer_size: int = 0
    shuffle_seed: int = 0  # also the seed of data=mix's interleaving


@dataclass(frozen=True)
class DataOptions:
    source: SourceOptions
    filters: FilterOptions
    batches: BatchOptions
    stream: StreamOptions

    @classmethod
    def parse(cls, keys: Mapping[str, Any]) -> DataOptions:
        """Route every ``data.*`` key to its record; an unknown key is an error that names it."""
        records = {"source": SourceOptions, "filters": FilterOptions, "batches": BatchOptions, "stream": StreamOptions}
        owner = {f.name: part for part, record in records.items() for f in dataclasses.fields(record)}
        unknown = sorted(set(keys) - set(owner))
        if unknown:
            raise ValueError(
                f"data.{unknown[0]}: not a data key (the data keys: {', '.join(sorted(owner))})"
                + (f"; also unknown: {', '.join(unknown[1:])}" if unknown[1:] else "")
            )
        values: dict[str, dict[str, Any]] = {part: {} for part in records}
        for key, value in keys.items():
            values[owner[key]][key] = _plain(value)
        options = cls(**{part: records[part](**values[part]) for part in records})
        if options.stream.streaming and options.batches.bucketed:
            raise ValueError(
                "data.bucketing.enabled=true needs every duration up front, which data.streaming=true "
                "does not read: turn one of them off"
            )
        if options.stream.streaming and options.batches.static_shapes:
            raise ValueError(
                "data.static_shapes=true pads to edges made from every training duration, which data.streaming=true "
                "does not read up front: turn one of them off"
            )
        return options

    def roles(self) -> list[str]:
        """The roles this data has a split for."""
        return [role for role in ROLES if self.source.split_name(role)]


def _plain(value: Any) -> Any:
    """Config nodes as plain containers (lists as tuples, so the records stay immutable)."""
    if isinstance(value, DictConfig | ListConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, list):
        return tuple(value)
    return value
