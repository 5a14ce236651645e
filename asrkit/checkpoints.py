"""Reading the weights out of a checkpoint, whichever strategy wrote it; what the checkpoint of a run that trains
part of its model keeps (:mod:`asrkit.adapters`), and loading it back."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from asrkit.extras import require


def checkpoint_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The LightningModule ``state_dict`` in a checkpoint: a Lightning ``.ckpt`` file, or the directory a
    DeepSpeed strategy writes (ZeRO shards consolidated into full fp32 weights)."""
    if os.path.isdir(path):
        require("deepspeed", f"the DeepSpeed checkpoint {path}")
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(path), tag="checkpoint")
        return {key.removeprefix("_forward_module."): value for key, value in state.items()}
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def trained_state(module: nn.Module, state: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``module``'s state dict that its checkpoint keeps: trained parameters and buffers."""
    kept = {name for name, p in module.named_parameters() if p.requires_grad} | dict(module.named_buffers()).keys()
    return {key: value for key, value in state.items() if key in kept}


def allow_missing_frozen(module: nn.Module, incompatible: Any) -> None:
    """A ``load_state_dict`` post hook (on the LightningModule) for checkpoints of :func:`trained_state`: frozen
    parameters they leave out are not missing; a trained one still is, and strict loading still refuses it."""
    frozen = {name for name, p in module.named_parameters(remove_duplicate=False) if not p.requires_grad}
    incompatible.missing_keys[:] = [key for key in incompatible.missing_keys if key not in frozen]
