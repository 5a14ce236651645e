"""The console progress of a training job: one bar for the whole job, counted in optimizer steps.

A run is defined by ``trainer.max_steps`` optimizer steps, not by epochs, so Lightning's per-epoch bar
("Epoch 17: 9/30") says neither where the job stands nor when it ends. :class:`StepProgressBar` is Lightning's
:class:`~lightning.pytorch.callbacks.TQDMProgressBar` with its training bar counting optimizer steps over the
job (``trainer.estimated_stepping_batches``: ``max_steps``, or the steps of ``max_epochs``), starting at the
step a resumed run starts from, with the loss, learning rate and samples/s after it and tqdm's time left.
Validation keeps Lightning's own bar beneath it. While the bar is on screen, log records to the console are
written above it (tqdm's ``logging_redirect_tqdm``) instead of through it.
"""

from __future__ import annotations

import logging
import math
from contextlib import AbstractContextManager
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from tqdm.contrib.logging import logging_redirect_tqdm

from asrkit.callbacks import SpeechThroughput


def _learning_rate(trainer: L.Trainer) -> float | None:
    if not trainer.optimizers:
        return None
    return float(trainer.optimizers[0].param_groups[0]["lr"])


class StepProgressBar(TQDMProgressBar):
    """One bar for the job in optimizer steps: ``step/max_steps``, loss, lr, samples/s, elapsed and time left."""

    STEPS_FORMAT = "{desc}{percentage:3.0f}%|{bar:20}| {n_fmt}/{total_fmt} steps [{elapsed}<{remaining}{postfix}]"

    def __init__(self, refresh_rate: int = 1, process_position: int = 0) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=False)
        self._redirect: AbstractContextManager[Any] | None = None
        self._shown_step = -1

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        bar = self.init_train_tqdm()
        bar.bar_format = self.STEPS_FORMAT
        total = trainer.estimated_stepping_batches
        bar.reset(total=None if math.isinf(total) else int(total))
        bar.initial = bar.n = trainer.global_step  # a resumed run starts where its checkpoint stopped
        bar.set_description("Training")
        bar.refresh()
        self.train_progress_bar = bar
        self._shown_step = trainer.global_step
        if self.is_enabled:
            self._redirect = logging_redirect_tqdm(loggers=[logging.getLogger()])
            self._redirect.__enter__()

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        pass  # one bar for the whole job: an epoch does not reset it

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *_: Any) -> None:
        step = trainer.global_step
        if step == self._shown_step:  # a micro-batch within gradient accumulation
            return
        self._shown_step = step
        if self._should_update(step, self.train_progress_bar.total or 0):
            self.train_progress_bar.n = step
            self.train_progress_bar.set_postfix(self.postfix(trainer), refresh=True)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        pass

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.val_progress_bar.close()
        self.reset_dataloader_idx_tracker()

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.train_progress_bar.n = trainer.global_step
        self.train_progress_bar.set_postfix(self.postfix(trainer), refresh=True)
        self.train_progress_bar.close()
        self._leave_redirect()

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        self._leave_redirect()

    def teardown(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        self._leave_redirect()

    def _leave_redirect(self) -> None:
        if self._redirect is not None:
            self._redirect.__exit__(None, None, None)
            self._redirect = None

    @staticmethod
    def postfix(trainer: L.Trainer) -> dict[str, str]:
        """What follows the bar: training loss, learning rate and steady-state samples/s, where known."""
        shown: dict[str, str] = {}
        loss = trainer.progress_bar_metrics.get("train/loss")
        if loss is not None:
            shown["loss"] = f"{float(loss):.3f}"
        lr = _learning_rate(trainer)
        if lr is not None:
            shown["lr"] = f"{lr:.2e}"
        speed = next((cb for cb in trainer.callbacks if isinstance(cb, SpeechThroughput)), None)
        if speed is not None and speed.seconds > 0:
            shown["samples/s"] = f"{speed.rates()['throughput/samples_per_second']:.1f}"
        return shown
