"""Parameter-efficient fine-tuning through the peft library: LoRA adapters beside a model's frozen linear layers
(``peft=lora``), on weights loaded in 4 or 8 bit by bitsandbytes (``peft=qlora``).

The Whisper and CTC modules call these functions on the network they build; ``peft=none`` leaves it untouched and
never imports peft. What an adapted run does differently:

- only the adapters (and a CTC model's output layer, peft's ``modules_to_save``) have ``requires_grad``, so the
  optimizer (:func:`asrkit.optim.parameter_groups` leaves frozen parameters out) holds state for them alone;
- a run from a pre-trained model (``model.name_or_path``) keeps only the trained parameters in its checkpoints
  (:func:`asrkit.checkpoints.trained_state`): the frozen ones are read again from ``name_or_path`` when it is
  rebuilt. A random-init run keeps them all (nowhere else holds them). A 4-bit model could not load its own
  state dict back in any case: bitsandbytes writes quantisation constants that ``load_state_dict`` refuses;
- the export is a plain transformers model, the adapters merged into the weights (:func:`merged`), which
  ``transformers.pipeline`` and ``asrkit.evaluate`` load without peft.
"""

from __future__ import annotations

import copy
import difflib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from asrkit import checkpoints
from asrkit.extras import require

log = logging.getLogger(__name__)

