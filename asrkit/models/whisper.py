"""Whisper fine-tuning: teacher-forced cross-entropy for training, ``generate()`` for WER.

``name_or_path`` is a hub id (``openai/whisper-small``) or a local directory written by
``save_pretrained`` (an asrkit export included). With ``name_or_path: null`` the model is
initialised at random from ``random_init`` (``WhisperConfig`` arguments) and ``tokenizer``:
that is how the demo and the tests get a tiny Whisper that runs the same code as whisper-small.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)
from transformers.models.whisper.tokenization_whisper import LANGUAGES

from asrkit import metrics, optim
from asrkit.data.batching import WhisperCollator
from asrkit.models import steps

ENCODER_POSITIONS_PER_SECOND = 50  # 100 log-mel frames per second, halved by the stride-2 conv


def _generation_config(tokenizer: WhisperTokenizer, max_length: int) -> GenerationConfig:
    """What ``generate(language=..., task=...)`` needs to know, for a randomly initialised model."""
    token_id = tokenizer.convert_tokens_to_ids
    return GenerationConfig(
        decoder_start_token_id=token_id("<|startoftranscript|>"),
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_length=max_length,
        is_multilingual=True,
        lang_to_id={f"<|{code}|>": token_id(f"<|{code}|>") for code in LANGUAGES},
        task_to_id={"transcribe": token_id("<|transcribe|>"), "translate": token_id("<|translate|>")},
        no_timestamps_token_id=token_id("<|notimestamps|>"),
        prev_sot_token_id=token_id("<|startofprev|>"),
        begin_suppress_tokens=[token_id("Ġ"), tokenizer.eos_token_id],
        return_timestamps=False,
    )


def _random_whisper(tokenizer: WhisperTokenizer, settings: dict[str, Any], attn: str):
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
    model.generation_config = _generation_config(tokenizer, config.max_target_positions)
    return model


class WhisperModule(L.LightningModule):
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
        generation_max_length: int = 225,
        num_beams: int = 1,
        max_label_length: int = 448,
        optimizer: dict[str, Any] | None = None,
        evaluation: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if language not in LANGUAGES:
            raise ValueError(f"lang={language!r} is not a Whisper language code (e.g. hi, en, ta, bn, mr)")
        source = tokenizer or name_or_path
        if source is None:
            raise ValueError("model.tokenizer is required when model.name_or_path is null (random init)")
        self.tokenizer = WhisperTokenizer.from_pretrained(source)
        self.tokenizer.set_prefix_tokens(language=language, task=task, predict_timestamps=False)
        if name_or_path is None:
            if not random_init:
                raise ValueError(
                    "model.name_or_path is null, so model.random_init must give the WhisperConfig"
                )
            self.model = _random_whisper(self.tokenizer, dict(random_init), attn_implementation)
            chunk_seconds = self.model.config.max_source_positions // ENCODER_POSITIONS_PER_SECOND
            self.feature_extractor = WhisperFeatureExtractor(
                feature_size=self.model.config.num_mel_bins, chunk_length=chunk_seconds
            )
        else:
            self.model = WhisperForConditionalGeneration.from_pretrained(
                name_or_path, attn_implementation=attn_implementation
            )
            self.feature_extractor = WhisperFeatureExtractor.from_pretrained(name_or_path)
        self.model.config.use_cache = False  # training; generate() turns the cache on itself
        if freeze_encoder:
            self.model.freeze_encoder()
        if gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.collator = WhisperCollator(
            self.feature_extractor,
            self.tokenizer,
            max_label_length=min(max_label_length, self.model.config.max_target_positions),
            max_input_seconds=self.feature_extractor.chunk_length,
        )
        self._predictions: list[tuple[int, str, str]] = []
        self.predictions: dict[str, list[tuple[int, str, str]]] = {}  # the last scored, per stage

    def on_fit_start(self) -> None:
        steps.enter_train_mode(self)  # a from_pretrained model arrives in eval mode

    # training ---------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any] | None, batch_idx: int) -> torch.Tensor | None:
        if batch is None:  # every file in the batch failed to decode
            return steps.empty_batch_loss(self)
        loss = self.model(input_features=batch["input_features"], labels=batch["labels"]).loss
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["num_samples"])
        if batch["num_skipped"]:
            self.log("train/skipped_audio", float(batch["num_skipped"]), reduce_fx="sum")
        return loss

    # evaluation -------------------------------------------------------------------------------
    @torch.no_grad()
    def transcribe(self, input_features: torch.Tensor) -> list[str]:
        generated = self.model.generate(
            input_features=input_features,
            language=self.hparams.language,
            task=self.hparams.task,
            # Whisper's generate() adds the prompt length to max_length, so this bounds the new tokens
            # (max_new_tokens would do the same, with a warning on every call)
            max_length=self.hparams.generation_max_length,
            num_beams=self.hparams.num_beams,
        )
        return self.tokenizer.batch_decode(generated, skip_special_tokens=True)

    def _eval_step(self, batch: dict[str, Any] | None) -> None:
        if batch is None:
            return
        hypotheses = self.transcribe(batch["input_features"])
        self._predictions.extend(zip(batch["indices"], batch["references"], hypotheses, strict=True))

    def _eval_epoch_end(self, stage: str) -> None:
        predictions, self._predictions = self._predictions, []
        normalizer = steps.evaluation_normalizer(self.hparams.evaluation)
        self.predictions[stage] = metrics.log_error_rates(self, predictions, stage, normalizer)

    def validation_step(self, batch: dict[str, Any] | None, batch_idx: int) -> None:
        with steps.evaluation_precision(self, self.hparams.evaluation):
            self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: dict[str, Any] | None, batch_idx: int) -> None:
        with steps.evaluation_precision(self, self.hparams.evaluation):
            self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    @property
    def skips_layers(self) -> bool:
        """Whether a training step may skip layers (layerdrop), leaving parameters without gradient."""
        return max(self.model.config.encoder_layerdrop, self.model.config.decoder_layerdrop) > 0

    # optimisation -----------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        return optim.configure_optimizers(self.model, self.hparams.optimizer, self.trainer.max_steps)

    # export -----------------------------------------------------------------------------------
    def export(self, directory: str | Path) -> None:
        """``save_pretrained`` of model, processor and generation config (language/task preset)."""
        self.model.generation_config.language = self.hparams.language
        self.model.generation_config.task = self.hparams.task
        self.model.generation_config.forced_decoder_ids = None
        self.model.config.use_cache = True
        self.model.save_pretrained(directory)
        WhisperProcessor(self.feature_extractor, self.tokenizer).save_pretrained(directory)
        self.model.config.use_cache = False
