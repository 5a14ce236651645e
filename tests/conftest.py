"""Shared fixtures: compose the real config (conf/train.yaml) and shrink it, as users would."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (see conf/hw/auto.yaml)
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, open_dict  # noqa: E402

from asrkit.config import CONFIG_DIR, register_resolvers  # noqa: E402

# The demo experiment shrunk to seconds: a few steps, a few evaluation utterances.
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


def compose_config(overrides: list[str], output_dir: Path | None = None) -> DictConfig:
    """conf/train.yaml composed with ``overrides``, with the Hydra run dir set to ``output_dir``."""
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    if output_dir is not None:
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(output_dir)
            cfg.paths.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # as in a real run, where the task function sees no hydra node
    return cfg


@pytest.fixture
def compose_cfg() -> Callable[..., DictConfig]:
    return compose_config