ATTENTION = ("q_proj", "k_proj", "v_proj", "out_proj")
FEED_FORWARD = ("intermediate_dense", "output_dense")
# peft.target_modules: null -> these linear layers, by config model_type (transformers 5's module names)
DEFAULT_TARGETS = {
    "whisper": ATTENTION,  # encoder self-attention, decoder self- and cross-attention
    **dict.fromkeys(
        ("wav2vec2", "hubert", "data2vec-audio", "unispeech", "unispeech-sat", "sew"), ATTENTION + FEED_FORWARD
    ),
    "wav2vec2-conformer": ("linear_q", "linear_k", "linear_v", "linear_out") + FEED_FORWARD,
    "wavlm": FEED_FORWARD,  # see BYPASSED
}
# Linear layers whose weights a family's forward reads directly (WavLM hands q/k/v/out_proj.weight to
# F.multi_head_attention_forward): an adapter beside them would never run, and never get a gradient
BYPASSED = {"wavlm": ATTENTION}
COMPUTE_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass(frozen=True)
class AdapterOptions:
    """The ``peft`` config group (conf/peft/*.yaml documents each key; ``none.yaml`` gives ``method`` alone)."""

    method: Literal["none", "lora", "qlora"] = "none"
    r: int | None = None
    alpha: float | None = None
    dropout: float | None = None
    target_modules: tuple[str, ...] | None = None
    bias: Literal["none", "all", "lora_only"] | None = None
    load_in_bits: Literal[4, 8] | None = None
    bnb_4bit_quant_type: Literal["nf4", "fp4"] | None = None
    bnb_4bit_use_double_quant: bool | None = None
    bnb_4bit_compute_dtype: Literal["bfloat16", "float16", "float32"] | None = None

    @classmethod
    def parse(cls, node: Mapping[str, Any] | None) -> AdapterOptions:
        """The options of a ``peft`` node (None: no adapters); one-line errors name the key."""
        values = dict(OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node or {})
        known = [field.name for field in fields(cls)]
        for key in values:
            if key not in known:
                raise ValueError(f"peft.{key}: not a peft key (keys: {', '.join(known)})")
        if isinstance(values.get("target_modules"), list):
            values["target_modules"] = tuple(values["target_modules"])
        return cls(**values)

    def __post_init__(self) -> None:
        """Each value checked here, so that a wrong one is a one-line error naming its key before anything loads."""
        if self.method not in ("none", "lora", "qlora"):
            raise ValueError(f"peft.method={self.method!r}: choose none, lora or qlora (peft=<method>)")
        if not self.enabled:
            return
        if self.load_in_bits is not None and not self.quantized:
            raise ValueError(f"peft.load_in_bits={self.load_in_bits}: only peft=qlora loads weights in k bit")
        r, alpha, dropout, names = self.r, self.alpha, self.dropout, self.target_modules
        four = self.load_in_bits == 4
        checks = [  # (key, whether its value is fine, what it must be)
            ("r", type(r) is int and r > 0, "the adapters' rank, an integer > 0"),
            ("alpha", _number(alpha) and alpha > 0, "a number > 0 (the adapters' output is scaled by alpha / r)"),
            ("dropout", _number(dropout) and 0 <= dropout < 1, "a probability in [0, 1)"),
            ("bias", self.bias in ("none", "all", "lora_only"), "choose none, all or lora_only"),
            (
                "target_modules",
                names is None or (isinstance(names, tuple) and names and all(isinstance(n, str) for n in names)),
                "a list of linear layer names, or null for the family's default",
            ),
            ("load_in_bits", not self.quantized or self.load_in_bits in (4, 8), "4 or 8"),
            ("bnb_4bit_quant_type", not four or self.bnb_4bit_quant_type in ("nf4", "fp4"), "choose nf4 or fp4"),
            (
                "bnb_4bit_use_double_quant",
                not four or isinstance(self.bnb_4bit_use_double_quant, bool),
                "true or false",
            ),
            ("bnb_4bit_compute_dtype", not four or self.bnb_4bit_compute_dtype in COMPUTE_DTYPES, "a dtype name"),
        ]
        for key, fine, rule in checks:
            if not fine:
                raise ValueError(f"peft.{key}={getattr(self, key)!r}: {rule}")

    @property
    def enabled(self) -> bool:
        return self.method != "none"

    @property
    def quantized(self) -> bool:
        return self.method == "qlora"

    def targets(self, model_type: str) -> tuple[str, ...]:
        """The linear layers to adapt: ``target_modules``, or the family's default."""
        if self.target_modules is not None:
            return self.target_modules
        if model_type not in DEFAULT_TARGETS:
            raise ValueError(
                f"peft.target_modules=null: no default for {model_type} models (defaults: "
                f"{', '.join(DEFAULT_TARGETS)}); name its linear layers, e.g. peft.target_modules=[q_proj,v_proj]"
            )
        return DEFAULT_TARGETS[model_type]

    def unquantized(self) -> dict[str, Any]:
        """The same adapters on full-precision weights (``peft=lora``): how a QLoRA checkpoint is exported or read
        on a machine without a CUDA GPU."""
        lora = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith(("load_in", "bnb_"))}
        return lora | {"method": "lora"}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def config_problem(plain: Mapping[str, Any]) -> str | None:
    """What stops the composed (resolved) config's ``peft`` group from working, in one line, before anything loads."""
    try:
        options = AdapterOptions.parse(plain.get("peft"))
    except ValueError as error:
        return str(error)
    model = plain.get("model") or {}
    if not options.enabled:
        if plain.get("export_adapter_only"):
            return "export_adapter_only=true: peft=none trains no adapter; choose peft=lora (or qlora) or set it false"
        return None
    if "peft" not in model:
        return (
            f"peft={options.method}: {model.get('_target_')} takes no adapters (wav2vec2 pre-training trains every "
            "weight from random initialisation); use peft=none, or a model config that passes `peft: ${peft}`"
        )
    name_or_path = model.get("name_or_path")
    if plain.get("export_adapter_only") and not name_or_path:
        return (
            "export_adapter_only=true: model.name_or_path is null (random init), so there is no base model to load "
            "the adapter onto; the export (adapters merged) holds the whole model"
        )
    require("peft", f"peft={options.method}")
    if not options.quantized:
        return None
    require("bitsandbytes", "peft=qlora")
    if not name_or_path:
        return (
            "peft=qlora: model.name_or_path is null (random init), so there are no pre-trained weights to quantise; "
            "use peft=lora"
        )
    accelerator = str((plain.get("hw") or {}).get("accelerator", "auto"))
    if accelerator not in ("auto", "gpu", "cuda") or not torch.cuda.is_available():
        return (
            f"peft=qlora: bitsandbytes {options.load_in_bits}-bit weights need a CUDA GPU, and "
            f"hw.accelerator={accelerator} has none here; use peft=lora (the same adapters on full-precision weights)"
        )
    return None


def load_kwargs(options: AdapterOptions, keep: tuple[str, ...] = ()) -> dict[str, Any]:
    """``from_pretrained`` arguments that load the weights as ``options`` trains them: for QLoRA, quantised by
    bitsandbytes (the layers in ``keep`` stay in full precision) onto this process's GPU; else none."""
    if not options.quantized:
        return {}
    if not torch.cuda.is_available():  # load_from_checkpoint outside train(): read it with peft=lora instead
        raise ValueError("peft=qlora: this process sees no CUDA GPU to load bitsandbytes weights on; use peft=lora")
    require("bitsandbytes", "peft=qlora")
    from transformers import BitsAndBytesConfig

    if options.load_in_bits == 8:
        quantization = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=list(keep) or None)
    else:
        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=options.bnb_4bit_quant_type,
            bnb_4bit_use_double_quant=options.bnb_4bit_use_double_quant,
            bnb_4bit_compute_dtype=COMPUTE_DTYPES[options.bnb_4bit_compute_dtype],
            llm_int8_skip_modules=list(keep) or None,  # transformers' name for both widths
        )
    # each process its own GPU (torchrun and Lightning's launcher set LOCAL_RANK; the first process has none)
    return {"quantization_config": quantization, "device_map": {"": int(os.environ.get("LOCAL_RANK", 0))}}


