"""Where the configs live, the resolvers they use, and the process environment they set.

Nothing here imports torch: :func:`apply_environment` has to run before it is imported, because
OpenMP reads ``OMP_WAIT_POLICY`` (and Habana's bridge ``PT_HPU_*``) once, when it is loaded.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

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


def run_dir(run_name: str | None, timestamp: str) -> str:
    """The run (or sweep) dir under outputs/ (multirun/): ``run_name`` if given (stable, so a re-run of the same
    command resumes there), else the timestamp (resolver ``${run_dir:${run_name},<timestamp>}``)."""
    if run_name is None or str(run_name) == "":
        return timestamp
    name = str(run_name)
    if name.startswith("/") or ".." in Path(name).parts:
        raise ValueError(f"run_name={name}: give a name under outputs/ (set hydra.run.dir for another place)")
    return name


def register_resolvers() -> None:
    """Register the resolvers the configs use; call once before composing a config."""
    if not OmegaConf.has_resolver("asset"):
        OmegaConf.register_new_resolver("asset", asset_path)
    if not OmegaConf.has_resolver("run_dir"):
        OmegaConf.register_new_resolver("run_dir", run_dir)
    from asrkit.data.languages import RESOLVERS  # the per-corpus language configs (${fleurs_config:hi})

    for name, resolver in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


def apply_environment(cfg: DictConfig) -> None:
    """Export ``hw.env`` into this process (and so into every process it starts)."""
    export_environment(cfg.hw.get("env"))


def export_environment(env: Mapping[str, Any] | None) -> None:
    """Set each ``NAME: value`` as an environment variable (booleans as 1/0, as Habana's PT_HPU_* expect)."""
    for key, value in (env or {}).items():
        text = str(int(value)) if isinstance(value, bool) else str(value)
        if os.environ.get(key) != text:
            log.info("environment: %s=%s (from hw.env)", key, text)
            os.environ[key] = text


def compose_config(overrides: list[str], output_dir: str | Path, config_name: str = "train") -> DictConfig:
    """The config ``python -m asrkit <overrides>`` would run, for use from Python (tests, notebooks).

    ``output_dir`` stands in for the Hydra run dir, so ``${hydra:runtime.output_dir}`` resolves.
    """
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # as in a real run, where the task function sees no hydra node
    return cfg
