"""Whisper fine-tuning: teacher-forced cross-entropy for training, ``generate()`` for WER.

``name_or_path`` is a hub id (``openai/whisper-small``) or a local directory written by
``save_pretrained`` (an asrkit export included). With ``name_or_path: null`` the model is
initialised at random from ``random_init`` (``WhisperConfig`` arguments) and ``tokenizer``:
that is how the demo and the tests get a tiny Whisper that runs the same code as whisper-small.

English-only checkpoints (``openai/whisper-*.en``, distil-whisper ``.en``; told apart by
``generation_config.is_multilingual: false``, or for random init by an English-only tokenizer of fewer than
51865 tokens, transformers' own rule) have no language or task prompt: their labels start
``<|startoftranscript|><|notimestamps|>`` and ``generate()`` gets no ``language``/``task``. Evaluation
transcribes utterances longer than the input window by transformers' long-form sequential decoding
(:func:`asrkit.models.whisper_generation.generate_texts`). ``peft`` (the peft group) trains LoRA adapters
instead of the weights (:mod:`asrkit.adapters`); the export is then the model with the adapters merged in.

``spec_augment`` (``augment.spec_augment``: :mod:`asrkit.models.spec_augment`) turns on transformers' time and
mel-channel masks (training mode only; time masks within each utterance: its batches carry an attention mask).
Null keeps the config's own (off in openai's checkpoints); the export has the checkpoint's own values back.
"""

from __future__ import annotations

import copy
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
from transformers import (
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)
from transformers.models.whisper.modeling_whisper import shift_tokens_right
from transformers.models.whisper.tokenization_whisper import LANGUAGES

from asrkit import adapters, checkpoints, metrics
from asrkit.data.padding import IGNORE_INDEX
from asrkit.models import steps
from asrkit.models.spec_augment import apply_spec_augment, masks_time, spec_augment_settings
from asrkit.models.whisper_collator import WhisperCollator
from asrkit.models.whisper_generation import (
    MULTILINGUAL_VOCAB_SIZE,
    generate_texts,
    is_english_only,
    random_init_generation_config,
)

ENCODER_POSITIONS_PER_SECOND = 50  # 100 log-mel frames per second, halved by the stride-2 conv


def label_token_loss(
    model: Any, input_features: torch.Tensor, attention_mask: torch.Tensor | None, labels: torch.Tensor
) -> torch.Tensor:
    """Whisper's training loss (mean cross-entropy over the label tokens) with the vocabulary projection applied
    to the label tokens only.

    ``WhisperForConditionalGeneration(labels=...)`` projects every decoder position, padding included, onto the
    51,865-token vocabulary and then ignores the padded ones (label ``-100``). The projection and its softmax are
    the largest tensors of a step (batch x longest label x vocabulary, 119 MB for the demo's 16 x 36 tokens) and,
    for a small model, most of its FLOPs; here the decoder states of the padded positions never reach it. Same
    decoder inputs (``shift_tokens_right`` of the labels), same loss and gradients (tests/test_whisper.py).
    ``model`` may be a PEFT model: its base model carries the adapters.
    """
    network = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = network.config
    decoder_input_ids = shift_tokens_right(labels, config.pad_token_id, config.decoder_start_token_id)
    states = network.model(
        input_features, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids
    ).last_hidden_state
    kept = labels != IGNORE_INDEX
    return torch.nn.functional.cross_entropy(network.proj_out(states[kept]), labels[kept])


def _random_whisper(tokenizer: WhisperTokenizer, settings: dict[str, Any], attn: str):
    multilingual = len(tokenizer) >= MULTILINGUAL_VOCAB_SIZE
    token_id = tokenizer.convert_tokens_to_ids
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        decoder_start_token_id=token_id("<|startoftranscript|>"),
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **settings,
    )
    model = WhisperForConditionalGeneration._from_config(config, attn_implementation=attn)
    model.generation_config = random_init_generation_config(tokenizer, config.max_target_positions, multilingual)
    return model


