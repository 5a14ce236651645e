"""Whisper decoding: ``generate()`` over a batch within the input window and transformers' long-form sequential
decoding past it (:func:`generate_texts`, shared by training's evaluation, :mod:`asrkit.recognizer` and
:mod:`asrkit.whisper_segments`), and the generation config a randomly initialised Whisper needs."""

from __future__ import annotations

from typing import Any

import torch
from transformers import GenerationConfig, WhisperForConditionalGeneration, WhisperTokenizer
from transformers.models.whisper.tokenization_whisper import LANGUAGES

MULTILINGUAL_VOCAB_SIZE = 51865  # smaller vocabularies are English-only (transformers' convert_openai_to_hf)


def random_init_generation_config(tokenizer: WhisperTokenizer, max_length: int, multilingual: bool) -> GenerationConfig:
    """What ``generate()`` needs to know, for a randomly initialised model; an English-only one, like the
    ``.en`` checkpoints, has no ``lang_to_id``/``task_to_id`` and ``is_multilingual: false``."""
    token_id = tokenizer.convert_tokens_to_ids
    prompts = {"is_multilingual": multilingual}
    if multilingual:
        prompts["lang_to_id"] = {f"<|{code}|>": token_id(f"<|{code}|>") for code in LANGUAGES}
        prompts["task_to_id"] = {"transcribe": token_id("<|transcribe|>"), "translate": token_id("<|translate|>")}
    return GenerationConfig(
        decoder_start_token_id=token_id("<|startoftranscript|>"),
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_length=max_length,
        **prompts,
        no_timestamps_token_id=token_id("<|notimestamps|>"),
        prev_sot_token_id=token_id("<|startofprev|>"),
        begin_suppress_tokens=[token_id("Ġ"), tokenizer.eos_token_id],
        return_timestamps=False,
    )


def is_english_only(model: WhisperForConditionalGeneration) -> bool:
    """An English-only checkpoint: its generation config says so, or (older configs) its vocabulary does."""
    multilingual = getattr(model.generation_config, "is_multilingual", None)
    if multilingual is None:
        return model.config.vocab_size < MULTILINGUAL_VOCAB_SIZE
    return not multilingual


def timestamps_beyond_window(model: WhisperForConditionalGeneration) -> list[int]:
    """Timestamp tokens past the model's input window: none for the 30 s checkpoints (1500 encoder positions,
    one 20 ms timestamp each), the most of them for a small window such as the demo model's 3 s, where
    long-form decoding would otherwise seek past audio on a timestamp the window cannot hold."""
    no_timestamps = getattr(model.generation_config, "no_timestamps_token_id", None)
    if no_timestamps is None:  # an outdated generation config: generate() itself says what is missing
        return []
    first = no_timestamps + 1  # <|0.00|>
    return list(range(first + model.config.max_source_positions + 1, model.config.vocab_size))


@torch.no_grad()
def generate_texts(
    model: WhisperForConditionalGeneration,
    tokenizer: WhisperTokenizer,
    input_features: torch.Tensor,
    long_form: dict[str, Any] | None = None,
    **generate_kwargs: Any,
) -> list[str]:
    """Texts of a batch of Whisper inputs (:func:`asrkit.data.batching.whisper_inputs`).

    Utterances within the input window are decoded as one short-form ``generate()`` call on
    ``input_features``; the rows of ``long_form`` (longer utterances, whole) by transformers' long-form
    sequential decoding: full-length features with their attention mask and ``return_timestamps=True``,
    the window moving on by the timestamps the model predicts, as transformers documents it (timestamps
    past the window are suppressed: see timestamps_beyond_window).
    """
    long_rows = list(long_form["rows"]) if long_form else []
    short_rows = [row for row in range(len(input_features)) if row not in long_rows]
    texts = [""] * len(input_features)
    if short_rows:
        features = input_features if not long_rows else input_features[short_rows]
        generated = model.generate(input_features=features, **generate_kwargs)
        for row, text in zip(short_rows, tokenizer.batch_decode(generated, skip_special_tokens=True), strict=True):
            texts[row] = text
    if long_rows:
        assert long_form is not None
        beyond = timestamps_beyond_window(model)
        if beyond:
            suppress = [*(model.generation_config.suppress_tokens or []), *beyond]
            generate_kwargs = generate_kwargs | {"suppress_tokens": suppress}
        generated = model.generate(
            input_features=long_form["input_features"],
            attention_mask=long_form["attention_mask"],
            return_timestamps=True,
            **generate_kwargs,
        )
        for row, text in zip(long_rows, tokenizer.batch_decode(generated, skip_special_tokens=True), strict=True):
            texts[row] = text
    return texts
