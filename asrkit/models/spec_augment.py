"""SpecAugment settings (``augment.spec_augment``) on a transformers model config.

transformers masks the inputs of Whisper (log-mel frames and mel channels, ``WhisperModel._mask_input_features``)
and the hidden states of the wav2vec2 family (``_mask_hidden_states``) in training mode only, when the config
says ``apply_spec_augment`` and gives the masks' shares and lengths. The keys here are those config attributes,
so that one preset (``conf/augment/specaugment.yaml``) serves both families; what a setting does not name keeps
the model config's value. Wav2vec2 pre-training refuses them (:func:`refuse_spec_augment`): the masks of
``model.mask_time_prob`` are its objective, not an augmentation.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

KEY = "augment.spec_augment"
PROBABILITIES = ("mask_time_prob", "mask_feature_prob")  # share of frames / channels masked, in [0, 1]
LENGTHS = ("mask_time_length", "mask_feature_length")  # frames / channels per mask, >= 1
MIN_MASKS = ("mask_time_min_masks", "mask_feature_min_masks")  # masks at least, >= 0
KEYS = PROBABILITIES + LENGTHS + MIN_MASKS
PRETRAINING = "asrkit.models.wav2vec2_pretrain.Wav2Vec2PretrainModule"  # the module that refuses them


def spec_augment_settings(node: Mapping[str, Any] | None) -> dict[str, float | int] | None:
    """The checked settings of ``augment.spec_augment`` (None: off, the model config as it is); a wrong one is a
    one-line ValueError naming its key."""
    if node is None:
        return None
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    if not isinstance(node, Mapping):
        raise ValueError(f"{KEY}={node!r}: expected a mapping of {', '.join(KEYS)} (or null: off)")
    settings = {}
    for key, value in node.items():
        if key not in KEYS:
            raise ValueError(f"{KEY}.{key}: not a SpecAugment setting (the settings: {', '.join(KEYS)})")
        if key in PROBABILITIES:
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ValueError(f"{KEY}.{key}={value!r}: a share of the {key.split('_')[1]} axis, in [0, 1]")
        elif isinstance(value, bool) or not isinstance(value, int) or value < (1 if key in LENGTHS else 0):
            raise ValueError(f"{KEY}.{key}={value!r}: an integer >= {1 if key in LENGTHS else 0}")
        settings[str(key)] = value
    return settings


def refuse_spec_augment(spec_augment: Any) -> None:
    """Pre-training's answer to ``augment.spec_augment`` (``train()`` passes it to every family): an error."""
    if spec_augment:
        raise ValueError(
            f"{KEY}: pre-training masks time steps as its objective (model.mask_time_prob, model.mask_time_length), "
            "so SpecAugment does not apply: use augment=none or augment=waveform"
        )


def spec_augment_problem(config: Mapping[str, Any]) -> str | None:
    """What the model module would refuse in the config's ``augment.spec_augment`` (one line), or None
    (``asrkit.config_check`` asks before a run)."""
    try:
        settings = spec_augment_settings((config.get("augment") or {}).get("spec_augment"))
        if (config.get("model") or {}).get("_target_") == PRETRAINING:
            refuse_spec_augment(settings)
    except ValueError as error:
        return str(error)
    return None


def masks_time(config: Any) -> bool:
    """Whether transformers masks time steps of this config's model in training (where an attention mask says
    which frames hold the utterance, transformers' fine-tuning script hands it over)."""
    return bool(getattr(config, "apply_spec_augment", False) and getattr(config, "mask_time_prob", 0) > 0)


def apply_spec_augment(config: Any, settings: Mapping[str, float | int]) -> dict[str, Any]:
    """Turn SpecAugment on in ``config`` with ``settings`` (logged in one line); return the values they replaced
    (to restore them)."""
    missing = [key for key in settings if not hasattr(config, key)]
    if missing:
        raise ValueError(f"{KEY}.{missing[0]}: {type(config).__name__} has no such setting")
    before = {key: getattr(config, key) for key in ("apply_spec_augment", *settings)}
    config.apply_spec_augment = True
    for key, value in settings.items():
        setattr(config, key, value)
    changes = ", ".join(f"{key}={value} (was {before[key]})" for key, value in settings.items())
    log.info("SpecAugment in training mode (%s): %s", KEY, changes)
    return before
