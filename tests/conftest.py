"""Shared settings: the demo experiment shrunk to seconds, composed through the real conf/train.yaml."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (see conf/hw/auto.yaml)
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from asrkit.config import compose_config  # noqa: E402

__all__ = ["TINY_RUN", "compose_config"]

# A few steps, a few evaluation utterances.
TINY_RUN = [
    "experiment=demo",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "trainer.log_every_n_steps=1",
    "data.max_eval_samples=8",
    "data.max_train_samples=64",
    "test_before_training=false",
    "callbacks.periodic_checkpoint.every_n_train_steps=2",
    "callbacks.throughput.warmup_steps=1",
    "trainer.enable_progress_bar=false",
]
