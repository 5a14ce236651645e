"""What every model module does the same way around its steps, written once.

:class:`EvaluationHooks` is the one shared piece that is a class: Lightning finds its hooks as methods of the
module, so written once they must be inherited. It is a thin mixin with no state and no ``__init__``: the
validation/test steps and their epoch-end hooks (a module gives ``_eval_step(batch)`` and
``_eval_epoch_end(stage, predictions)``; the hooks keep each evaluation set's predictions apart, the extra
validation sets of ``data.extra_validation`` included), ``on_fit_start``, ``configure_optimizers`` and
``lr_scheduler_step``. Everything else is a function.

- Train mode at the start of fitting: ``from_pretrained`` returns a model in eval mode and Lightning 2.5
  keeps submodule modes as it finds them, which would silently turn off dropout, SpecAugment and layerdrop
  in every fine-tune of a pre-trained checkpoint (:func:`enter_train_mode`).
- A training batch whose every file failed to decode (:func:`empty_batch_loss`).
- The precision and the scoring of evaluation, from the ``evaluation`` config group that training's
  validation/test and ``python -m asrkit.evaluate`` share (:func:`evaluation_precision`,
  :func:`evaluation_normalizer`).
- ``model.compile``: the network a training step calls, compiled by ``torch.compile`` (:func:`training_network`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.utilities import GradClipAlgorithmType

from asrkit import optim
from asrkit.data.text import resolve_normalizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's modes
COMPILE_BACKENDS = {"hpu": "hpu_backend"}  # per device type, where inductor is not the compiler (Gaudi)


def check_compile_mode(compile_mode: str) -> None:
    """``model.compile_mode`` is one of torch.compile's modes (checked when the module is built)."""
    if compile_mode not in COMPILE_MODES:
        raise ValueError(f"model.compile_mode={compile_mode!r}: choose one of {', '.join(COMPILE_MODES)}")


def training_network(module: L.LightningModule) -> Callable[..., Any]:
    """What a training step calls: ``module.model``, or with ``model.compile`` that network compiled by
    ``torch.compile`` (mode ``model.compile_mode``; backend inductor, ``hpu_backend`` on Gaudi).

    The compiled wrapper is made on the first training step, once the network is on its device, and kept in
    the module's ``__dict__``, outside its submodules: checkpoints, ``state_dict`` and the export hold the
    network's own parameter names (no ``_orig_mod.`` prefix), so a checkpoint written with compile on loads
    into a module with it off and back. Evaluation (``generate()``, CTC decoding) runs the network as it is:
    its shapes change at every decoding step and length, which would recompile again and again.
    """
    if not module.hparams.get("compile", False):
        return module.model
    network, compiled = module.__dict__.get("_compiled_network", (None, None))
    if network is not module.model:  # first step, or a network built anew (CTC's configure_model)
        options = {"mode": None if module.hparams.compile_mode == "default" else module.hparams.compile_mode}
        backend = COMPILE_BACKENDS.get(module.device.type)
        if backend is not None:
            options["backend"] = backend
        compiled = torch.compile(module.model, **options)
        module.__dict__["_compiled_network"] = (module.model, compiled)
    return compiled


def enter_train_mode(module: L.LightningModule) -> None:
    """Put every submodule in train mode (call from ``on_fit_start``); evaluation loops restore it after."""
    module.train()


def empty_batch_loss(module: L.LightningModule) -> torch.Tensor | None:
    """``training_step``'s result for a batch whose every file failed to decode.

    In one process, None: Lightning skips the step. Under several processes every rank must take part in
    the backward pass (DDP all-reduces gradients there, and a rank that skips it leaves the others waiting
    forever), so this rank contributes a zero loss that reaches every trained parameter: zero gradients,
    averaged with the other ranks' real ones.
    """
    if module.trainer.world_size == 1:
        return None
    trained = [parameter for parameter in module.parameters() if parameter.requires_grad]
    return torch.stack([parameter.sum() for parameter in trained]).sum() * 0.0


def _setting(evaluation: Mapping[str, Any] | None, key: str, default: Any) -> Any:
    return default if evaluation is None else evaluation.get(key, default)


def evaluation_dtype(evaluation: Mapping[str, Any] | None) -> torch.dtype:
    """``evaluation.dtype`` (float32 for a module built without the evaluation group)."""
    name = str(_setting(evaluation, "dtype", "float32"))
    if name not in DTYPES:
        raise ValueError(f"evaluation.dtype={name}: choose {', '.join(DTYPES)}")
    return DTYPES[name]


def evaluation_precision(module: L.LightningModule, evaluation: Mapping[str, Any] | None):
    """The context a validation or test step runs in: autocast to ``evaluation.dtype``, or no autocast for
    float32, whatever precision the trainer trains in (so a model scores the same on a CPU with native bf16,
    one without, and in ``asrkit.evaluate``). Weights that a strategy keeps in a low precision themselves
    (DeepSpeed bf16, ``*-true`` precisions) are evaluated as they are."""
    dtype = evaluation_dtype(evaluation)
    device_type = module.device.type
    if dtype == torch.float32:
        return torch.autocast(device_type, enabled=False)
    return torch.autocast(device_type, dtype=dtype)


