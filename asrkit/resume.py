"""Which checkpoint a run continues from (``resume``), and whether it may (its config against the run's).

A run whose directory is stable (``run_name=...`` -> ``outputs/<run_name>``, or ``hydra.run.dir`` given) is
continued by re-running the same command: ``resume=auto`` (the default) takes the newest complete checkpoint
in ``<run dir>/checkpoints``; ``resume=never`` starts over; ``resume=<path>`` takes that checkpoint. A timestamped
directory is new, so ``auto`` finds nothing there and starts from the beginning.

The config the checkpoints were trained with is kept in the run dir (``<run dir>/run_config.yaml``). A resumed
run whose config differs in anything but hardware, loaders, step limits and the test at the end (:data:`MAY_DIFFER`)
stops with a one-line diff, unless ``resume_force=true`` (which then records the new config).
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from asrkit.trainer import PARTIAL, PREVIOUS

log = logging.getLogger(__name__)

RUN_CONFIG = "run_config.yaml"
# Keys (and key prefixes) a resumed run may change: where and how fast it runs, how long, and what it does once
# training ends. Anything else
# (model, data, optimizer, schedule, batch size, seed...) would make it a different run.
MAY_DIFFER = (
    "hw",
    "paths",
    "resume",
    "resume_force",
    "run_name",
    "trainer.max_steps",
    "trainer.max_epochs",
    "trainer.max_time",
    "trainer.enable_progress_bar",
    "data.per_device_batch_size",
    "data.eval_batch_size",
    "data.num_workers",
    "data.preprocessing_num_workers",
    "model.compile",  # the same network and math, compiled or not
    "model.compile_mode",
    "model.gradient_checkpointing",  # activations recomputed instead of kept: the same gradients
    "test_before_training",
    "export",
    "export_adapter_only",
    "data.test_split",  # what is tested once training ends, not what is trained on
    "data.extra_validation",  # what else is watched at each validation, not what is trained on
    "push_to_hub",  # where the export is uploaded once training ends
    "hub_model_id",
    "hub_private",
)


class ResumeError(ValueError):
    """A run that cannot continue from its checkpoint as asked (the message is one line)."""


def _complete(path: Path) -> bool:
    """A checkpoint written whole: a Lightning file is a zip archive whose central directory (written last) is
    there; a DeepSpeed directory has the ``latest`` tag file DeepSpeed writes after every shard."""
    if path.is_dir():
        return (path / "latest").is_file()
    return path.is_file() and zipfile.is_zipfile(path)


def newest_checkpoint(directory: Path) -> Path | None:
    """The newest complete full-state checkpoint in ``directory``: ``last.ckpt`` (the periodic and final one),
    Lightning's SLURM ``hpc_ckpt_<n>.ckpt``, or a directory checkpoint caught between its two renames
    (``<name>.previous``); ``.partial`` ones (a save that did not finish) are skipped."""
    if not directory.is_dir():
        return None
    candidates = [
        path
        for path in directory.iterdir()
        if (path.name == "last.ckpt" or path.name.startswith("hpc_ckpt_") or path.name.endswith(PREVIOUS))
        and not path.name.endswith(PARTIAL)
    ]
    complete = [path for path in candidates if _complete(path)]
    for path in sorted(set(candidates) - set(complete)):
        log.warning("resume: skipping %s, an incomplete checkpoint (a save that did not finish)", path)
    return max(complete, key=lambda path: path.stat().st_mtime, default=None)


def resolve(resume: Any, checkpoints: Path) -> Path | None:
    """The checkpoint ``resume`` (auto | never | a path) names for a run whose checkpoints go to ``checkpoints``."""
    choice = "auto" if resume is None else str(resume)
    if choice == "never":
        if newest_checkpoint(checkpoints) is not None:
            log.warning("resume=never: starting over; the checkpoints in %s will be overwritten", checkpoints)
        return None
    if choice == "auto":
        found = newest_checkpoint(checkpoints)
        if found is not None:
            log.info("resume=auto: continuing from %s", found)
        return found
    path = Path(choice).expanduser()
    if not path.exists():
        raise ResumeError(
            f"resume={choice}: no such checkpoint (give a .ckpt file or a DeepSpeed checkpoint directory)"
        )
    if not _complete(path):
        raise ResumeError(f"resume={choice}: the checkpoint is incomplete (a save that did not finish)")
    return path


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat |= _flat(value, f"{prefix}{key}.")
        return flat or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def _may_differ(key: str) -> bool:
    return any(key == allowed or key.startswith(allowed + ".") for allowed in MAY_DIFFER)


def config_diff(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``key: saved -> current`` for every key outside :data:`MAY_DIFFER` whose value differs."""
    old, new = _flat(saved), _flat(current)
    keys = sorted(key for key in old.keys() | new.keys() if not _may_differ(key) and old.get(key) != new.get(key))
    return [f"{key}: {old.get(key, '<absent>')!r} -> {new.get(key, '<absent>')!r}" for key in keys]


def _container(cfg: DictConfig) -> dict[str, Any]:
    """The config as written, interpolations unresolved: ``${paths.output_dir}/checkpoints`` is the same key in a
    run resumed into another directory, and what an interpolation reads (``seed``, ``lang``) is compared itself."""
    return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]


def check_config(cfg: DictConfig, checkpoint: Path, force: bool) -> None:
    """Stop a resumed run whose config differs from the one ``checkpoint`` was trained with (see the module)."""
    saved_file = checkpoint.parent.parent / RUN_CONFIG  # asrkit's layout: <run dir>/checkpoints/<checkpoint>
    if not saved_file.is_file():
        log.warning(
            "resume: no %s in %s, so the config of %s cannot be compared", RUN_CONFIG, saved_file.parent, checkpoint
        )
        return
    changes = config_diff(_container(OmegaConf.load(saved_file)), _container(cfg))
    if not changes:
        return
    if force:
        log.warning("resume_force=true: continuing %s with a different config: %s", checkpoint, "; ".join(changes))
        return
    raise ResumeError(
        f"resume: this config differs from the one {checkpoint} was trained with: {'; '.join(changes)} "
        "(resume_force=true continues anyway, resume=never or another run_name starts a new run)"
    )


def record_config(cfg: DictConfig, run_dir: Path) -> None:
    """Keep the config the run's checkpoints are trained with in its dir (rank 0), for the check a resumed run
    makes (Hydra's ``.hydra/config.yaml`` is rewritten by every run in the dir, so it cannot serve)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    written = run_dir / (RUN_CONFIG + PARTIAL)
    written.write_text(OmegaConf.to_yaml(_container(cfg)))
    os.replace(written, run_dir / RUN_CONFIG)
