"""Optimizer and learning-rate schedule factories, called by every model module.

``cfg`` is the ``optimizer`` config group (conf/optimizer/*.yaml): ``lr``, ``weight_decay``, ``no_decay``, a
``_partial_`` ``factory`` (the optimizer class with its own arguments) and a ``_partial_`` ``scheduler`` (a
schedule function here with its own arguments, called with ``total_steps``). A module calls::

    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, trainer.max_steps)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn

from asrkit.extras import EXTRAS, require

log = logging.getLogger(__name__)

SHAPES = ("constant", "linear", "cosine")  # optimizer.scheduler.shape of warmup_decay, after the warm-up
NO_DECAY_KINDS = ("bias", "norm", "vector")  # parameter kinds optimizer.no_decay may exempt from weight decay
# Modules whose own parameters are normalisation gains and shifts (never decayed). Norms a model
# defines itself (transformers' T5LayerNorm, LlamaRMSNorm and the like) are caught by their class name.
NORM_MODULES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase, nn.LocalResponseNorm, nn.RMSNorm)
FUSED_DEVICES = ("cuda", "cpu")  # optimizer.factory.fused=auto: the devices whose fused AdamW kernel was measured


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, NORM_MODULES) or type(module).__name__.lower().endswith("norm")


def parameter_groups(model: nn.Module, weight_decay: float, no_decay: Collection[str]) -> list[dict[str, Any]]:
    """Two groups: ``weight_decay`` on the trainable parameters, none on the kinds named in ``no_decay``.

    Kinds (``optimizer.no_decay``): ``bias`` (a name ending in ``bias``), ``norm`` (the parameters of a
    normalisation module: LayerNorm, GroupNorm, BatchNorm, RMSNorm or any class named ``*Norm``) and
    ``vector`` (fewer than two dimensions: scales, wav2vec2's mask embedding). Embedding tables (token
    and learned position embeddings, wav2vec2's codebooks) are matrices and are decayed, as in Hugging
    Face's Trainer; ``no_decay: []`` decays every parameter (fairseq's Adam). Frozen parameters
    (``requires_grad=False``) are left out; a parameter shared by two modules (Whisper's tied output
    projection) is counted once.
    """
    unknown = sorted(set(no_decay) - set(NO_DECAY_KINDS))
    if unknown:
        raise ValueError(f"optimizer.no_decay={list(no_decay)}: {unknown} unknown; choose from {NO_DECAY_KINDS}")
    undecayed = set()
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            kinds = {"norm": _is_norm(module), "bias": name.endswith("bias"), "vector": parameter.ndim < 2}
            if any(kinds[kind] for kind in no_decay):
                undecayed.add(id(parameter))
    decay, exempt = [], []
    for parameter in model.parameters():  # deduplicated, in registration order
        if parameter.requires_grad:
            (exempt if id(parameter) in undecayed else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": exempt, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


def fused_where_supported(groups: list[dict[str, Any]], allowed: bool = True) -> bool | None:
    """``optimizer.factory.fused=auto``: True when every trained parameter is on one of :data:`FUSED_DEVICES`
    (torch's fused AdamW kernel; benchmarks/compute_options.py measured it on a CPU) and the run ``allowed`` it
    (:func:`fused_allowed`), else None (torch's choice: foreach on GPUs, the per-tensor loop elsewhere)."""
    devices = {parameter.device.type for group in groups for parameter in group["params"]}
    return True if allowed and devices and devices <= set(FUSED_DEVICES) else None


def fused_allowed(trainer: Any) -> bool:
    """Whether ``fused: auto`` may fuse under this trainer: not with 16-mixed's gradient scaler (a fused optimizer
    unscales inside its step, so Lightning refuses to clip its gradients) nor under DeepSpeed (its own optimizer
    wrapper, not measured with a fused one)."""
    precision = str(getattr(trainer, "precision", ""))
    return precision not in ("16-mixed", "16") and "deepspeed" not in type(trainer.strategy).__name__.lower()


def build_optimizer(model: nn.Module, cfg: Mapping[str, Any], fused_ok: bool = True) -> torch.optim.Optimizer:
    """``cfg.factory(parameter_groups(model, cfg.weight_decay, cfg.no_decay), lr=cfg.lr)``; a factory with
    ``fused: auto`` gets :func:`fused_where_supported`'s answer for those parameters (``fused_ok``:
    :func:`fused_allowed`)."""
    target = str(cfg["factory"]["_target_"])
    if target.split(".")[0] in EXTRAS:  # an optional package: a missing one is a one-line error naming its extra
        require(target.split(".")[0], f"optimizer.factory {target}")
    factory = instantiate(cfg["factory"])
    groups = parameter_groups(model, cfg["weight_decay"], cfg["no_decay"])
    fused = getattr(factory, "keywords", {}).get("fused")
    if isinstance(fused, str):
        if fused != "auto":
            raise ValueError(f"optimizer.factory.fused={fused}: true, false, null (torch's choice) or auto")
        return factory(groups, lr=cfg["lr"], fused=fused_where_supported(groups, fused_ok))
    return factory(groups, lr=cfg["lr"])


def warmup_decay(total_steps: int, *, shape: str, warmup_steps: int, min_lr_ratio: float) -> Callable[[int], float]:
    """The factor on the peak lr at each optimizer step (from 0): linear warm-up, then ``shape``.

    Warm-up rises as ``(step + 1) / warmup_steps`` so the first step already moves. ``linear`` and
    ``cosine`` fall from 1 after warm-up to ``min_lr_ratio`` at ``total_steps``; ``constant`` stays at 1.
    """
    if shape not in SHAPES:
        raise ValueError(
            f"optimizer.scheduler.shape={shape!r}: choose one of {', '.join(SHAPES)} "
            "(for fairseq's tri-stage schedule, optimizer/scheduler=tri_stage)"
        )
    if warmup_steps < 0:
        raise ValueError(f"optimizer.scheduler.warmup_steps={warmup_steps}: must be >= 0")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if shape == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        fall = 1.0 - progress if shape == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
        return min_lr_ratio + (1.0 - min_lr_ratio) * fall

    return factor


def tri_stage_steps(
    total_steps: int,
    warmup_steps: int | None,
    hold_steps: int | None,
    decay_steps: int | None,
    phase_ratio: Sequence[float] | None,
) -> tuple[int, int, int]:
    """Warm-up, hold and decay steps: each stage given in steps wins over its share of ``phase_ratio``."""
    given = [warmup_steps, hold_steps, decay_steps]
    ratio = list(phase_ratio or [])
    valid = len(ratio) == 3 and abs(sum(ratio) - 1.0) < 1e-6 and min(ratio) >= 0
    if not valid and None in given:
        raise ValueError(
            f"optimizer.scheduler.phase_ratio={ratio}: tri_stage needs three non-negative fractions of "
            "trainer.max_steps summing to 1 (warm-up, hold, decay) unless all three *_steps are given"
        )
    warmup, hold, decay = (
        int(steps) if steps is not None else int(ratio[stage] * total_steps) for stage, steps in enumerate(given)
    )
    return warmup, hold, decay


def tri_stage(
    total_steps: int,
    *,
    warmup_steps: int | None,
    hold_steps: int | None,
    decay_steps: int | None,
    phase_ratio: Sequence[float] | None,
    init_lr_scale: float,
    final_lr_scale: float,
) -> Callable[[int], float]:
    """The factor on the peak lr at each optimizer step in fairseq's tri-stage schedule (wav2vec2 recipes).

    Linear from ``init_lr_scale`` to 1 over the warm-up, 1 for the hold, then ``exp(-k * t)`` over the decay
    with ``k = -ln(final_lr_scale) / decay``, and ``final_lr_scale`` after that (stages: :func:`tri_stage_steps`).
    """
    for key, value in (("init_lr_scale", init_lr_scale), ("final_lr_scale", final_lr_scale)):
        if not 0.0 < value <= 1.0:
            raise ValueError(f"optimizer.scheduler.{key}={value}: tri_stage needs a value in (0, 1]")
    warmup, hold, decay = stages = tri_stage_steps(total_steps, warmup_steps, hold_steps, decay_steps, phase_ratio)
    if min(stages) < 0:
        raise ValueError(f"optimizer.scheduler: tri_stage stage lengths {stages} must be >= 0")
    if sum(stages) > total_steps:
        log.warning(
            "tri_stage stages %s last %d steps, beyond trainer.max_steps=%d: training stops first",
            stages,
            sum(stages),
            total_steps,
        )

    def factor(step: int) -> float:
        if step < warmup:
            return init_lr_scale + (1.0 - init_lr_scale) * step / warmup
        step -= warmup
        if step < hold:
            return 1.0
        step -= hold
        if step < decay:
            return math.exp(math.log(final_lr_scale) * step / decay)
        return final_lr_scale

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any], total_steps: int) -> dict[str, Any]:
    """A Lightning scheduler dict that sets ``lr x factor(step)`` every optimizer step.

    ``factor`` is what the ``optimizer.scheduler`` partial (:func:`warmup_decay`, :func:`tri_stage`) returns
    when called with ``total_steps``.
    """
    if total_steps <= 0:
        raise ValueError("a learning-rate schedule needs trainer.max_steps > 0")
    factor = instantiate(cfg["scheduler"])(total_steps=total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"scheduler": scheduler, "interval": "step", "frequency": 1}


def configure_optimizers(
    model: nn.Module, cfg: Mapping[str, Any] | None, total_steps: int, trainer: Any = None
) -> dict[str, Any]:
    """What a module's ``configure_optimizers`` returns: the optimizer and its per-step schedule."""
    if cfg is None:
        raise ValueError("the model module needs the optimizer config: build it with optimizer=cfg.optimizer")
    optimizer = build_optimizer(model, cfg, fused_allowed(trainer) if trainer is not None else True)
    return {"optimizer": optimizer, "lr_scheduler": build_scheduler(optimizer, cfg, total_steps)}
