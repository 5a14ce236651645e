"""ASRDataModule: splits from a source, cheap length filters, lazy decoding, and batches sized per device."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any

import datasets
import lightning as L
import torch
from torch.utils.data import DataLoader

from asrkit.data.audio import AudioDecodeError, audio_duration, decode_audio
from asrkit.data.sampler import DurationBucketBatchSampler
from asrkit.data.sources import AUDIO, DURATION, TEXT, load_split
from asrkit.data.text import chars_to_ignore_pattern, prepare_label_text_ignoring

log = logging.getLogger(__name__)

UNREADABLE = -1.0  # duration recorded for a file whose header cannot be read


def derive_accumulation(global_batch_size: int, per_device_batch_size: int | None, world_size: int) -> int:
    """Gradient-accumulation steps that make ``per_device x world_size x steps == global_batch_size``."""
    per_device = per_device_batch_size or global_batch_size // world_size
    if per_device < 1 or global_batch_size % (per_device * world_size):
        raise ValueError(
            f"data.global_batch_size={global_batch_size} is not a multiple of data.per_device_batch_size="
            f"{per_device_batch_size} x world size {world_size}; change one of them so that it divides"
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


class AudioTextDataset(torch.utils.data.Dataset):
    """Decodes one example when a DataLoader asks for it; a file that fails to decode yields ``None``."""

    def __init__(
        self, dataset: datasets.Dataset, sampling_rate: int, prepare_text: Callable[[str], str]
    ) -> None:
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
        return {"index": index, "audio": audio, "text": self.prepare_text(row[TEXT]), "reference": row[TEXT]}


class ASRDataModule(L.LightningDataModule):
    """Train/validation/test splits of one source, filtered by duration and label length.

    Durations come from ``duration_column`` when the dataset has one, else from each file's header;
    no audio is decoded before a batch needs it. The ``collator`` (one per model family, built by the
    model module) tokenises labels and builds model inputs.
    """

    def __init__(
        self,
        path: str,
        train_split: str,
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
        do_lower_case: bool = False,
        do_remove_punctuation: bool = False,
        max_train_samples: int | None = None,
        max_eval_samples: int | None = None,
        global_batch_size: int = 32,
        per_device_batch_size: int | None = None,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        preprocessing_num_workers: int | None = None,
        chars_to_ignore: str | list[str] | None = None,
        bucketing: dict[str, Any] | None = None,
        collator: Any = None,
    ) -> None:
        super().__init__()
        if collator is None:
            raise ValueError(
                "ASRDataModule needs the model's collator: build it with collator=module.collator"
            )
        self.source = {
            "path": path, "name": name, "data_dir": data_dir, "revision": revision, "cache_dir": cache_dir,
            "audio_column": audio_column, "text_column": text_column, "duration_column": duration_column,
        }  # fmt: skip
        self.splits = {"train": train_split, "validation": validation_split, "test": test_split}
        max_input = getattr(collator, "max_input_seconds", None)
        if max_input is not None and max_duration_in_seconds > max_input:
            log.info("max duration %.1f s: the model's input window (data asked for %.1f s)",
                     max_input, max_duration_in_seconds)  # fmt: skip
            max_duration_in_seconds = max_input
        self.duration_range = (min_duration_in_seconds, max_duration_in_seconds)
        self.prepare_text = partial(
            prepare_label_text_ignoring, chars_to_ignore=chars_to_ignore_pattern(chars_to_ignore),
            do_lower_case=do_lower_case, do_remove_punctuation=do_remove_punctuation,
        )  # fmt: skip
        self.bucketing = dict(bucketing or {})  # DurationBucketBatchSampler arguments, and `enabled`
        self.max_samples = {
            "train": max_train_samples,
            "validation": max_eval_samples,
            "test": max_eval_samples,
        }
        self.per_device_batch_size = per_device_batch_size or global_batch_size
        self.eval_batch_size = eval_batch_size or self.per_device_batch_size
        self.num_workers = num_workers
        self.preprocessing_num_workers = preprocessing_num_workers
        self.collator = collator
        self.datasets: dict[str, AudioTextDataset] = {}
        self.durations: dict[str, list[float]] = {}

    def prepare_data(self) -> None:
        """Download and index every split once per node (the header reads are cached by ``datasets``)."""
        for split in self.splits:
            if self.splits[split]:
                self._load(split)

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ["train", "validation"], "validate": ["validation"], "test": ["test"]}
        for split in wanted.get(stage or "", list(self.splits)):
            if split not in self.datasets and self.splits[split]:
                dataset, durations = self._filter(split, *self._load(split))
                if split == "train" and hasattr(self.collator, "build_vocabulary"):  # CTC, from the texts
                    self.collator.build_vocabulary([self.prepare_text(text) for text in dataset[TEXT]])
                self.datasets[split] = AudioTextDataset(
                    dataset, self.collator.sampling_rate, self.prepare_text
                )
                self.durations[split] = durations

    def _load(self, split: str) -> tuple[datasets.Dataset, list[float]]:
        dataset = load_split(split=self.splits[split], **self.source)
        if self.max_samples[split] is not None:
            dataset = dataset.select(range(min(self.max_samples[split], len(dataset))))
        if DURATION in dataset.column_names:
            return dataset, [UNREADABLE if d is None else float(d) for d in dataset[DURATION]]
        lengths = dataset.map(
            _header_durations, batched=True, input_columns=[AUDIO], remove_columns=dataset.column_names,
            num_proc=self.preprocessing_num_workers, desc=f"reading audio headers ({split})",
        )  # fmt: skip
        return dataset, lengths[DURATION]

    def _filter(
        self, split: str, dataset: datasets.Dataset, durations: list[float]
    ) -> tuple[datasets.Dataset, list[float]]:
        """Drop unreadable files, out-of-range durations, empty texts and (train) over-long labels."""
        low, high = self.duration_range
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
            elif not text:
                dropped["empty transcript"] += 1
            elif label_lengths and max_label_length and label_lengths[index] > max_label_length:
                dropped[f"label longer than {max_label_length} tokens"] += 1
            else:
                keep.append(index)
        for reason, count in dropped.items():
            log.warning("%s split: dropped %d of %d examples: %s", split, count, len(durations), reason)
        if not keep:
            raise ValueError(
                f"{split} split ({self.splits[split]}) of {self.source['path']}: no example is left "
                f"after filtering (dropped: {dict(dropped)})"
            )
        log.info(
            "%s split: %d examples, %.2f h of audio", split, len(keep), sum(durations[i] for i in keep) / 3600
        )
        return dataset.select(keep), [durations[i] for i in keep]

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.datasets[split], batch_size=batch_size, shuffle=shuffle, num_workers=self.num_workers,
            collate_fn=self.collator, persistent_workers=self.num_workers > 0, pin_memory=False,
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        if self.bucketing.get("enabled"):
            options = {key: value for key, value in self.bucketing.items() if key != "enabled"}
            durations, batch_size = self.durations["train"], self.per_device_batch_size
            sampler = DurationBucketBatchSampler(None, durations, batch_size, **options)
            return DataLoader(
                self.datasets["train"], batch_sampler=sampler, num_workers=self.num_workers,
                collate_fn=self.collator, persistent_workers=self.num_workers > 0, pin_memory=False,
            )  # fmt: skip
        return self._loader("train", self.per_device_batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)
