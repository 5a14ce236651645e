"""Where the configs live, the resolvers they use, and the process environment they set.

Nothing here imports torch: :func:`apply_environment` has to run before it is imported, because
OpenMP reads ``OMP_WAIT_POLICY`` (and Habana's bridge ``PT_HPU_*``) once, when it is loaded.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
ASSETS_DIR = PACKAGE_DIR / "assets"
# A source checkout keeps conf/ beside the package; a wheel carries it inside the package.
CONFIG_DIR = str(PACKAGE_DIR / "conf" if (PACKAGE_DIR / "conf").is_dir() else PACKAGE_DIR.parent / "conf")


def asset_path(name: str) -> str:
    """Absolute path of a file or folder bundled under ``asrkit/assets`` (resolver ``${asset:NAME}``)."""
    path = ASSETS_DIR / name
    if not path.exists():
        raise FileNotFoundError(f"no bundled asset {name!r} under {ASSETS_DIR}")
    return str(path)


def register_resolvers() -> None:
    """Register the resolvers the configs use; call once before composing a config."""
    if not OmegaConf.has_resolver("asset"):
        OmegaConf.register_new_resolver("asset", asset_path)


def apply_environment(cfg: DictConfig) -> None:
    """Export ``hw.env`` into this process (and so into every process it starts)."""
    for key, value in (cfg.hw.get("env") or {}).items():
        if os.environ.get(key) != str(value):
            log.info("environment: %s=%s (from hw.env)", key, value)
            os.environ[key] = str(value)
