"""One batch plan: the per-device batch size and the gradient accumulation of a run, worked out once.

``data.global_batch_size`` is what one optimizer step sees over all processes; ``data.per_device_batch_size``
(null: the global batch split over the world, no accumulation) is what one process puts through the model at
a time. ``train()`` makes the plan from the data config and the world size (:func:`asrkit.hardware.world_size`)
and gives it to the Trainer (``accumulate_grad_batches``) and to the datamodule (its loaders' batch size).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BatchPlan:
    global_batch_size: int
    world_size: int
    per_device_batch_size: int
    accumulation: int  # micro-batches per optimizer step on each process

    @classmethod
    def make(cls, global_batch_size: int, per_device_batch_size: int | None, world_size: int) -> BatchPlan:
        """The plan with ``per_device x world_size x accumulation == global_batch_size``, or a one-line error."""
        per_device = per_device_batch_size or global_batch_size // world_size
        if per_device < 1 or global_batch_size % (per_device * world_size):
            raise ValueError(
                f"data.global_batch_size={global_batch_size} is not a multiple of data.per_device_batch_size="
                f"{per_device_batch_size or 'null'} x world size {world_size} (hw.devices x hw.num_nodes); "
                "change the global or the per-device batch size so that it divides"
            )
        accumulation = global_batch_size // (per_device * world_size)
        return cls(global_batch_size, world_size, per_device, accumulation)