class WhisperModule(steps.EvaluationHooks, L.LightningModule):
    def __init__(
        self,
        name_or_path: str | None,
        language: str,
        task: str = "transcribe",
        tokenizer: str | None = None,
        random_init: dict[str, Any] | None = None,
        freeze_encoder: bool = False,
        gradient_checkpointing: bool = False,
        attn_implementation: str = "sdpa",
        compile: bool = False,
        compile_mode: str = "default",
        generation_max_length: int = 225,
        num_beams: int = 1,
        max_label_length: int = 448,
        spec_augment: dict[str, Any] | None = None,
        optimizer: dict[str, Any] | None = None,
        evaluation: dict[str, Any] | None = None,
        peft: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.adapters = adapters.AdapterOptions.parse(peft)
        masks = spec_augment_settings(spec_augment)  # checked before anything loads
        steps.check_compile_mode(compile_mode)
        if language not in LANGUAGES:
            raise ValueError(f"lang={language!r} is not a Whisper language code (e.g. hi, en, ta, bn, mr)")
        source = tokenizer or name_or_path
        if source is None:
            raise ValueError("model.tokenizer is required when model.name_or_path is null (random init)")
        self.tokenizer = WhisperTokenizer.from_pretrained(source)
        if name_or_path is None:
            if not random_init:
                raise ValueError("model.name_or_path is null, so model.random_init must give the WhisperConfig")
            self.model = _random_whisper(self.tokenizer, dict(random_init), attn_implementation)
            chunk_seconds = self.model.config.max_source_positions // ENCODER_POSITIONS_PER_SECOND
            self.feature_extractor = WhisperFeatureExtractor(
                feature_size=self.model.config.num_mel_bins, chunk_length=chunk_seconds
            )
        else:
            self.model = WhisperForConditionalGeneration.from_pretrained(
                name_or_path, attn_implementation=attn_implementation, **adapters.load_kwargs(self.adapters)
            )
            self.feature_extractor = WhisperFeatureExtractor.from_pretrained(name_or_path)
        self.english_only = is_english_only(self.model)
        if self.english_only:
            if language != "en" or task != "transcribe":
                key = f"lang={language} (model.language)" if language != "en" else f"model.task={task}"
                raise ValueError(
                    f"{key}: {name_or_path or source} is an English-only Whisper, which only transcribes "
                    "English: set lang=en and model.task=transcribe, or use a multilingual checkpoint"
                )
            # no <|lang|><|task|> prompt (set_prefix_tokens keeps a language it is not told to drop)
            self.tokenizer.language = self.tokenizer.task = None
            self.tokenizer.set_prefix_tokens(language=None, task=None, predict_timestamps=False)
        else:
            self.tokenizer.set_prefix_tokens(language=language, task=task, predict_timestamps=False)
        self.model.config.use_cache = False  # training; generate() turns the cache on itself
        self._config_before_masks = apply_spec_augment(self.model.config, masks) if masks else {}
        if gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.model = adapters.wrap(self.model, self.adapters)
        if freeze_encoder:  # after wrap: with adapters, the encoder's are frozen too
            self.model.freeze_encoder()
        adapters.log_trainable(self.model, self.adapters)
        self.trained_only_checkpoints = adapters.keep_trained_only(self, self.adapters, name_or_path)
        self.collator = WhisperCollator(
            self.feature_extractor,
            self.tokenizer,
            max_label_length=min(max_label_length, self.model.config.max_target_positions),
            max_input_seconds=self.feature_extractor.chunk_length,
            attention_mask=masks_time(self.model.config),
        )
        self.predictions: dict[str, list[tuple[int, str, str]]] = {}  # the last scored, per stage

    # training ---------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any] | None, batch_idx: int) -> torch.Tensor | None:
        if batch is None:  # every file in the batch failed to decode
            return steps.empty_batch_loss(self)
        features, frames = batch["input_features"], batch.get("attention_mask")  # (frames: for SpecAugment)
        if self.hparams.get("compile", False):  # the whole network compiled, with transformers' own loss
            network = steps.training_network(self)
            loss = network(input_features=features, attention_mask=frames, labels=batch["labels"]).loss
        else:
            loss = label_token_loss(self.model, features, frames, batch["labels"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["num_samples"])
        if batch["num_skipped"]:
            self.log("train/skipped_audio", float(batch["num_skipped"]), reduce_fx="sum")
        return loss

    # evaluation -------------------------------------------------------------------------------
    def generate_kwargs(self) -> dict[str, Any]:
        """``generate()`` settings of evaluation (and of the export's generation config)."""
        prompt = {} if self.english_only else {"language": self.hparams.language, "task": self.hparams.task}
        # Whisper's generate() adds the prompt length to max_length, so this bounds the new tokens
        # (max_new_tokens would do the same, with a warning on every call)
        return prompt | {"max_length": self.hparams.generation_max_length, "num_beams": self.hparams.num_beams}

    @torch.no_grad()
    def transcribe(self, input_features: torch.Tensor, long_form: dict[str, Any] | None = None) -> list[str]:
        """Texts of a batch: ``input_features`` in the window, ``long_form`` rows whole (generate_texts)."""
        return generate_texts(self.model, self.tokenizer, input_features, long_form, **self.generate_kwargs())

    def _eval_step(self, batch: dict[str, Any] | None) -> list[tuple[int, str, str]]:
        if batch is None:
            return []
        hypotheses = self.transcribe(batch["input_features"], batch.get("long_form"))
        return list(zip(batch["indices"], batch["references"], hypotheses, strict=True))

    def _eval_epoch_end(self, stage: str, predictions: list[tuple[int, str, str]]) -> None:
        normalizer = steps.evaluation_normalizer(self.hparams.evaluation)
        self.predictions[stage] = metrics.log_error_rates(self, predictions, stage, normalizer)

    @property
    def skips_layers(self) -> bool:
        """Whether a training step may skip layers (layerdrop), leaving parameters without gradient."""
        return max(self.model.config.encoder_layerdrop, self.model.config.decoder_layerdrop) > 0

    # checkpoints and export -----------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.trained_only_checkpoints:  # the frozen weights are name_or_path's
            checkpoint["state_dict"] = checkpoints.trained_state(self, checkpoint["state_dict"])

    def export(self, directory: str | Path) -> None:
        """``save_pretrained`` of model, processor and a generation config that decodes as evaluation did.

        The generation config carries evaluation's ``max_length`` and ``num_beams`` and, for a multilingual
        model, its language and task (an English-only one has none), so that ``transformers.pipeline`` on the
        export transcribes as training's test did. With adapters, the model saved is a copy with them merged in.
        """
        full_precision = None  # QLoRA: the base read again, unquantised
        if self.adapters.quantized:
            full_precision = partial(
                WhisperForConditionalGeneration.from_pretrained,
                self.hparams.name_or_path,
                attn_implementation=self.hparams.attn_implementation,
            )
        network = adapters.merged(self.model, self.adapters, full_precision)
        own = network.generation_config
        network.generation_config = copy.deepcopy(self.model.generation_config)  # the module keeps its own settings
        exported = {"language": None, "task": None, "forced_decoder_ids": None} | self.generate_kwargs()
        for key, value in exported.items():  # setattr: update() skips keys a GenerationConfig lacks
            setattr(network.generation_config, key, value)
        config = network.config
        masks = {key: getattr(config, key) for key in self._config_before_masks}
        config.update({"use_cache": True} | self._config_before_masks)
        try:
            network.save_pretrained(directory)
            WhisperProcessor(self.feature_extractor, self.tokenizer).save_pretrained(directory)
        finally:
            config.update({"use_cache": False} | masks)
            network.generation_config = own
