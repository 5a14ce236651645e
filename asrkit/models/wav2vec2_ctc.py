"""CTC fine-tuning of the wav2vec2 family: a character vocabulary from the data, CTC loss, greedy decoding.

``name_or_path`` is a hub id or a ``save_pretrained`` directory of any model transformers has a CTC head for
(``AutoModelForCTC``): a pre-trained encoder (``facebook/wav2vec2-large-lv60``, XLS-R, HuBERT, WavLM, or a
``Wav2Vec2ForPreTraining`` export of ``model=wav2vec2_pretrain_*``) or a CTC model; its encoder is kept and a
new output layer is sized to the vocabulary. Its ``preprocessor_config.json`` (waveform normalisation,
attention mask) is kept too. With ``name_or_path: null`` the network is initialised at random from
``random_init`` (``Wav2Vec2Config`` arguments, or another family's with ``model_type``): how the demo and
the tests get a tiny model that runs the same code as the large one.

The vocabulary (when ``tokenizer`` is null) comes from the training transcripts, which the datamodule reads
after this module exists: ``train()`` hands them over (``build_vocabulary``) before fitting or testing, and
the network is built in ``configure_model``, once the output size is known (before Lightning restores a
checkpoint). Checkpoints store the vocabulary: ``load_from_checkpoint`` rebuilds the same network from it,
and resuming on data that gives another vocabulary is an error.

``spec_augment`` (``augment.spec_augment``: :mod:`asrkit.models.spec_augment`) overrides ``mask_time_prob`` ...
(the same names), so that one preset serves Whisper and this family.

The loss (:func:`asrkit.models.ctc.ctc_loss`) runs in float32 under bf16/fp16 autocast, and evaluation
decodes each utterance as it would alone (:func:`asrkit.models.ctc.greedy_transcribe`). ``peft`` (the peft group)
trains LoRA adapters and the output layer instead of every weight (:mod:`asrkit.adapters`).
"""

from __future__ import annotations

