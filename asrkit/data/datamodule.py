"""ASRDataModule: splits from a source, cheap length filters, lazy decoding, and batches sized per device."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import datasets
import lightning as L
import torch
from torch.utils.data import DataLoader

from asrkit.data.audio import AudioDecodeError, audio_duration, decode_audio
from asrkit.data.mixing import load_mixture
from asrkit.data.sampler import DurationBucketBatchSampler
from asrkit.data.sources import AUDIO, DURATION, TEXT, Split, load_split
from asrkit.data.streaming import AudioTextStream, StreamProgress, shard_stream, stream_loader
from asrkit.data.text import chars_to_ignore_pattern, prepare_label_text_ignoring

log = logging.getLogger(__name__)

UNREADABLE = -1.0  # duration recorded for a file whose header cannot be read


def derive_accumulation(global_batch_size: int, per_device_batch_size: int | None, world_size: int) -> int:
    """Gradient-accumulation steps that make ``per_device x world_size x steps == global_batch_size``."""
    per_device = per_device_batch_size or global_batch_size // world_size
    if per_device < 1 or global_batch_size % (per_device * world_size):
        raise ValueError(
            f"data.global_batch_size={global_batch_size} is not a multiple of data.per_device_batch_size="
            f"{per_device_batch_size or 'null'} x world size {world_size} (hw.devices x hw.num_nodes); "
            "change the global or the per-device batch size so that it divides"
        )
    return global_batch_size // (per_device * world_size)


def _header_durations(audio: list[dict[str, Any]]) -> dict[str, list[float]]:
    durations = []
    for entry in audio:
        try:
            durations.append(audio_duration(entry))
        except AudioDecodeError:
            durations.append(UNREADABLE)
    return {DURATION: durations}


def load_concatenated(parts: list[tuple[str, str]], **source: Any) -> datasets.Dataset:
    """Split ``s`` of dataset config ``c`` for each ``(c, s)`` of ``parts``, concatenated in that order."""
    return datasets.concatenate_datasets(
        [load_split(split=split, **(source | {"name": config})) for config, split in parts]
    )


def _config_split_pairs(configs: Any, splits: Any, train_split: str | None) -> list[tuple[str, str]]:
    if not configs or not splits or len(configs) != len(splits):
        raise ValueError(
            f"data.configs={configs} and data.splits={splits}: two lists of the same length, one dataset "
            "config per split (e.g. [clean, clean, other] and [train.100, train.360, train.500])"
        )
    if train_split:
        raise ValueError(
            f"data.train_split={train_split} and data.configs/data.splits both name the training data: "
            "set data.train_split=null"
        )
    return [(str(config), str(split)) for config, split in zip(configs, splits, strict=True)]


class AudioTextDataset(torch.utils.data.Dataset):
    """Decodes one example when a DataLoader asks for it; a file that fails to decode yields ``None``."""

    def __init__(self, dataset: datasets.Dataset, sampling_rate: int, prepare_text: Callable[[str], str]) -> None:
        self.dataset = dataset
        self.sampling_rate = sampling_rate
        self.prepare_text = prepare_text

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        row = self.dataset[index]
        try:
            audio = decode_audio(row[AUDIO], self.sampling_rate)
        except AudioDecodeError as error:
            log.warning("skipping undecodable audio: %s", error)
            return None
        text = self.prepare_text(row[TEXT] or "")  # no transcript (data.require_text=false): empty
        # scored against the transcript as the model learns to write it (label preparation applied)
        return {"index": index, "audio": audio, "text": text, "reference": text}


class ASRDataModule(L.LightningDataModule):
    """Train/validation/test splits of one source, filtered by duration and label length.

    Durations come from ``duration_column`` when the dataset has one, else from each file's header;
    no audio is decoded before a batch needs it. With ``streaming`` each split is read, filtered and decoded
    as it is consumed instead (:mod:`asrkit.data.streaming`); ``sources`` (``data=mix``) combines several
    sources (:mod:`asrkit.data.mixing`). The ``collator`` (one per model family, built by the
    model module) tokenises labels and builds model inputs.
    """

    def __init__(
        self,
        path: str,
        train_split: str | None,
        validation_split: str,
        test_split: str | None = None,
        name: str | None = None,
        data_dir: str | None = None,
        revision: str | None = None,
        cache_dir: str | None = None,
        audio_column: str = AUDIO,
        text_column: str = TEXT,
        duration_column: str | None = None,
        min_duration_in_seconds: float = 0.0,
        max_duration_in_seconds: float = 30.0,
        eval_min_duration_in_seconds: float | None = None,
        eval_max_duration_in_seconds: float | None = None,
        do_lower_case: bool = False,
        do_remove_punctuation: bool = False,
        max_train_samples: int | None = None,
        max_eval_samples: int | None = None,
        global_batch_size: int = 32,
        per_device_batch_size: int | None = None,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        preprocessing_num_workers: int | None = None,
        configs: list[str] | None = None,
        splits: list[str] | None = None,
        require_text: bool = True,
        preprocessed_dir: str | None = None,
        chars_to_ignore: str | list[str] | None = None,
        bucketing: dict[str, Any] | None = None,
        streaming: bool = False,
        shuffle_buffer_size: int = 0,
        shuffle_seed: int = 0,
        sources: dict[str, dict[str, Any]] | None = None,
        mixing: str = "interleave",
        stopping_strategy: str = "first_exhausted",
        collator: Any = None,
    ) -> None:
        super().__init__()
        if collator is None:
            raise ValueError("ASRDataModule needs the model's collator: build it with collator=module.collator")
        self.source = {
            "path": path,
            "name": name,
            "data_dir": data_dir,
            "revision": revision,
            "cache_dir": cache_dir,
            "audio_column": audio_column,
            "text_column": text_column,
            "duration_column": duration_column,
        }
        # training data from several (dataset config, split) pairs, concatenated (data.configs, data.splits)
        self.train_parts = _config_split_pairs(configs, splits, train_split) if configs or splits else []
        if self.train_parts:
            train_split = " + ".join(f"{config}:{split}" for config, split in self.train_parts)
        self.require_text = require_text  # false: keep examples with an empty transcript (pre-training)
        self.preprocessed_dir = preprocessed_dir
        self.splits = {"train": train_split, "validation": validation_split, "test": test_split}
        max_input = getattr(collator, "max_input_seconds", None)
        if max_input is not None and max_duration_in_seconds > max_input:
            log.info(
                "max duration %.1f s: the model's input window (data asked for %.1f s)",
                max_input,
                max_duration_in_seconds,
            )
            max_duration_in_seconds = max_input
        self.duration_range = (min_duration_in_seconds, max_duration_in_seconds)  # training
        # validation and test are whole unless an eval-specific filter is set (what it leaves out is reported)
        self.eval_duration_range = (eval_min_duration_in_seconds or 0.0, eval_max_duration_in_seconds or math.inf)
        self.excluded: dict[str, dict[str, Any]] = {}  # per split: what the drop rule left out
        self.prepare_text = partial(
            prepare_label_text_ignoring,
            chars_to_ignore=chars_to_ignore_pattern(chars_to_ignore),
            do_lower_case=do_lower_case,
            do_remove_punctuation=do_remove_punctuation,
        )
        self.bucketing = dict(bucketing or {})  # DurationBucketBatchSampler arguments, and `enabled`
        self.max_samples = {"train": max_train_samples, "validation": max_eval_samples, "test": max_eval_samples}
        self.global_batch_size = global_batch_size
        self._per_device_batch_size = per_device_batch_size
        self._eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.preprocessing_num_workers = preprocessing_num_workers
        self.collator = collator
        # data.streaming: read each split as it is consumed (asrkit.data.streaming)
        self.streaming = streaming
        self.stream_options = {"shuffle_buffer_size": shuffle_buffer_size, "seed": shuffle_seed}
        self.stream_progress = StreamProgress()
        if streaming and self.bucketing.get("enabled"):
            raise ValueError(
                "data.bucketing.enabled=true needs every duration up front, which data.streaming=true "
                "does not read: turn one of them off"
            )
        # data=mix: several sources combined (asrkit.data.mixing)
        self.sources = sources
        self.mixing = {"strategy": mixing, "stopping_strategy": stopping_strategy, "seed": shuffle_seed}
        self.datasets: dict[str, AudioTextDataset | AudioTextStream] = {}
        self.durations: dict[str, list[float]] = {}

    @property
    def per_device_batch_size(self) -> int:
        """``data.per_device_batch_size``, or the global batch split over the world (no accumulation)."""
        if self._per_device_batch_size:
            return self._per_device_batch_size
        world_size = self.trainer.world_size if self.trainer is not None else 1
        return max(1, self.global_batch_size // world_size)

    @property
    def eval_batch_size(self) -> int:
        return self._eval_batch_size or self.per_device_batch_size

    def prepare_data(self) -> None:
        """Download and index every split once per node (the header reads are cached by ``datasets``)."""
        if self.streaming:  # nothing is downloaded or indexed up front
            return
        for split in self.splits:
            if self.splits[split] and not self._preprocessed_path(split).is_dir():
                self._load(split)

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ["train", "validation"], "validate": ["validation"], "test": ["test"]}
        for split in wanted.get(stage or "", list(self.splits)):
            if split not in self.datasets and self.splits[split] and self.streaming:
                self.datasets[split] = self._stream(split)
            elif split not in self.datasets and self.splits[split]:
                dataset, durations = self._load_preprocessed(split) or self._filter(split, *self._load(split))
                if split == "train" and hasattr(self.collator, "build_vocabulary"):  # CTC, from the texts
                    self.collator.build_vocabulary([self.prepare_text(text) for text in dataset[TEXT]])
                self.datasets[split] = AudioTextDataset(dataset, self.collator.sampling_rate, self.prepare_text)
                self.durations[split] = durations

    def _read(self, split: str, streaming: bool = False) -> Split:
        source = self.source | {"streaming": streaming}
        if split == "train" and self.train_parts:
            dataset = load_concatenated(self.train_parts, **source)
        elif self.sources:
            defaults = self.source | {f"{role}_split": name for role, name in self.splits.items()}
            dataset = load_mixture(
                self.sources, split, defaults, streaming=streaming, prepare_text=self.prepare_text, **self.mixing
            )
        else:
            dataset = load_split(split=self.splits[split], **source)
        if streaming:  # max_samples is applied by shard_stream
            return dataset
        if self.max_samples[split] is not None:
            dataset = dataset.select(range(min(self.max_samples[split], len(dataset))))
        return dataset

    def _load(self, split: str) -> tuple[datasets.Dataset, list[float]]:
        dataset = self._read(split)
        if DURATION in dataset.column_names:
            return dataset, [UNREADABLE if d is None else float(d) for d in dataset[DURATION]]
        lengths = dataset.map(
            _header_durations,
            batched=True,
            input_columns=[AUDIO],
            remove_columns=dataset.column_names,
            num_proc=self.preprocessing_num_workers,
            desc=f"reading audio headers ({split})",
        )
        return dataset, lengths[DURATION]

    def duration_range_of(self, split: str) -> tuple[float, float]:
        """The duration filter of ``split``: training's, or the evaluation one (none unless set)."""
        return self.duration_range if split == "train" else self.eval_duration_range

    def _filter(
        self, split: str, dataset: datasets.Dataset, durations: list[float]
    ) -> tuple[datasets.Dataset, list[float]]:
        """Drop unreadable files, out-of-range durations, empty texts and (train) over-long labels."""
        low, high = self.duration_range_of(split)
        texts = [self.prepare_text(text or "") for text in dataset[TEXT]]
        max_label_length = getattr(self.collator, "max_label_length", None)
        encode = split == "train" and max_label_length
        label_lengths = [len(ids) for ids in self.collator.encode_text(texts)] if encode else None
        dropped: Counter[str] = Counter()
        keep = []
        for index, (duration, text) in enumerate(zip(durations, texts, strict=True)):
            if duration == UNREADABLE:
                dropped["unreadable audio"] += 1
            elif not low <= duration <= high:
                dropped[f"duration outside [{low}, {high}] s"] += 1
            elif not text and self.require_text:
                dropped["empty transcript"] += 1
            elif label_lengths and max_label_length and label_lengths[index] > max_label_length:
                dropped[f"label longer than {max_label_length} tokens"] += 1
            else:
                keep.append(index)
        for reason, count in dropped.items():
            log.warning("%s split: dropped %d of %d examples: %s", split, count, len(durations), reason)
        kept_set = set(keep)
        self.excluded[split] = {
            "utterances": sum(dropped.values()),
            "hours": sum(d for i, d in enumerate(durations) if i not in kept_set and d != UNREADABLE) / 3600,
            "reasons": dict(dropped),
        }
        if not keep:
            raise ValueError(
                f"{split} split ({self.splits[split]}) of {self.source['path']}: no example is left "
                f"after filtering (dropped: {dict(dropped)})"
            )
        log.info("%s split: %d examples, %.2f h of audio", split, len(keep), sum(durations[i] for i in keep) / 3600)
        return dataset.select(keep), [durations[i] for i in keep]

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        if self.streaming:
            return self._stream_loader(split, batch_size)
        return DataLoader(
            self.datasets[split],
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=self.collator,
            persistent_workers=self.num_workers > 0,
            pin_memory=False,
        )

    def train_dataloader(self) -> DataLoader:
        if self.streaming:
            return self._stream_loader("train", self.per_device_batch_size)
        if self.bucketing.get("enabled"):
            options = {key: value for key, value in self.bucketing.items() if key != "enabled"}
            durations, batch_size = self.durations["train"], self.per_device_batch_size
            sampler = DurationBucketBatchSampler(None, durations, batch_size, **options)
            return DataLoader(
                self.datasets["train"],
                batch_sampler=sampler,
                num_workers=self.num_workers,
                collate_fn=self.collator,
                persistent_workers=self.num_workers > 0,
                pin_memory=False,
            )
        return self._loader("train", self.per_device_batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)

    # streaming (data.streaming=true) ---------------------------------------------------------------
    def _rank(self) -> tuple[int, int]:
        return (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)

    def _stream(self, split: str) -> AudioTextStream:
        """This rank's part of a split, filtered and decoded as it is read; training's never ends."""
        rank, world_size = self._rank()
        train = split == "train"
        dataset = self._read(split, streaming=True)
        if train and getattr(self.collator, "vocabulary", None) is not None:  # CTC: vocabulary from the texts
            log.info("reading the training transcripts once to build the CTC vocabulary")
            texts = [self.prepare_text(row[TEXT] or "") for row in dataset.select_columns([TEXT])]
            self.collator.build_vocabulary(texts)
        options = self.stream_options if train else {}
        dataset = shard_stream(
            dataset, **options, rank=rank, world_size=world_size, max_samples=self.max_samples[split]
        )
        return AudioTextStream(
            dataset,
            split,
            self.collator.sampling_rate,
            self.prepare_text,
            self.duration_range_of(split),
            collator=self.collator if train else None,
            require_text=self.require_text,
            endless=train,
            rank=rank,
            world_size=world_size,
        )

    def _stream_loader(self, split: str, batch_size: int) -> DataLoader:
        stream = self.datasets[split]
        if split == "train":  # a resumed run continues where the checkpoint's training batches ended
            stream.resume_from = self.stream_progress.resume_positions(*self._rank(), self.num_workers)
        return stream_loader(stream, batch_size, self.num_workers, self.collator)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return self.stream_progress.record(batch)  # the training batch about to be trained on

    def state_dict(self) -> dict[str, Any]:
        """The training stream's position (saved in Lightning checkpoints); nothing for map-style data."""
        return self.stream_progress.state_dict() if self.streaming else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.stream_progress.load_state_dict(state_dict)

    # preprocess once (preprocess_only=true), load everywhere -----------------------------------------
    def preprocess(self) -> dict[str, Path]:
        """Measure and filter every split once and save which rows survive, with their durations.

        A later run with the same data settings (on any number of ranks) reads this instead of reading
        audio headers and filtering again. What is saved is small: row indices into the source split and
        durations (``datasets.Dataset.save_to_disk``), never a second copy of the audio.
        """
        saved = {}
        for split, name in self.splits.items():
            if not name:
                continue
            dataset, durations = self._load(split)
            numbered = dataset.add_column("_asrkit_row", list(range(len(dataset))))
            kept, kept_durations = self._filter(split, numbered, durations)
            path = self._preprocessed_path(split)
            rows = datasets.Dataset.from_dict({"index": kept["_asrkit_row"], DURATION: kept_durations})
            rows.save_to_disk(str(path))
            source = {"fingerprint": dataset._fingerprint, "rows": len(dataset)}  # of the unfiltered split
            (path / "asrkit.json").write_text(json.dumps(source) + "\n")
            log.info("%s split: saved the preprocessed rows to %s", split, path)
            saved[split] = path
        return saved

    def _preprocessed_path(self, split: str) -> Path:
        """``<preprocessed_dir>/<split>-<hash of every setting that decides which rows survive>``."""
        settings = {
            "source": self.source,
            "split": self.splits[split],
            "parts": self.train_parts if split == "train" else [],
            "duration_range": self.duration_range_of(split),
            "max_samples": self.max_samples[split],
            "text": self.prepare_text.keywords,
            "require_text": self.require_text,
            "collator": type(self.collator).__qualname__,
            "max_label_length": getattr(self.collator, "max_label_length", None),
        }
        key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
        cache = self.source["cache_dir"] or datasets.config.HF_DATASETS_CACHE
        return Path(self.preprocessed_dir or Path(cache) / "asrkit_preprocessed") / f"{split}-{key}"

    def _load_preprocessed(self, split: str) -> tuple[datasets.Dataset, list[float]] | None:
        path = self._preprocessed_path(split)
        if not path.is_dir():
            return None
        rows = datasets.load_from_disk(str(path))
        dataset = self._read(split)
        source = json.loads((path / "asrkit.json").read_text())
        if source != {"fingerprint": dataset._fingerprint, "rows": len(dataset)}:
            log.warning(
                "%s split changed since %s was preprocessed (%s): reading and filtering it again; "
                "run preprocess_only=true to refresh",
                split,
                path,
                source,
            )
            return None
        durations = [float(d) for d in rows[DURATION]]
        log.info(
            "%s split: %d examples, %.2f h of audio (preprocessed: %s)", split, len(rows), sum(durations) / 3600, path
        )
        return dataset.select(rows["index"]), durations
