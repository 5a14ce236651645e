"""Map-style data: every split read and measured up front, filtered once, decoded lazily by the loaders.

Durations come from the source's duration column, and from each file's header where a cell is empty or the
source has no such column (``datasets.map``, cached by ``datasets``); no audio is decoded before a batch
needs it. The drop rule is :mod:`asrkit.data.filtering`'s: what headers and transcripts show is dropped up
front and counted in ``excluded``; what only decoding shows (silence, a file broken since) is skipped in its
batch and counted through :mod:`asrkit.data.drops`. Training examples are augmented where they are
decoded when the run augments (:mod:`asrkit.data.augment`); the sampler hands each index over with its
epoch. ``preprocess()`` saves which rows of each split survive (with their durations) under a key made of
every setting that decides it, so that a later run (on any number of ranks) reads that instead of measuring
and filtering again.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import torch
from torch.utils.data import DataLoader

from asrkit.data import preprocessed
from asrkit.data.audio import audio_name
from asrkit.data.augment import WaveformAugment
from asrkit.data.collator import Collator
from asrkit.data.columns import AUDIO, DURATION, TEXT
from asrkit.data.drops import CountingCollator, Drop
from asrkit.data.filtering import NAMED_FILES, cell_duration, decode_kept, header_duration, log_drops
from asrkit.data.options import DataOptions
from asrkit.data.reading import read_role
from asrkit.data.sampler import DurationBucketBatchSampler, own_generator
from asrkit.data.static_shapes import StaticShapeCollator, StaticShapes, audio_edges, check_collator, label_length

log = logging.getLogger(__name__)

PROBLEM = "_asrkit_problem"  # why a header cannot be used, in the measured headers


class AudioTextDataset(torch.utils.data.Dataset):
    """Decodes one example when a DataLoader asks for it; one that decoding drops (a broken file, silence)
    yields a :class:`asrkit.data.drops.Drop`, which the collate step counts as skipped and hands on.

    With ``augment``, an example asked for as ``(index, epoch)`` (training's sampler, ``with_epoch``) is
    augmented with that epoch's draws; one asked for by its index alone (``ASRDataModule.examples``) is not.
    """

    def __init__(
        self,
        dataset: datasets.Dataset,
        sampling_rate: int,
        prepare_text: Callable[[str], str],
        role: str = "train",
        durations: list[float] | None = None,
        augment: WaveformAugment | None = None,
    ) -> None:
        self.dataset = dataset
        self.sampling_rate = sampling_rate
        self.prepare_text = prepare_text
        self.role = role
        self.durations = durations
        self.augment = augment
        self.logged: Counter[str] = Counter()  # per reason, in this process: only the first files are named

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any] | Drop:
        index, epoch = key if isinstance(key, tuple) else (key, None)
        row = self.dataset[index]
        audio, reason = decode_kept(row[AUDIO], self.sampling_rate)
        if reason is not None:
            self.logged[reason] += 1
            if self.logged[reason] <= NAMED_FILES:
                log.warning("%s split: skipping %s: %s", self.role, audio_name(row[AUDIO]), reason)
            seconds = self.durations[index] if self.durations else None
            return Drop(self.role, index, reason, audio_name(row[AUDIO]), seconds)
        if self.augment is not None and epoch is not None:
            audio = self.augment(audio, index, epoch)
        text = self.prepare_text(row[TEXT] or "")  # no transcript (data.require_text=false): empty
        # scored against the transcript as the model learns to write it (label preparation applied)
        return {"index": index, "audio": audio, "text": text, "reference": text}


def _measured_headers(audio: list[dict[str, Any]]) -> dict[str, list[Any]]:
    measured = [header_duration(entry) for entry in audio]
    return {DURATION: [seconds for seconds, _ in measured], PROBLEM: [problem for _, problem in measured]}


class IndexedSplits:
    """The map-style provider behind :class:`asrkit.data.datamodule.ASRDataModule`."""

    def __init__(self, options: DataOptions, collator: Collator, augment: WaveformAugment | None = None) -> None:
        self.options = options
        self.collator = collator
        self.augment = augment  # of the training examples
        self.prepare_text = options.filters.prepare_text()
        self.datasets: dict[str, AudioTextDataset] = {}
        self.durations: dict[str, list[float]] = {}
        self.excluded: dict[str, dict[str, Any]] = {}  # per role: what the drop rule left out, and why
        self.position = {"epoch": 0, "batches": 0}  # training batches trained on in the current epoch
        self._resume: tuple[int, int] | None = None  # a checkpoint's position, for the next training loader

    # reading, measuring, filtering ------------------------------------------------------------------
    def prepare(self) -> None:
        """Read and measure every split once per node (the header reads are cached by ``datasets``)."""
        for role in self.options.roles():
            if not self._preprocessed_path(role).is_dir():
                self._measure(role)

    def setup(self, role: str, rank: int = 0, world_size: int = 1) -> None:
        if role in self.datasets:
            return
        dataset, durations = self._load_preprocessed(role) or self._filter(role, *self._measure(role))
        augment = self.augment if role == "train" else None
        rate = self.collator.sampling_rate
        self.datasets[role] = AudioTextDataset(dataset, rate, self.prepare_text, role, durations, augment)
        self.durations[role] = durations

    def training_transcripts(self) -> list[str]:
        """The prepared transcripts of the kept training examples (what a CTC vocabulary is built from)."""
        self.setup("train")
        return [self.prepare_text(text or "") for text in self.datasets["train"].dataset[TEXT]]

    def _measure(self, role: str) -> tuple[datasets.Dataset, list[float | None], list[str | None]]:
        """The split, each row's duration (the duration cell, else the file's header; None: unreadable) and why
        a header that was read cannot be used (None where it can, or was not read)."""
        dataset = read_role(self.options, role, self.prepare_text)
        cells = dataset[DURATION] if DURATION in dataset.column_names else [None] * len(dataset)
        durations = [cell_duration(cell) for cell in cells]
        problems: list[str | None] = [None] * len(durations)
        missing = [row for row, seconds in enumerate(durations) if seconds is None]
        if missing:
            headers = dataset.select(missing).map(
                _measured_headers,
                batched=True,
                input_columns=[AUDIO],
                remove_columns=dataset.column_names,
                num_proc=self.options.batches.preprocessing_num_workers,
                desc=f"reading audio headers ({role})",
            )
            for row, seconds, problem in zip(missing, headers[DURATION], headers[PROBLEM], strict=True):
                durations[row], problems[row] = seconds, problem
        return dataset, durations, problems

    def _filter(
        self, role: str, dataset: datasets.Dataset, durations: list[float | None], problems: list[str | None]
    ) -> tuple[datasets.Dataset, list[float]]:
        """The rows the drop rule keeps, and their durations; what it drops is counted in ``excluded``."""
        rules = self.options.filters.rules(role, self.collator)
        texts = [self.prepare_text(text or "") for text in dataset[TEXT]]
        label_lengths = rules.label_lengths(texts, self.collator.encode_text) or [None] * len(texts)
        dropped: Counter[str] = Counter()
        first: dict[str, list[int]] = {}  # the first rows of each reason, to name their files
        keep = []
        measured = zip(durations, texts, label_lengths, problems, strict=True)
        for row, (seconds, text, length, problem) in enumerate(measured):
            reason = rules.reason(seconds, text, length, problem)
            if reason is None:
                keep.append(row)
                continue
            dropped[reason] += 1
            if dropped[reason] <= NAMED_FILES:
                first.setdefault(reason, []).append(row)
        audio = dataset.select_columns([AUDIO])
        names = {reason: [audio_name(audio[row][AUDIO]) for row in numbers] for reason, numbers in first.items()}
        log_drops(f"{role} split", dropped, len(durations), names)
        kept = set(keep)
        left_out_seconds = sum(d for row, d in enumerate(durations) if row not in kept and d is not None)
        self.excluded[role] = {
            "utterances": sum(dropped.values()),
            "hours": left_out_seconds / 3600,
            "reasons": dict(dropped),
        }
        if not keep:
            raise ValueError(
                f"{role} split ({self.options.source.split_name(role)}) of {self.options.source.path}: no example is "
                f"left after filtering (dropped: {dict(dropped)})"
            )
        seconds = [durations[row] for row in keep]
        log.info("%s split: %d examples, %.2f h of audio", role, len(keep), sum(seconds) / 3600)
        return dataset.select(keep), seconds

    # loaders ----------------------------------------------------------------------------------------
    def loader(self, role: str, batch_size: int, longest_first: bool = False) -> DataLoader:
        """Training: batches of ``batch_size`` in a seeded order (duration-bucketed, or one bucket: a plain
        shuffle) that a resumed run continues where it stopped, padded to fixed shapes with
        ``data.static_shapes`` (each bucket's incomplete batch left out); evaluation: in order, or with
        ``longest_first`` sorted by duration, longest first (batches of similar lengths pad less; the largest
        comes first)."""
        batches = self.options.batches
        seed = batches.bucketing.get("seed", 0)
        common = {
            "num_workers": batches.num_workers,
            "collate_fn": CountingCollator(self.collator),
            "persistent_workers": batches.num_workers > 0,
            "pin_memory": False,
            "generator": own_generator(seed),
        }
        if role != "train" and longest_first:
            durations = self.durations[role]
            order = sorted(range(len(durations)), key=lambda index: -durations[index])  # stable: ties in order
            batches = [order[first : first + batch_size] for first in range(0, len(order), batch_size)]
            return DataLoader(self.datasets[role], batch_sampler=batches, **common)
        if role != "train":
            return DataLoader(self.datasets[role], batch_size=batch_size, **common)
        options = batches.sampler_options() if batches.bucketed else {"num_buckets": 1}
        options.setdefault("seed", seed)
        if batches.static_shapes:
            check_collator(self.collator)
            options["drop_last"] = True  # one batch size per bucket
        sampler = DurationBucketBatchSampler(
            None,
            self.durations["train"],
            batch_size,
            resume=self._resume,
            with_epoch=self.augment is not None,
            **options,
        )
        self._resume = None
        if batches.static_shapes:
            common["collate_fn"] = CountingCollator(StaticShapeCollator(self.collator, self._static_shapes(sampler)))
        return DataLoader(self.datasets[role], batch_sampler=sampler, **common)

    def _static_shapes(self, sampler: DurationBucketBatchSampler) -> StaticShapes:
        """The edges of the sampler's buckets and the label length (:mod:`asrkit.data.static_shapes`), logged."""
        rate = self.collator.sampling_rate
        longest = self.augment.max_samples / rate if self.augment is not None else None  # speed perturbation's bound
        edges = audio_edges(sampler.durations, sampler.buckets, rate, longest)
        shapes = StaticShapes(edges, label_length(self.collator, self.training_transcripts()))
        sizes = zip(sampler.buckets, sampler.bucket_batch_sizes, strict=True)
        left_out = sum(len(bucket) % size for bucket, size in sizes)
        log.info(
            "static shapes: audio padded to %d edges (%s s), labels to %d tokens; each bucket's incomplete batch "
            "is left out (%d of %d examples per epoch)",
            len(edges),
            ", ".join(f"{edge / rate:.2f}" for edge in edges),
            shapes.label_length,
            left_out,
            len(sampler.durations),
        )
        return shapes

    def record(self, batch: Any, epoch: int | None) -> Any:
        """Count a training batch about to be trained on (``epoch``; None for an evaluation batch)."""
        if epoch is not None:
            if epoch != self.position["epoch"]:
                self.position = {"epoch": epoch, "batches": 0}
            self.position["batches"] += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        """Where training stands in its epoch (saved in Lightning checkpoints)."""
        return {"sampler_position": dict(self.position)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        position = state.get("sampler_position")  # absent in checkpoints of streaming runs and older ones
        if position:
            self.position = dict(position)
            self._resume = (position["epoch"], position["batches"])

    # preprocess once (preprocess_only=true), load everywhere --------------------------------------------
    def preprocess(self) -> dict[str, Path]:
        """Measure and filter every split once and save which rows survive, with their durations.

        What is saved is small: row indices into the source split and durations
        (``datasets.Dataset.save_to_disk``), never a second copy of the audio.
        """
        saved = {}
        for role in self.options.roles():
            dataset, durations, problems = self._measure(role)
            numbered = dataset.add_column(preprocessed.ROW, list(range(len(dataset))))
            kept, kept_durations = self._filter(role, numbered, durations, problems)
            path = self._preprocessed_path(role)
            preprocessed.save_rows(path, kept, kept_durations, dataset, self.excluded[role])
            log.info("%s split: saved the preprocessed rows to %s", role, path)
            saved[role] = path
        return saved

    def _preprocessed_path(self, role: str) -> Path:
        return preprocessed.rows_path(self.options, role, self.collator, self.prepare_text)

    def _load_preprocessed(self, role: str) -> tuple[datasets.Dataset, list[float]] | None:
        loaded = preprocessed.load_rows(self.options, role, self.prepare_text, self._preprocessed_path(role))
        if loaded is None:
            return None
        dataset, durations, excluded = loaded
        if excluded is not None:  # (rows saved before asrkit kept this: none to report)
            self.excluded[role] = excluded
        return dataset, durations
