"""``data.extra_validation``: other data configs whose validation splits are scored at every validation.

A fine-tune on one domain can lose another (forgetting): scoring a general set beside the in-domain one at
every validation shows it happening, step by step. Each entry names a set and the ``conf/data`` option it
comes from, optionally with keys of that option changed::

    data.extra_validation={general: fleurs}
    data.extra_validation={noisy: {config: demo, data_dir: /data/demo_noisy}, clean: demo}

Each set is logged as ``val/<name>/wer`` (``wer_raw``, ``cer``, ``num_samples``); the primary set's
``val/wer`` alone picks the best checkpoint and the optimised metric. :func:`resolve` composes each option as
``data=<option>`` would (its defaults included, from the same config search path) and resolves it against the
run's config, so ``${lang}``, ``${seed}`` and ``${asset:...}`` mean what they mean in the run; only its
validation split is read (``train_split``/``test_split`` are dropped; ``validation_split: test`` scores another
split).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict

from asrkit.config import CONFIG_DIR

KEY = "extra_validation"
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
# metric names a set's name would collide with under val/ (val/<name>/wer beside val/wer, val/loss ...)
RESERVED = {"wer", "wer_raw", "cer", "num_samples", "loss", "step"}
# the keys that would read other splits than the one scored
NOT_READ = {"train_split": None, "test_split": None, "configs": None, "splits": None, "max_train_samples": None}


def entries(data: Mapping[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """``data.extra_validation`` as ``{name: (option, changed keys)}``; a malformed entry is a one-line error."""
    given = data.get(KEY) or {}
    if not isinstance(given, Mapping):
        raise ValueError(
            f"data.{KEY}={given!r}: a mapping of set name to data config, e.g. data.{KEY}={{general: fleurs}}"
        )
    parsed = {}
    for name, entry in given.items():
        key = f"data.{KEY}.{name}"
        if not NAME.match(str(name)) or name in RESERVED:
            raise ValueError(
                f"{key}: name a set with letters, digits, _ or - (not {', '.join(sorted(RESERVED))}): it is "
                f"logged as val/<name>/wer"
            )
        if isinstance(entry, str):
            parsed[name] = (entry, {})
            continue
        if not isinstance(entry, Mapping) or not entry.get("config"):
            raise ValueError(f"{key}: a data config option (e.g. fleurs), or {{config: <option>, <data key>: value}}")
        changed = {k: v for k, v in entry.items() if k != "config"}
        if KEY in changed:
            raise ValueError(f"{key}.{KEY}: an extra validation set has no extra sets of its own")
        parsed[name] = (str(entry["config"]), changed)
    return parsed


def _compose_data(option: str, key: str) -> DictConfig:
    """The ``data`` node of ``data=<option>``, unresolved, from the running app's config search path (or
    asrkit's own configs outside an app)."""
    overrides = [f"data={option}"]
    try:
        if GlobalHydra.instance().is_initialized():
            return compose("train", overrides=overrides).data
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose("train", overrides=overrides).data
    except HydraException as error:
        first = str(error).strip().splitlines()[0]
        raise ValueError(f"{key}={option}: not a data config option ({first})") from None


def resolve(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """Each extra validation set's data keys, composed and resolved against the run's config ``cfg``."""
    resolved = {}
    for name, (option, changed) in entries(cfg.data).items():
        key = f"data.{KEY}.{name}"
        node = _compose_data(option, key)
        root = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))  # the run's ${lang}, ${seed}, ...
        with open_dict(root):
            root.data = node
            unknown = sorted(set(changed) - set(node))
            if unknown:
                raise ValueError(f"{key}.{unknown[0]}: not a key of data={option} (its keys: {', '.join(node)})")
            for k, value in changed.items():
                root.data[k] = value
            root.data.pop(KEY, None)
        keys = OmegaConf.to_container(root.data, resolve=True)
        keys.pop("_target_", None)
        keys |= NOT_READ
        if not keys.get("validation_split"):
            raise ValueError(f"{key}: data={option} has no validation_split to score (set {key}.validation_split)")
        resolved[name] = keys
    return resolved
