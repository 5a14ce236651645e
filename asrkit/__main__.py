"""``python -m asrkit [overrides]``: compose ``conf/train.yaml`` and train; ``-m`` sweeps.

In a sweep (``-m``) a job that raises is logged with its traceback, marked failed in its directory
(``failure.json``, which asrkit.sweep's summary reads) and scored ``inf`` so that Optuna ranks it
last, and the sweep goes on. A single run raises as usual, except a config error
(:class:`asrkit.config_check.ConfigError`, found before anything loads): that is printed as its one line on
stderr and the process exits with status 1, without Hydra's report and traceback (``HYDRA_FULL_ERROR=1``
raises it as usual).
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from asrkit.config import CONFIG_DIR, apply_environment, register_resolvers

log = logging.getLogger(__name__)

FAILURE_FILE = "failure.json"  # written into a failed sweep job's directory


def _record_failure(error: Exception) -> None:
    job_dir = Path(HydraConfig.get().runtime.output_dir)
    log.error("job %s failed; the sweep goes on", job_dir, exc_info=error)
    failure = {
        "error": f"{type(error).__name__}: {error}".splitlines()[0],
        "traceback": "".join(traceback.format_exception(type(error), error, error.__traceback__)),
    }
    (job_dir / FAILURE_FILE).write_text(json.dumps(failure, indent=2) + "\n")


def _release_memory() -> None:
    """Free what the failed job left behind (its frames held the model) before the next job starts."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    apply_environment(cfg)  # before torch is imported: OpenMP reads OMP_WAIT_POLICY only when it loads
    from asrkit.config_check import ConfigError
    from asrkit.train import train

    if HydraConfig.get().mode != RunMode.MULTIRUN:
        try:
            return train(cfg)
        except ConfigError as error:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":  # what Hydra itself reads to show whole tracebacks
                raise
            sys.exit(str(error))  # the line alone on stderr, status 1 (SystemExit passes through Hydra's report)
    try:
        return train(cfg)
    except Exception as error:
        _record_failure(error)
    _release_memory()
    return math.inf  # what a sweeper minimising validation WER treats as the worst result


def _require_sweeper(argv: list[str]) -> None:
    """conf/hparams_search/ configs pick the Optuna sweeper, a plugin of the ``sweep`` extra."""
    if any(arg.startswith(("hparams_search=", "+hparams_search=")) for arg in argv):
        try:
            import hydra_plugins.hydra_optuna_sweeper  # noqa: F401
        except ImportError:
            sys.exit("hparams_search needs hydra-optuna-sweeper: pip install 'asrkit[sweep]'")


def cli() -> None:
    _require_sweeper(sys.argv[1:])
    register_resolvers()
    main()


if __name__ == "__main__":
    cli()
