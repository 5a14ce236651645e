"""``python -m asrkit [overrides]``: compose ``conf/train.yaml`` and train."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from asrkit.config import CONFIG_DIR, apply_environment, register_resolvers


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    apply_environment(cfg)  # before torch is imported: OpenMP reads OMP_WAIT_POLICY only when it loads
    from asrkit.train import train

    return train(cfg)


def cli() -> None:
    register_resolvers()
    main()


if __name__ == "__main__":
    cli()
