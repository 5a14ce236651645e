"""Optimizer and learning-rate schedule factories, called by every model module.

``cfg`` is the ``optimizer`` config group: ``lr``, ``weight_decay``, a ``_partial_`` ``factory``
(the optimizer class with its own arguments), and a ``scheduler`` block.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn

SCHEDULES = ("constant", "linear", "cosine")


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: weight decay on weight matrices, none on biases, norms and other 1-D parameters."""
    decay, no_decay = [], []
    for _, parameter in model.named_parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    factory = instantiate(cfg["factory"])
    return factory(parameter_groups(model, cfg["weight_decay"]), lr=cfg["lr"])


def lr_multiplier(
    step: int, name: str, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
) -> float:
    """Factor on the peak learning rate at optimizer step ``step``: linear warm-up, then decay ``name``."""
    if name not in SCHEDULES:
        raise ValueError(f"optimizer.scheduler.name={name!r}: choose one of {SCHEDULES}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if name == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    shape = 1.0 - progress if name == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_lr_ratio + (1.0 - min_lr_ratio) * shape


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any], total_steps: int
) -> dict[str, Any]:
    """A Lightning scheduler dict stepping every optimizer step."""
    schedule = dict(cfg["scheduler"])
    if total_steps <= 0:
        raise ValueError("a learning-rate schedule needs trainer.max_steps > 0")
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_multiplier(
            step, schedule["name"], schedule["warmup_steps"], total_steps, schedule.get("min_lr_ratio", 0.0)
        ),
    )
    return {"scheduler": scheduler, "interval": "step", "frequency": 1}
