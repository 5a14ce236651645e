"""ASRDataModule: the Lightning hooks of the data path, handed off to a map-style or a streaming provider.

The flat ``data.*`` keys are parsed into :class:`asrkit.data.options.DataOptions`. With ``data.streaming`` the
splits are read, filtered and decoded as they are consumed (:class:`asrkit.data.streaming.StreamingSplits`);
otherwise they are read and measured up front and decoded lazily (:class:`asrkit.data.indexed.IndexedSplits`).
Both keep an example by the one drop rule of :mod:`asrkit.data.filtering`. ``sources`` (``data=mix``) combines
several sources (:mod:`asrkit.data.mixing`). The ``collator`` (one per model family, built by the model module;
:class:`asrkit.data.collator.Collator` says what is asked of it) makes the batches. The per-device batch size
comes from the run's :class:`asrkit.batch_plan.BatchPlan`. What the loaders drop while they read (silence, a
file broken since it was measured; a stream's every drop) is taken off the batches and added to ``excluded``
(:mod:`asrkit.data.drops`). ``extra_validation`` (resolved by :func:`asrkit.data.extra_validation.resolve`) adds
other sets to validation, each read by a datamodule of its own: its loaders follow the primary one in
``val_dataloader``, in the order of ``extra_validation_names``. ``augment`` (``augment.waveform``: ``train()``
passes it, evaluation does not) augments the training examples as they are decoded (:mod:`asrkit.data.augment`).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from asrkit.batch_plan import BatchPlan
from asrkit.data.augment import training_augment
from asrkit.data.collator import Collator
from asrkit.data.drops import DropLog
from asrkit.data.indexed import IndexedSplits
from asrkit.data.options import DataOptions
from asrkit.data.streaming import StreamingSplits

log = logging.getLogger(__name__)

STAGE_ROLES = {"fit": ["train", "validation"], "validate": ["validation"], "test": ["test"]}


class ASRDataModule(L.LightningDataModule):
    """Train/validation/test splits of a data config, filtered, batched per device and collated by the model.

    ``batch_plan`` is the run's (``train()`` makes it once for the Trainer and the datamodule); without one
    (evaluation, tests) it is made from the data keys and the trainer's world size.
    """

    def __init__(
        self,
        collator: Collator | None = None,
        batch_plan: BatchPlan | None = None,
        extra_validation: Mapping[str, Mapping[str, Any]] | None = None,
        augment: Mapping[str, Any] | None = None,
        **keys: Any,
    ) -> None:
        super().__init__()
        if collator is None:
            raise ValueError("ASRDataModule needs the model's collator: build it with collator=module.collator")
        extra_validation = extra_validation or {}
        # resolved entries are data keys (every source has a path); a config option's name is not
        unresolved = next(
            (name for name, entry in extra_validation.items() if not isinstance(entry, Mapping) or "path" not in entry),
            None,
        )
        if unresolved is not None:
            raise ValueError(
                f"data.extra_validation.{unresolved}: give the datamodule resolved data keys "
                "(asrkit.data.extra_validation.resolve(cfg), as train() does)"
            )
        self.extra_validation = {
            name: ASRDataModule(collator, batch_plan, **entry) for name, entry in extra_validation.items()
        }
        for name, entry in extra_validation.items():
            source = entry.get("data_dir") or entry["path"]
            split = entry["validation_split"]
            log.info("extra validation set %s: %s, split %s (logged as val/%s/wer)", name, source, split, name)
        self.options = DataOptions.parse(keys)
        self.collator = collator
        self._batch_plan = batch_plan
        longest = self.options.filters.rules("train", collator).max_seconds  # what speed perturbation may not pass
        self.augment = training_augment(augment, collator.sampling_rate, longest)
        provider = StreamingSplits if self.options.stream.streaming else IndexedSplits
        self.splits: IndexedSplits | StreamingSplits = provider(self.options, collator, self.augment)
        self.drops = DropLog()

    @property
    def extra_validation_names(self) -> list[str]:
        """The extra validation sets, in the order of their loaders (after the primary one)."""
        return list(self.extra_validation)

    @property
    def streaming(self) -> bool:
        return self.options.stream.streaming

    @property
    def excluded(self) -> dict[str, dict[str, Any]]:
        """Per role, the utterances (and hours) the drop rule left out, and why: up front, and as the loaders
        read (a role no loader has read yet is absent while streaming). An extra validation set's are under
        ``validation/<name>``."""
        excluded = self.drops.merged(self.splits.excluded)
        for name, extra in self.extra_validation.items():
            if "validation" in extra.excluded:
                excluded[f"validation/{name}"] = extra.excluded["validation"]
        return excluded

    @property
    def batch_plan(self) -> BatchPlan:
        if self._batch_plan is None:
            world_size = self.trainer.world_size if self.trainer is not None else 1
            batches = self.options.batches
            self._batch_plan = BatchPlan.make(batches.global_batch_size, batches.per_device_batch_size, world_size)
        return self._batch_plan

    @property
    def per_device_batch_size(self) -> int:
        return self.batch_plan.per_device_batch_size

    @property
    def eval_batch_size(self) -> int:
        return self.options.batches.eval_batch_size or self.per_device_batch_size

    def _rank(self) -> tuple[int, int]:
        return (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)

    # Lightning's hooks --------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Read and index every split once per node (nothing while streaming)."""
        self.splits.prepare()
        for extra in self.extra_validation.values():
            extra.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        for role in STAGE_ROLES.get(stage or "", self.options.roles()):
            if self.options.source.split_name(role):
                self.splits.setup(role, *self._rank())
        if stage in (None, "fit", "validate"):
            for extra in self.extra_validation.values():
                extra.trainer = self.trainer  # its rank: each rank scores its share
                extra.setup("validate")

    def train_dataloader(self) -> DataLoader:
        return self.splits.loader("train", self.per_device_batch_size)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        primary = self.splits.loader("validation", self.eval_batch_size)
        if not self.extra_validation:
            return primary
        return [primary, *(extra.val_dataloader() for extra in self.extra_validation.values())]

    def test_dataloader(self, longest_first: bool = False) -> DataLoader:
        """``longest_first``: batches sorted by duration, longest first (map-style data; a stream keeps its order)."""
        return self.splits.loader("test", self.eval_batch_size, longest_first)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """What the loaders dropped while reading this batch is counted; a training batch about to be trained on
        moves the position in the training data (stream or sampler) that checkpoints save. A batch of an extra
        validation set is counted by that set's datamodule."""
        if dataloader_idx and self.trainer is not None and not (self.trainer.training or self.trainer.testing):
            extra = self.extra_validation[self.extra_validation_names[dataloader_idx - 1]]
            return extra.on_before_batch_transfer(batch, 0)
        sizes = None if self.streaming else {role: len(data) for role, data in self.splits.datasets.items()}
        batch = self.drops.record(batch, sizes)
        training = self.trainer is not None and self.trainer.training
        return self.splits.record(batch, self.trainer.current_epoch if training else None)

    def state_dict(self) -> dict[str, Any]:
        """Where training stands in its data (saved in Lightning checkpoints, so a resumed run continues there):
        the stream's positions, or the epoch and the batches of it trained on."""
        return self.splits.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.splits.load_state_dict(state_dict)

    # what train() asks of the data ---------------------------------------------------------------------
    def training_transcripts(self) -> list[str]:
        """The prepared training transcripts, for the module's vocabulary (CTC)."""
        return self.splits.training_transcripts()

    def examples(self, role: str, count: int) -> list[dict[str, Any]]:
        """The first ``count`` usable examples of a split that is set up (its order; none for one that is not):
        ``index``, ``audio`` (decoded, at the model's rate), ``sampling_rate`` and ``reference``, read in this
        process, never augmented. The validation report plays these back in the loggers."""
        data = self.splits.datasets.get(role)
        if data is None or count <= 0:
            return []
        items = (item for item, _, _ in data.plain()) if self.streaming else (data[i] for i in range(len(data)))
        usable = (item for item in items if isinstance(item, dict))  # not what decoding dropped
        rate = self.collator.sampling_rate
        return [example | {"sampling_rate": rate} for example in itertools.islice(usable, count)]

    def preprocess(self) -> dict[str, Path]:
        """``preprocess_only=true``: measure and filter every split once and save the surviving rows."""
        if self.streaming:
            raise ValueError("preprocess_only=true with data.streaming=true: a stream is filtered as it is read")
        return self.splits.preprocess()