import copy
import logging
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
import transformers
from omegaconf import DictConfig, OmegaConf
from transformers import (
    AutoConfig,
    AutoModelForCTC,
    PretrainedConfig,
    PreTrainedModel,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2Processor,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CTC_MAPPING_NAMES

from asrkit import adapters, checkpoints, metrics
from asrkit.models import steps
from asrkit.models.ctc import Wav2Vec2CTCCollator, ctc_loss, feature_extractor_for, greedy_transcribe
from asrkit.models.ctc_vocab import build_ctc_tokenizer, tokenizer_from_vocabulary
from asrkit.models.spec_augment import apply_spec_augment, spec_augment_settings

log = logging.getLogger(__name__)

# config attributes set from the module's arguments (on top of the checkpoint's or random_init's), each where
# the model's config has it
CONFIG_OPTIONS = (
    "layerdrop",
    "mask_time_prob",
    "mask_time_length",
    "mask_feature_prob",
    "mask_feature_length",
    "hidden_dropout",
    "attention_dropout",
    "activation_dropout",
    "feat_proj_dropout",
    "final_dropout",
    "ctc_loss_reduction",
    "ctc_zero_infinity",
)
CHECKPOINT_KEY = "ctc_vocabulary"
HEAD = ("lm_head",)  # the output layer, new for each vocabulary: trained whole under adapters too


class Wav2Vec2CTCModule(steps.EvaluationHooks, L.LightningModule):
    def __init__(
        self,
        name_or_path: str | None,
        random_init: dict[str, Any] | None = None,
        tokenizer: str | None = None,
        tokenizer_dir: str | None = None,
        vocab_cache_dir: str | None = None,
        word_delimiter_token: str = "|",
        unk_token: str = "[UNK]",
        pad_token: str = "[PAD]",
        freeze_feature_encoder: bool = True,
        gradient_checkpointing: bool = False,
        attn_implementation: str = "sdpa",
        compile: bool = False,
        compile_mode: str = "default",
        layerdrop: float = 0.0,
        mask_time_prob: float = 0.05,
        mask_time_length: int = 10,
        mask_feature_prob: float = 0.0,
        mask_feature_length: int = 10,
        hidden_dropout: float = 0.0,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        feat_proj_dropout: float = 0.0,
        final_dropout: float = 0.0,
        ctc_loss_reduction: str = "mean",
        ctc_zero_infinity: bool = True,
        spec_augment: dict[str, Any] | None = None,
        optimizer: dict[str, Any] | None = None,
        evaluation: dict[str, Any] | None = None,
        peft: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.adapters = adapters.AdapterOptions.parse(peft)
        self.trained_only_checkpoints = adapters.keep_trained_only(self, self.adapters, name_or_path)
        self._masks = spec_augment_settings(spec_augment)
        steps.check_compile_mode(compile_mode)
        if ctc_loss_reduction not in ("mean", "sum"):
            raise ValueError(f"model.ctc_loss_reduction={ctc_loss_reduction!r}: choose mean or sum")
        if name_or_path is None:
            if not random_init:
                raise ValueError("model.name_or_path is null, so model.random_init must give the model's config")
            clash = sorted(set(random_init) & {*CONFIG_OPTIONS, "vocab_size", "pad_token_id"})
            if clash:
                raise ValueError(f"model.random_init sets {clash}: set them as model.<name> instead")
            if isinstance(random_init, DictConfig):  # nested lists too, for save_pretrained's JSON
                random_init = OmegaConf.to_container(random_init, resolve=True)
            settings = dict(random_init)
            model_type = settings.pop("model_type", "wav2vec2")
            if model_type not in MODEL_FOR_CTC_MAPPING_NAMES:
                raise ValueError(f"model.random_init.model_type={model_type}: {_NO_CTC}")
            self.base_config = AutoConfig.for_model(model_type, **settings)
        else:
            self.base_config = AutoConfig.from_pretrained(name_or_path)
            if self.base_config.model_type not in MODEL_FOR_CTC_MAPPING_NAMES:
                raise ValueError(f"model.name_or_path={name_or_path} is a {self.base_config.model_type}: {_NO_CTC}")
        model_class = _ctc_class(self.base_config)
        if model_class.main_input_name != "input_values":
            raise ValueError(
                f"model.name_or_path: {model_class.__name__} takes {model_class.main_input_name}; this "
                "module feeds raw waveforms (wav2vec2, XLS-R, HuBERT, WavLM, data2vec-audio, ...)"
            )
        if attn_implementation == "sdpa" and not model_class._supports_sdpa:
            raise ValueError(
                f"model.attn_implementation=sdpa: {model_class.__name__} has no SDPA attention in "
                "transformers; set model.attn_implementation=eager"
            )
        self.feature_extractor = feature_extractor_for(name_or_path, self.base_config)
        tokens = {"word_delimiter": word_delimiter_token, "unk_token": unk_token, "pad_token": pad_token}
        self.collator = Wav2Vec2CTCCollator(
            self.feature_extractor,
            tokenizer=Wav2Vec2CTCTokenizer.from_pretrained(tokenizer) if tokenizer else None,
            vocabulary=partial(build_ctc_tokenizer, cache_dir=vocab_cache_dir, **tokens),
        )
        self._tokens = tokens
        self.model: PreTrainedModel | None = None
        self.predictions: dict[str, list[tuple[int, str, str]]] = {}  # the last scored, per stage
        if self.collator.tokenizer is not None:
            self._build_model(load_weights=True)

    # the network, once the vocabulary is known --------------------------------------------------
    def _config(self) -> PretrainedConfig:
        """The network's config: the base's, the module's options and the vocabulary's size and blank."""
        config = copy.deepcopy(self.base_config)
        for name in CONFIG_OPTIONS:
            if hasattr(config, name):
                setattr(config, name, self.hparams[name])
        if self._masks:  # over the module's own mask_* arguments
            apply_spec_augment(config, self._masks)
        config.vocab_size, config.pad_token_id = len(self.collator.tokenizer), self.collator.tokenizer.pad_token_id
        return config

    def _pretrained(self, config: PretrainedConfig, **kwargs: Any) -> PreTrainedModel:
        """``name_or_path``'s weights with a new lm_head (a pre-training checkpoint has none, a CTC one may have
        another vocabulary)."""
        return AutoModelForCTC.from_pretrained(
            self.hparams.name_or_path,
            config=config,
            attn_implementation=self.hparams.attn_implementation,
            ignore_mismatched_sizes=True,
            **kwargs,
        )

    def _build_model(self, load_weights: bool) -> None:
        hp = self.hparams
        config = self._config()
        if hp.name_or_path is not None and load_weights:
            model = self._pretrained(config, **adapters.load_kwargs(self.adapters, keep=HEAD))
        else:  # random init, or weights that a checkpoint is about to overwrite
            model = AutoModelForCTC.from_config(config, attn_implementation=hp.attn_implementation)
        if hp.freeze_feature_encoder:
            model.freeze_feature_encoder()
        if hp.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.model = adapters.wrap(model, self.adapters, keep=HEAD)
        adapters.log_trainable(self.model, self.adapters)

    @property
    def needs_vocabulary(self) -> bool:
        """Whether the vocabulary still has to be built from the training transcripts (``build_vocabulary``)."""
        return self.collator.tokenizer is None

    def build_vocabulary(self, transcripts: list[str]) -> None:
        """Build the character vocabulary from the prepared training transcripts (given ``model.tokenizer``,
        the given one is kept)."""
        self.collator.build_vocabulary(transcripts)

    def configure_model(self) -> None:
        if self.model is not None:
            return
        if self.collator.tokenizer is None and getattr(self, "_trainer", None) is None:
            return  # load_from_checkpoint: on_load_checkpoint builds the network from the stored vocabulary
        if self.collator.tokenizer is None:
            raise RuntimeError(
                "no CTC vocabulary: hand the module the training transcripts first "
                "(module.build_vocabulary(datamodule.training_transcripts()), as train() does), or give "
                "model.tokenizer=<dir with vocab.json> (an asrkit export or run's tokenizer/)"
            )
        self._build_model(load_weights=True)
        if self.hparams.tokenizer_dir and getattr(self._trainer, "is_global_zero", True):  # no Trainer: steppable
            self.collator.tokenizer.save_pretrained(self.hparams.tokenizer_dir)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = self.collator.tokenizer.get_vocab()
        if self.trained_only_checkpoints:  # the frozen weights are name_or_path's
            checkpoint["state_dict"] = checkpoints.trained_state(self, checkpoint["state_dict"])

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        stored = checkpoint.get(CHECKPOINT_KEY)
        if stored is None:
            raise ValueError("this checkpoint holds no CTC vocabulary: it was not written by Wav2Vec2CTCModule")
        if self.collator.tokenizer is None:  # load_from_checkpoint: no vocabulary was built
            self.collator.tokenizer = tokenizer_from_vocabulary(stored, self.hparams.vocab_cache_dir, **self._tokens)
        elif self.collator.tokenizer.get_vocab() != stored:
            raise ValueError(
                f"the checkpoint's CTC vocabulary ({len(stored)} symbols) differs from the one built from "
                f"this run's training transcripts ({len(self.collator.tokenizer)}): train on the same data "
                "(or the same data.chars_to_ignore / data.do_lower_case) to resume"
            )
        if self.model is None:  # the checkpoint holds every weight, or (trained_only_checkpoints) name_or_path does
            self._build_model(load_weights=self.trained_only_checkpoints)

    # training -----------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any] | None, batch_idx: int) -> torch.Tensor | None:
        if batch is None:  # every file in the batch failed to decode
            return steps.empty_batch_loss(self)
        network = steps.training_network(self)  # the model, or compiled (model.compile)
        logits = network(input_values=batch["input_values"], attention_mask=batch.get("attention_mask")).logits
        # frames of the unpadded audio (transformers' own loss counts the padding's too when there is no mask)
        loss = ctc_loss(
            logits,
            batch["labels"],
            self.model._get_feat_extract_output_lengths(batch["input_lengths"]),
            blank_id=self.model.config.pad_token_id,
            reduction=self.hparams.ctc_loss_reduction,
            zero_infinity=self.hparams.ctc_zero_infinity,
        )
        size = batch["num_samples"]
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/padding_fraction", batch["padding_fraction"], batch_size=size)
        if batch["num_skipped"]:
            self.log("train/skipped_audio", float(batch["num_skipped"]), reduce_fx="sum")
        return loss

    # evaluation ---------------------------------------------------------------------------------
    def transcribe(
        self, input_values: torch.Tensor, input_lengths: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> list[str]:
        """Greedy CTC decoding of a padded batch, each utterance as it decodes alone."""
        return greedy_transcribe(self.model, self.collator.tokenizer, input_values, input_lengths, attention_mask)

    def _eval_step(self, batch: dict[str, Any] | None) -> list[tuple[int, str, str]]:
        if batch is None:
            return []
        hypotheses = self.transcribe(batch["input_values"], batch["input_lengths"], batch.get("attention_mask"))
        return list(zip(batch["indices"], batch["references"], hypotheses, strict=True))

    def _eval_epoch_end(self, stage: str, predictions: list[tuple[int, str, str]]) -> None:
        normalizer = steps.evaluation_normalizer(self.hparams.evaluation)
        unknown = self.collator.tokenizer.unk_token
        self.predictions[stage] = metrics.log_error_rates(self, predictions, stage, normalizer, unknown)

    @property
    def skips_layers(self) -> bool:
        """Whether a training step may skip layers (layerdrop), leaving parameters without gradient."""
        return self.hparams.layerdrop > 0

    # export -------------------------------------------------------------------------------------
    def export(self, directory: str | Path) -> None:
        """``save_pretrained`` of the model (with adapters, a copy with them merged in) and its processor (feature
        extractor + CTC tokenizer)."""
        # QLoRA: merged into the base read again, unquantised
        full_precision = partial(self._pretrained, self._config()) if self.adapters.quantized else None
        adapters.merged(self.model, self.adapters, full_precision).save_pretrained(directory)
        Wav2Vec2Processor(feature_extractor=self.feature_extractor, tokenizer=self.collator.tokenizer).save_pretrained(
            directory
        )


_NO_CTC = f"transformers has no CTC head for it (CTC models: {', '.join(MODEL_FOR_CTC_MAPPING_NAMES)})"


def _ctc_class(config: PretrainedConfig) -> type[PreTrainedModel]:
    return getattr(transformers, MODEL_FOR_CTC_MAPPING_NAMES[config.model_type])
