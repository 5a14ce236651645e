"""Callbacks that keep a run's work when something goes wrong (asrkit.resume finds the checkpoint on re-run).

- :class:`FaultCheckpoint`: a preemption (SIGTERM, or SIGUSR1 outside SLURM's auto-requeue), an out-of-memory
  error, or the non-finite guard stopping the run ends training with ``last.ckpt`` written (atomically, by
  :class:`asrkit.trainer.Trainer`) and one line saying what happened and what to do.
- :class:`NonFiniteGuard`: an optimizer step whose loss or gradient norm is not finite is skipped.
- :class:`RandomState`: the random generators travel in the checkpoint, so a resumed run draws what the
  uninterrupted one would have.
"""

from __future__ import annotations

import logging
import os
import random
import signal
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.strategies import DeepSpeedStrategy
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

SIGTERM_EXIT_CODE = 128 + signal.SIGTERM  # what a shell reports for a process ended by SIGTERM


class RunStopped(RuntimeError):
    """Training stopped on a fault after saving its checkpoint; the message says what happened and what to do."""


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA's ``torch.OutOfMemoryError``, or the RuntimeError other devices (Habana's HPU) raise for it."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def _batch_shape(batch: Any) -> str:
    if not isinstance(batch, dict):
        return "unknown"
    shapes = [f"{key} {tuple(value.shape)}" for key, value in batch.items() if isinstance(value, torch.Tensor)]
    return ", ".join(shapes) or "unknown"


