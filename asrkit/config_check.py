"""check_config(cfg): the composed config checked against what will consume it, before any data or model loads.

Hydra puts any value under any key, and a wrong one used to surface only where it was consumed, after the model
and data had loaded, as that library's error (``trainer.max_steps=abc`` gave Lightning's "'<' not supported
between instances of 'str' and 'int'"). So before building anything, ``train()`` checks:

- every node with a ``_target_`` (trainer, model, data, callbacks.*, logger.*, hw.strategy, hw.plugins, the
  optimizer's partials): each key names a parameter of the target (unless it takes ``**kwargs``), and each value
  fits the parameter's annotation (pydantic, lax: an int where a float is expected is fine; but nothing is
  converted, so a string is never taken for a number or a flag). An annotation pydantic cannot build a schema
  for is skipped, and so is a value that is itself a ``_target_`` node;
- the ``data.*`` keys against the records that parse them (:class:`asrkit.data.options.DataOptions`), and
  ``data.bucketing.*`` against the sampler that receives them;
- ``trainer.*`` keys that ``train()`` gives the Trainer from elsewhere (hw, the callbacks and logger groups, the
  batch plan), which would otherwise be silently overridden;
- ``???`` left unset anywhere, and interpolations that do not resolve;
- what the config alone decides: the batch plan (:class:`asrkit.batch_plan.BatchPlan`, the one place its rule
  and message live) and a bucketing cap that no batch of the longest kept utterance fits under.
- ``augment.*``: the waveform options (the noise folder included) and the SpecAugment settings;
- ``push_to_hub``: a repository id and a Hugging Face token to upload with (:mod:`asrkit.hub`), so that a run
  does not train for hours and then fail to upload.
- ``data.extra_validation``: each set's data config exists and its keys pass the data checks
  (:mod:`asrkit.data.extra_validation`); pre-training has none.
- ``peft``: its values, a model that takes adapters, and for ``peft=qlora`` pre-trained weights and a CUDA GPU
  (:func:`asrkit.adapters.config_problem`).

Each problem is a :class:`ConfigError` whose message is one line naming the key, which ``python -m asrkit``
prints alone (``asrkit.__main__``).
"""

from __future__ import annotations

import difflib
import inspect
import re
import typing
from collections.abc import Iterator, Mapping
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from asrkit import hardware
from asrkit.adapters import config_problem
from asrkit.annotations import parameter_hints, value_problem
from asrkit.batch_plan import BatchPlan
from asrkit.data import extra_validation
from asrkit.data.augment_options import waveform_problem
from asrkit.data.datamodule import ASRDataModule
from asrkit.data.options import BatchOptions, DataOptions, FilterOptions, SourceOptions, StreamOptions
from asrkit.data.sampler import DurationBucketBatchSampler
from asrkit.extras import EXTRAS, require
from asrkit.hub import hub_settings_problem
from asrkit.models.spec_augment import spec_augment_problem
from asrkit.models.wav2vec2_pretrain import Wav2Vec2PretrainModule


class ConfigError(ValueError):
    """A config value that cannot work, found before anything loads; the message is one line naming the key."""


HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
DATA_RECORDS = (SourceOptions, FilterOptions, BatchOptions, StreamOptions)
# the sampler's arguments that the data path gives itself; data.bucketing.enabled is read by BatchOptions
SAMPLER_GIVEN = frozenset({"sampler", "durations", "batch_size", "num_replicas", "rank", "resume", "with_epoch"})
# Trainer arguments that train() passes from elsewhere, which would silently win over a trainer.* key
TRAINER_GIVEN = {
    "accelerator": "hw.accelerator",
    "devices": "hw.devices",
    "num_nodes": "hw.num_nodes",
    "strategy": "hw.strategy",
    "precision": "hw.precision",
    "plugins": "hw.plugins",
    "callbacks": "the callbacks group (callbacks.<name>)",
    "logger": "the logger group (logger.<name>)",
    "accumulate_grad_batches": "the batch plan (data.global_batch_size, data.per_device_batch_size)",
    "default_root_dir": "the run dir (<run dir>/checkpoints: run_name or hydra.run.dir)",
}
# Lightning's tracker loggers -> the package each imports when built (missing: a one-line error naming the extra)
TRACKER_PACKAGES = {"WandbLogger": "wandb", "MLFlowLogger": "mlflow", "CometLogger": "comet_ml"}