def evaluation_normalizer(evaluation: Mapping[str, Any] | None) -> str:
    """The normaliser WER/CER are computed with: ``evaluation.normalizer`` for ``evaluation.language``."""
    name = str(_setting(evaluation, "normalizer", "basic"))
    return resolve_normalizer(name, _setting(evaluation, "language", None))


class EvaluationHooks:
    """Lightning hooks the three modules share; put it before ``L.LightningModule`` in the bases.

    The module provides ``self.model`` (the network), ``hparams.optimizer`` and ``hparams.evaluation``,
    ``_eval_step(batch)`` (one validation or test batch: its ``(index, reference, hypothesis)`` triples, or None
    for a module that keeps its own sums) and ``_eval_epoch_end(stage, predictions)`` (``stage``: ``val``,
    ``test``, or ``val/<name>`` for an extra validation set, which logs under that prefix).
    ``needs_vocabulary`` says whether ``train()`` must hand the module its training transcripts
    (``build_vocabulary``) before fitting or testing.
    """

    needs_vocabulary = False

    def on_fit_start(self) -> None:
        enter_train_mode(self)  # a from_pretrained model arrives in eval mode

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        with evaluation_precision(self, self.hparams.evaluation):
            predictions = self._eval_step(batch)
        self._keep(self._evaluation_set("val", dataloader_idx), predictions)

    def on_validation_epoch_end(self) -> None:
        for name in self._extra_validation_names():  # every rank, in the same order: scores gather across ranks
            stage = f"val/{name}"
            self._eval_epoch_end(stage, self._eval_predictions.pop(stage, []))
        self._eval_epoch_end("val", self._eval_predictions.pop("val", []))
        if self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
            # the loggers' x-axis for these scores: the weights measured are those after global_step updates (as a
            # training loss logged at step k was measured on the weights after k updates, and best-step<k>.ckpt
            # holds them); Lightning would log a validation inside the epoch one step earlier
            self.log("step", float(self.trainer.global_step))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        with evaluation_precision(self, self.hparams.evaluation):
            predictions = self._eval_step(batch)
        self._keep("test", predictions)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test", self._eval_predictions.pop("test", []))

    # the predictions of the running evaluation, per set ------------------------------------------------------
    @property
    def _eval_predictions(self) -> dict[str, list[tuple[int, str, str]]]:
        return self.__dict__.setdefault("_eval_predictions_by_set", {})  # made on first use: the mixin has no __init__

    def _keep(self, stage: str, predictions: list[tuple[int, str, str]] | None) -> None:
        if predictions is not None:
            self._eval_predictions.setdefault(stage, []).extend(predictions)

    def _extra_validation_names(self) -> list[str]:
        """The datamodule's extra validation sets (``data.extra_validation``), whose loaders follow the primary."""
        trainer = getattr(self, "_trainer", None)
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        return list(getattr(datamodule, "extra_validation_names", []))

    def _evaluation_set(self, stage: str, dataloader_idx: int) -> str:
        """``val`` for the primary validation loader, ``val/<name>`` for an extra set's."""
        return f"{stage}/{self._extra_validation_names()[dataloader_idx - 1]}" if dataloader_idx else stage

    def configure_optimizers(self) -> dict[str, Any]:
        return optim.configure_optimizers(self.model, self.hparams.optimizer, self.trainer.max_steps, self.trainer)

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: Any = None,
    ) -> None:
        """Clip as Lightning does, also a fused optimizer's gradients under bf16-mixed: Lightning's mixed-precision
        plugin refuses any optimizer that unscales inside its step (``fused=True``), but with no gradient scaler
        (bf16) there is nothing to unscale and the gradients are the true ones (16-mixed keeps its refusal;
        ``fused: auto`` does not fuse there: :func:`asrkit.optim.fused_allowed`)."""
        plugin = self.trainer.precision_plugin
        fused = getattr(optimizer, "_step_supports_amp_scaling", False)
        if fused and isinstance(plugin, MixedPrecision) and plugin.scaler is None:
            if gradient_clip_val:  # Precision's own clipping, which the mixed-precision plugin wraps in its refusal
                algorithm = GradClipAlgorithmType(gradient_clip_algorithm or "norm")
                Precision.clip_gradients(plugin, optimizer, float(gradient_clip_val), algorithm)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """The schedule follows the optimizer steps taken: one that :class:`asrkit.faults.NonFiniteGuard`
        skipped (it sets ``step_skipped``) does not advance it."""
        if not getattr(self, "step_skipped", False):
            super().lr_scheduler_step(scheduler, metric)
