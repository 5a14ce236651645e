"""Test-only: Lightning's DeepSpeedStrategy on CPU processes, so that ZeRO runs in the test suite.

Lightning's stock class refuses any accelerator but CUDA. DeepSpeed itself runs on CPU (its CPU
accelerator, gloo collectives); only Lightning's three CUDA assumptions are bypassed here: the
accelerator check, the device-index check, and the device index it hands to ``deepspeed.initialize``
(a CPU device has none). Selected by ``hw.strategy._target_=tests.cpu_deepspeed.CPUDeepSpeedStrategy``
over ``hw=a100_deepspeed``.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lightning.fabric.utilities.seed import reset_seed
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy


@contextmanager
def _device_rank(rank: int) -> Iterator[None]:
    """Make Lightning's ``deepspeed.initialize(args=Namespace(device_rank=None), ...)`` pass ``rank``."""
    import deepspeed

    initialize = deepspeed.initialize

    def with_rank(*args: Any, **kwargs: Any) -> Any:
        kwargs["args"] = argparse.Namespace(device_rank=rank)
        return initialize(*args, **kwargs)

    deepspeed.initialize = with_rank
    try:
        yield
    finally:
        deepspeed.initialize = initialize


class CPUDeepSpeedStrategy(DeepSpeedStrategy):
    def setup_environment(self) -> None:
        DDPStrategy.setup_environment(self)  # skips "only supported on CUDA GPUs"

    def setup_distributed(self) -> None:
        reset_seed()  # as DeepSpeedStrategy, less the check that device indices equal local ranks
        self.set_world_ranks()
        self._init_deepspeed_distributed()

    def _setup_model_and_optimizer(self, *args: Any, **kwargs: Any) -> Any:
        with _device_rank(self.local_rank):
            return super()._setup_model_and_optimizer(*args, **kwargs)

    def _initialize_deepspeed_inference(self, model: Any) -> None:
        with _device_rank(self.local_rank):
            super()._initialize_deepspeed_inference(model)

    def _get_process_group_backend(self) -> str:
        return self._process_group_backend or "gloo"