def check_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` on the first problem found (see the module docstring for what is checked)."""
    try:
        _check_missing(cfg)
        plain = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as error:  # an interpolation that does not resolve (a resolver's ValueError)
        reason = re.sub(r"^\w+ raised while resolving interpolation: ", "", _first_line(error))
        raise ConfigError(f"{error.full_key or 'config'}: {reason}") from None
    for key in (plain.get("trainer") or {}).keys() & TRAINER_GIVEN.keys():
        raise ConfigError(
            f"trainer.{key}={plain['trainer'][key]!r}: not a trainer key here, train() gives the Trainer "
            f"{TRAINER_GIVEN[key]}; set that instead"
        )
    for where, node in _target_nodes(plain, ""):
        _check_target(where, node)
    for name, node in (plain.get("logger") or {}).items():  # Lightning's trackers import their package when built
        package = TRACKER_PACKAGES.get(str((node or {}).get("_target_", "")).rsplit(".", 1)[-1])
        if package:
            require(package, f"logger.{name}")
    _check_batch_plan(cfg)
    _check_extra_validation(cfg)
    problems = (waveform_problem(plain.get("augment")), spec_augment_problem(plain))
    for problem in (*problems, hub_settings_problem(plain), config_problem(plain)):
        if problem:
            raise ConfigError(problem)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _check_missing(cfg: DictConfig) -> None:
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        also = f"; also missing: {', '.join(missing[1:])}" if missing[1:] else ""
        raise ConfigError(f"{missing[0]}=???: expected a value (required: give {missing[0]}=...){also}")


def _target_nodes(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(full key, node)`` of every dict with a ``_target_``, outermost first."""
    if isinstance(node, dict):
        if "_target_" in node:
            yield where, node
        for key, value in node.items():
            yield from _target_nodes(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _target_nodes(value, f"{where}[{index}]")


def _has_target(value: Any) -> bool:
    return next(_target_nodes(value, ""), None) is not None


def _check_target(where: str, node: dict[str, Any]) -> None:
    target = str(node["_target_"])
    try:
        obj = get_object(target)
    except Exception as error:
        if target.split(".")[0] in EXTRAS:
            return  # an optional package that is not installed: the code that builds it names the extra
        raise ConfigError(
            f"{where}._target_={target}: expected an importable class or function ({_first_line(error)})"
        ) from None
    arguments = {key: value for key, value in node.items() if key not in HYDRA_KEYS}
    if isinstance(obj, type) and issubclass(obj, ASRDataModule):
        arguments.pop(extra_validation.KEY, None)  # names of data configs: _check_extra_validation
    if where == "optimizer.factory" and arguments.get("fused") == "auto":
        arguments.pop("fused")  # asrkit.optim.build_optimizer resolves it (fused_where_supported)
    _check_arguments(where, target, obj, arguments)
    if isinstance(obj, type) and issubclass(obj, ASRDataModule):
        _check_data(where, arguments)


def _check_arguments(
    where: str, label: str, obj: Any, arguments: Mapping[str, Any], given: frozenset[str] = frozenset()
) -> None:
    """Each key a parameter of ``obj`` (a class or function; ``given`` are the ones the code passes itself), each
    value fitting its annotation."""
    try:
        parameters = dict(inspect.signature(obj).parameters)
    except (TypeError, ValueError):
        return  # a builtin without a signature: nothing to check against
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    named = {
        name: p
        for name, p in parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name not in given | {"self"}
    }
    hints = parameter_hints(obj)
    for key, value in arguments.items():
        if key not in named:
            if takes_any:
                continue
            close = difflib.get_close_matches(key, named, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ConfigError(
                f"{where}.{key}={value!r}: not a parameter of {label} ({hint}its parameters: {', '.join(named)})"
            )
        if key in hints and not _has_target(value):
            _check_value(f"{where}.{key}", value, hints[key], f"{label} {key}")


def _check_value(key: str, value: Any, annotation: Any, declared: str) -> None:
    problem = value_problem(key, value, annotation, declared)
    if problem:
        raise ConfigError(problem)


def _check_data(where: str, keys: Mapping[str, Any]) -> None:
    """``data.*``: each value against its record's field, then the records' own rules (unknown keys, streaming
    with bucketing), the bucketing keys against the sampler, and the bucketing cap."""
    for record in DATA_RECORDS:
        hints = typing.get_type_hints(record)
        for key in keys.keys() & hints.keys():
            _check_value(f"{where}.{key}", keys[key], hints[key], f"{record.__name__} {key}")
    try:
        options = DataOptions.parse(keys)
    except ValueError as error:
        raise ConfigError(_first_line(error)) from None
    bucketing = dict(options.batches.bucketing)
    if "enabled" in bucketing:
        _check_value(f"{where}.bucketing.enabled", bucketing.pop("enabled"), bool, "BatchOptions bucketing.enabled")
    sampler = DurationBucketBatchSampler
    _check_arguments(f"{where}.bucketing", sampler.__name__, sampler, bucketing, given=SAMPLER_GIVEN)
    cap, longest = bucketing.get("max_batch_seconds"), options.filters.max_duration_in_seconds
    if options.batches.bucketed and cap is not None and cap < longest:
        raise ConfigError(
            f"{where}.bucketing.max_batch_seconds={cap}: expected at least {where}.max_duration_in_seconds={longest}"
            " (a batch holds at least one utterance, and utterances up to that long are kept); raise the cap or "
            f"lower {where}.max_duration_in_seconds"
        )


def _check_extra_validation(cfg: DictConfig) -> None:
    """``data.extra_validation``: each set's data config exists and its keys pass the data checks; a model that
    scores no transcripts (pre-training) has none."""
    if not cfg.data.get(extra_validation.KEY):
        return
    target = OmegaConf.select(cfg, "model._target_")
    model_class = get_object(target) if target else None
    if isinstance(model_class, type) and issubclass(model_class, Wav2Vec2PretrainModule):
        raise ConfigError(
            f"data.{extra_validation.KEY}: pre-training scores no transcripts, only its loss on data.validation_split; "
            "watch other sets when fine-tuning"
        )
    try:
        resolved = extra_validation.resolve(cfg)
    except ValueError as error:
        raise ConfigError(_first_line(error)) from None
    for name, keys in resolved.items():
        _check_data(f"data.{extra_validation.KEY}.{name}", keys)


def _check_batch_plan(cfg: DictConfig) -> None:
    """The plan ``train()`` makes, made here first, so that its one-line error comes before anything loads."""
    try:
        world_size = hardware.world_size(cfg.hw)
        BatchPlan.make(cfg.data.global_batch_size, cfg.data.per_device_batch_size, world_size)
    except ValueError as error:
        raise ConfigError(_first_line(error)) from None