def _check_targets(model: nn.Module, targets: tuple[str, ...], model_type: str) -> None:
    linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)})
    unknown = [name for name in targets if name not in linear]
    if unknown:
        close = sorted({match for name in unknown for match in difflib.get_close_matches(name, linear, n=3)})
        hint = f"close: {', '.join(close)}; " if close else ""
        raise ValueError(
            f"peft.target_modules={list(targets)}: {', '.join(unknown)} names no linear layer of this {model_type} "
            f"model ({hint}its linear layers: {', '.join(linear)})"
        )
    bypassed = sorted(set(targets) & set(BYPASSED.get(model_type, ())))
    if bypassed:
        raise ValueError(
            f"peft.target_modules={list(targets)}: {model_type}'s forward reads the weights of {', '.join(bypassed)} "
            f"directly, so adapters there would never run; adapt {', '.join(DEFAULT_TARGETS[model_type])} instead"
        )


def wrap(model: nn.Module, options: AdapterOptions, keep: tuple[str, ...] = ()) -> nn.Module:
    """``model`` as a peft ``PeftModel`` with LoRA adapters on ``options``' targets, every other weight frozen but
    those of the modules named in ``keep`` (peft's ``modules_to_save``: trained whole); ``model`` itself for
    ``peft=none``. A QLoRA model is prepared first (peft's ``prepare_model_for_kbit_training``: frozen, its
    non-quantised weights in float32; gradient checkpointing, if on, is the module's, without re-entrance)."""
    if not options.enabled:
        return model
    require("peft", f"peft={options.method}")
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    model_type = model.config.model_type
    targets = options.targets(model_type)
    _check_targets(model, targets, model_type)
    if options.quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    config = LoraConfig(
        r=options.r,
        lora_alpha=options.alpha,
        lora_dropout=options.dropout,
        target_modules=list(targets),
        bias=options.bias,
        modules_to_save=list(keep) or None,
    )
    return get_peft_model(model, config)


def log_trainable(model: nn.Module, options: AdapterOptions) -> None:
    """One line: how many of an adapted model's parameters train (4-bit weights counted unpacked, as peft does)."""
    if not options.enabled:
        return
    trainable, total = model.get_nb_trainable_parameters()
    names = ", ".join(sorted(model.peft_config["default"].target_modules))
    share = 100 * trainable / total
    log.info(
        "trainable %s of %s parameters (%.2f %%): LoRA adapters on %s", f"{trainable:,}", f"{total:,}", share, names
    )


def merged(
    model: nn.Module, options: AdapterOptions, full_precision: Callable[[], nn.Module] | None = None
) -> nn.Module:
    """A plain transformers model that computes what ``model`` computes: ``model`` itself without adapters; else a
    copy with the adapters merged into its weights (``merge_and_unload``), ``model`` left as it is, to go on
    training. For QLoRA the copy is ``full_precision()`` (the base read again unquantised) with ``model``'s trained
    weights, since merging into 4-bit weights would give a model that needs bitsandbytes and a GPU to load."""
    if not options.enabled:
        return model
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    if full_precision is None:
        adapted = copy.deepcopy(model)
    else:
        adapted = get_peft_model(full_precision(), copy.deepcopy(model.peft_config["default"]))
        set_peft_model_state_dict(adapted, get_peft_model_state_dict(model))
    return adapted.merge_and_unload(safe_merge=True)  # safe_merge: a non-finite adapter is an error


def save_adapter(model: nn.Module, directory: Path) -> None:
    """The trained adapter alone (peft's ``save_pretrained``: adapter_config.json naming its base model, and the
    adapter weights), which ``PeftModel.from_pretrained(<base model>, directory)`` loads."""
    model.save_pretrained(directory)
    log.info("adapter saved to %s", directory)


def keep_trained_only(module: nn.Module, options: AdapterOptions, name_or_path: str | None) -> bool:
    """Whether ``module``'s checkpoints keep only the trained parameters (:func:`asrkit.checkpoints.trained_state`):
    adapted runs whose frozen weights ``name_or_path`` gives again. If so, ``module`` loads such a state dict
    strictly but for them (:func:`asrkit.checkpoints.allow_missing_frozen`)."""
    if options.enabled and name_or_path is None:  # legal (the tests' tiny models), but rarely what is meant
        log.warning("peft=%s on a model at random (name_or_path null): its frozen weights stay random", options.method)
    if not options.enabled or name_or_path is None:
        return False
    module.register_load_state_dict_post_hook(checkpoints.allow_missing_frozen)
    return True
