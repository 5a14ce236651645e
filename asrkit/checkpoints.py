"""Reading the weights out of a checkpoint, whichever strategy wrote it."""

from __future__ import annotations

import os

import torch

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
