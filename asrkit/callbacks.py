"""Callbacks asrkit adds to Lightning's own: speech throughput, and the check that optimized_metric is logged."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch


class SpeechThroughput(L.Callback):
    """Training samples/s and audio-seconds/s over all ranks, excluding warm-up and evaluation.

    The clock runs from the end of one training batch to the end of the next, so data loading,
    forward, backward and the optimizer step are all counted; the first ``warmup_steps`` optimizer steps
    (compilation, allocator growth, worker start-up) and the time spent in validation are not.
    ``samples_seen`` and ``audio_seconds_seen`` count every training batch, warm-up included, over the whole run
    (a resumed run's checkpoint carries them on): what the end-of-run summary reports as data seen.
    """

    def __init__(self, warmup_steps: int = 10, log_every_n_steps: int = 50) -> None:
        if warmup_steps < 0 or log_every_n_steps < 1:
            raise ValueError("throughput: warmup_steps must be >= 0 and log_every_n_steps >= 1")
        self.warmup_steps = warmup_steps
        self.log_every_n_steps = log_every_n_steps
        self.seconds = self.samples = self.audio_seconds = 0.0
        self._batches = 0
        self._last: float | None = None
        self.summary: dict[str, float] = {}
        self.samples_seen = self.audio_seconds_seen = 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"samples_seen": self.samples_seen, "audio_seconds_seen": self.audio_seconds_seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.samples_seen, self.audio_seconds_seen = state["samples_seen"], state["audio_seconds_seen"]

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: dict[str, Any] | None, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        self._batches += 1
        if batch is not None:
            self.samples_seen += batch["num_samples"] * trainer.world_size
            self.audio_seconds_seen += batch["audio_seconds"] * trainer.world_size
        if batch is not None and self._last is not None and trainer.global_step > self.warmup_steps:
            self.seconds += now - self._last
            self.samples += batch["num_samples"] * trainer.world_size
            self.audio_seconds += batch["audio_seconds"] * trainer.world_size
            if self._batches % self.log_every_n_steps == 0:
                module.log_dict(self.rates(), rank_zero_only=True)
        self._last = now

    def on_validation_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._last = None  # the next interval would contain the evaluation

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        counts = [self.seconds, self.samples, self.audio_seconds, self.samples_seen, self.audio_seconds_seen]
        totals = torch.tensor(counts, dtype=torch.float64)
        if trainer.world_size > 1:  # each rank counted its own batches times the world size
            totals = trainer.strategy.reduce(totals.to(trainer.strategy.root_device), reduce_op="mean").cpu()
        self.seconds, self.samples, self.audio_seconds, self.samples_seen, self.audio_seconds_seen = totals.tolist()
        self.summary = self.rates() if self.seconds > 0 else {}

    def rates(self) -> dict[str, float]:
        """Samples/s and audio-seconds/s measured so far (call when ``seconds > 0``)."""
        return {
            "throughput/samples_per_second": self.samples / self.seconds,
            "throughput/audio_seconds_per_second": self.audio_seconds / self.seconds,
        }


class RequireMetric(L.Callback):
    """Fails the first validation that does not log ``name`` (the ``optimized_metric`` key), in one line.

    It runs before Lightning's checkpoint callbacks (Lightning orders those last), so a misspelt metric is
    reported under the key the user sets rather than as the best checkpoint's ``monitor``.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.name in trainer.callback_metrics:
            return
        logged = sorted(key for key in trainer.callback_metrics if key.startswith("val/"))
        raise ValueError(f"optimized_metric={self.name!r}: this run's validation logs no such metric; it logs {logged}")