class FaultCheckpoint(L.Callback):
    """Save ``<dirpath>/last.ckpt`` when training ends on a preemption, an out-of-memory error or a
    :class:`RunStopped`; train() turns these into a one-line message and an exit code."""

    def __init__(self, dirpath: str) -> None:
        self.path = Path(dirpath) / "last.ckpt"
        self.batch_shape = "unknown"
        self.saved: Path | None = None

    def setup(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or SLURMEnvironment.detect():  # under SLURM, Lightning's requeue handler owns SIGUSR1
            return
        signal.signal(signal.SIGUSR1, lambda *_: os.kill(os.getpid(), signal.SIGTERM))  # Lightning's SIGTERM path

    def teardown(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and not SLURMEnvironment.detect():
            signal.signal(signal.SIGUSR1, signal.SIG_DFL)

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self.batch_shape = _batch_shape(batch)

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        if trainer.state.fn != "fit":  # a test after training keeps the checkpoint fitting wrote
            return
        if is_out_of_memory(exception) and trainer.world_size > 1:
            log.error(
                "out of memory on rank %d; the other ranks wait in a collective: no checkpoint", trainer.global_rank
            )
            return
        if isinstance(exception, (SIGTERMException, RunStopped)) or is_out_of_memory(exception):
            if is_out_of_memory(exception):
                module.zero_grad(set_to_none=True)  # the gradients of the failed step are not worth their memory
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            trainer.save_checkpoint(self.path)
            self.saved = self.path
            log.warning("saved %s at optimizer step %d", self.path, trainer.global_step)

    def describe(self, exception: BaseException) -> str:
        """The one line a user reads about ``exception`` (raised by ``trainer.fit``)."""
        where = f"{self.saved} holds the state" if self.saved else "no checkpoint could be saved"
        if isinstance(exception, SIGTERMException):
            return f"stopped by a signal (preemption); {where}: re-run the same command to resume"
        if is_out_of_memory(exception):
            return (
                f"out of memory in a training step on a batch of {self.batch_shape}; {where}: lower "
                "data.per_device_batch_size (the global batch is kept by accumulation) or cap batches with "
                "data.bucketing.max_batch_seconds, then re-run to resume"
            )
        return f"{exception}; {where}"


class NonFiniteGuard(L.Callback):
    """Skip an optimizer step whose loss (any micro-batch of it, on any rank) or gradient norm is not finite.

    The gradients are dropped (set to None, so the optimizer leaves every parameter as it is, moments included),
    the learning-rate schedule does not advance (the modules' ``lr_scheduler_step`` reads ``step_skipped``),
    ``train/grad_norm`` logs the gradients' global L2 norm of every step (before clipping; not under DeepSpeed,
    which keeps the gradients),
    ``train/skipped_nonfinite`` counts it and the log names the batch's utterances. The step still counts
    towards ``trainer.max_steps``. ``max_consecutive`` skipped steps in a row stop the run (a
    :class:`RunStopped`, after which :class:`FaultCheckpoint` saves the weights from before them).
    Under gradient accumulation the whole window is skipped; under DDP the ranks agree (one all-reduce of a
    flag per step). DeepSpeed keeps gradients in its own buffers, so there steps are counted and the run is
    stopped, but skipping is DeepSpeed's (its fp16 loss scaler skips overflowing steps).
    """

    def __init__(self, max_consecutive: int = 20) -> None:
        if max_consecutive < 1:
            raise ValueError(f"max_consecutive_nonfinite={max_consecutive}: must be >= 1")
        self.max_consecutive = max_consecutive
        self.skipped = 0
        self.consecutive = 0
        self._losses_finite: torch.Tensor | bool = True
        self._indices: list[Any] = []

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped, "consecutive": self.consecutive}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped, self.consecutive = state["skipped"], state["consecutive"]

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if isinstance(batch, dict):
            self._indices += batch.get("indices") or []

    def on_before_backward(self, trainer: L.Trainer, module: L.LightningModule, loss: torch.Tensor) -> None:
        self._losses_finite = torch.isfinite(loss.detach()).all() & self._losses_finite  # no sync until the step

    def on_before_optimizer_step(
        self, trainer: L.Trainer, module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        finite = self._losses_finite
        if grads:
            norm = torch.nn.utils.get_total_norm(grads)  # before clipping: what the step computed
            finite = torch.isfinite(norm) & finite
            module.log("train/grad_norm", norm, on_step=True, on_epoch=False, rank_zero_only=True)
        bad = trainer.strategy.reduce_boolean_decision(not bool(finite), all=False)  # skipped if any rank saw it
        indices, self._indices, self._losses_finite = self._indices, [], True
        module.step_skipped = bad
        if not bad:
            self.consecutive = 0
        else:
            self.skipped += 1
            self.consecutive += 1
            if not isinstance(trainer.strategy, DeepSpeedStrategy):
                optimizer.zero_grad(set_to_none=True)
            log.warning(
                "optimizer step %d skipped: non-finite loss or gradient norm (%d in a row, %d in all); batch %s",
                trainer.global_step + 1,
                self.consecutive,
                self.skipped,
                indices[:16],
            )
        module.log("train/skipped_nonfinite", float(self.skipped), on_step=True, on_epoch=False, rank_zero_only=True)
        if self.consecutive >= self.max_consecutive:
            raise RunStopped(
                f"{self.consecutive} optimizer steps in a row had a non-finite loss or gradient norm "
                f"(max_consecutive_nonfinite={self.max_consecutive}); the weights are from before them: lower "
                "optimizer.lr, check the data the log names, or train in fp32"
            )


class RandomState(L.Callback):
    """Python's, NumPy's and torch's (CPU and CUDA) random states, saved in checkpoints and restored at the first
    training batch of a resumed run (after the data loaders have drawn their seeds, as they had in the original
    run before that batch). Validation runs on its own copy of the states, so whether a checkpoint was taken just
    before a validation or not, training draws the same numbers after it."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None
        self._before_validation: dict[str, Any] | None = None

    @staticmethod
    def _capture() -> dict[str, Any]:
        state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    @staticmethod
    def _restore(state: dict[str, Any]) -> None:
        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])

    def state_dict(self) -> dict[str, Any]:
        return self._capture()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending = state

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._pending is not None:
            self._restore(self._pending)
            self._pending = None

    def on_validation_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self._before_validation = self._capture()

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._before_validation is not None:
            self._restore(self._before_validation)
            self._before_validation = None
