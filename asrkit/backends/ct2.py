"""CTranslate2 exports: conversion (``python -m asrkit.export format=ct2``) and the recogniser that runs them.

Whisper converts with ``ctranslate2.converters.TransformersConverter`` and runs with ``ctranslate2.models.Whisper``
on the log-mel features asrkit's collator makes, with the prompt, suppression lists and length of
:class:`asrkit.backends.common.WhisperDecoding` (transformers' greedy ``generate``); the folder also loads in
``faster_whisper.WhisperModel`` (it reads ``tokenizer.json`` and ``preprocessor_config.json`` beside the model).

wav2vec2 CTC: CTranslate2 4.x implements one layout only, hard-coded in its C++ encoder (``Wav2Vec2Encoder``): the
7-layer layer-norm front end of strides 5,2,2,2,2,2,2, a 128-wide positional convolution in 16 groups and the
pre-norm ("stable layer norm") transformer of wav2vec2-large-lv60 / XLS-R. Other layouts convert without
complaint but compute something else, so :func:`check_ctc_layout` refuses them; HuBERT and WavLM have no
converter. It takes no attention mask: utterances of one length run together, unpadded (as asrkit's greedy
decoder runs a model that padding would change), and the logits are decoded greedily with the export's tokenizer.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from asrkit.backends.common import (
    WhisperDecoding,
    ctc_decoder,
    exported_settings,
    load_processor,
    make_collator,
    refuse_long_form,
    same_length_groups,
    transcribe_waveforms,
)
from asrkit.extras import require
from asrkit.longform import decode_ctc

log = logging.getLogger(__name__)

QUANTIZATIONS = ("int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16")
CTC_LAYOUT = {  # what CTranslate2's C++ Wav2Vec2Encoder hard-codes (src/layers/wav2vec2.cc)
    "model_type": "wav2vec2",
    "feat_extract_norm": "layer",
    "do_stable_layer_norm": True,
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
    "conv_bias": True,
    "hidden_act": "gelu",
    "feat_extract_activation": "gelu",
}


def check_ctc_layout(config: Any) -> None:
    """One-line refusal of a CTC model CTranslate2 cannot compute (see the module docstring)."""
    found = {key: getattr(config, key, None) for key in CTC_LAYOUT}
    found["conv_stride"] = list(found["conv_stride"] or [])
    wrong = {key: value for key, value in found.items() if value != CTC_LAYOUT[key]}
    if wrong:
        details = ", ".join(f"{key}={value} (needs {CTC_LAYOUT[key]})" for key, value in wrong.items())
        raise ValueError(
            f"format=ct2: CTranslate2 runs only the wav2vec2-large-lv60 CTC layout; this model has {details}: "
            "use format=onnx"
        )


def convert(model: Any, source: str, output: Path, quantization: str | None) -> None:
    """Convert the PyTorch model at ``source`` (hub id or folder) into ``output``."""
    require("ctranslate2", "format=ct2")
    from ctranslate2.converters import TransformersConverter

    if quantization is not None and quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization={quantization}: format=ct2 takes null | {' | '.join(QUANTIZATIONS)}")
    if model.config.model_type == "whisper":
        converter: Any = TransformersConverter(source)
    else:
        check_ctc_layout(model.config)
        converter = _ctc_converter(source, model.config.vocab_size)
    converter.convert(str(output), quantization=quantization, force=True)


def _ctc_converter(source: str, vocab_size: int) -> Any:
    """A converter that gives CTranslate2 the CTC head's tokens, in id order.

    The stock one registers the tokenizer's whole vocabulary, whose added tokens (``<s>``, ``</s>`` of a default
    Wav2Vec2CTCTokenizer) may lie past the head, and its size check refuses that. asrkit decodes the logits with
    the tokenizer saved beside the model, so only the count matters to it.
    """
    from ctranslate2.converters import TransformersConverter

    class HeadVocabulary:
        def __init__(self, tokenizer: Any) -> None:
            self.tokens = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))

        def get_vocab(self) -> list[str]:
            return [token if token is not None else f"<unused{i}>" for i, token in enumerate(self.tokens)]

    class CTCConverter(TransformersConverter):
        def load_tokenizer(self, tokenizer_class: Any, model_name_or_path: str, **kwargs: Any) -> Any:
            return HeadVocabulary(super().load_tokenizer(tokenizer_class, model_name_or_path, **kwargs))

    return CTCConverter(source)


class CT2Recognizer:
    """A CTranslate2 export: model inputs from asrkit's collator in, texts out (see the module docstring)."""

    def __init__(
        self,
        folder: str,
        collator_class: type,
        device: str = "auto",
        language: str | None = None,
        task: str | None = "transcribe",
        num_beams: int | None = None,
        generation_max_length: int | None = None,
        decoding: Any = None,
    ) -> None:
        require("ctranslate2", f"checkpoint={folder} (a CTranslate2 export)")
        import ctranslate2

        self.folder, self.collator_class = folder, collator_class
        spec = json.loads((Path(folder) / "config.json").read_text())
        self.whisper = "suppress_ids_begin" in spec or "lang_ids" in spec  # WhisperSpec's config keys
        self.kind = "seq2seq" if self.whisper else "ctc"
        if device == "auto":
            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        self.device = device.split(":")[0]
        index = int(device.split(":")[1]) if ":" in device else 0
        model_class = ctranslate2.models.Whisper if self.whisper else ctranslate2.models.Wav2Vec2
        # CTranslate2's default is 4 threads whatever the machine; torch and onnxruntime use the cores there are
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 4
        self.model = model_class(folder, device=self.device, device_index=index, intra_threads=threads)
        self.processor = load_processor(folder)
        if self.whisper:
            positions = exported_settings(folder).get("max_target_positions", 448)  # 448: every OpenAI Whisper
            self.decoding = WhisperDecoding.read(folder, positions, language, task, num_beams, generation_max_length)
        vocab_size = exported_settings(folder).get("vocab_size") or len(self.processor.tokenizer)
        self.ctc_decoder = ctc_decoder(decoding, self.kind, self.processor.tokenizer, vocab_size, folder)
        log.info("checkpoint %s: CTranslate2 %s on %s", folder, self.kind, self.device)

    @property
    def sampling_rate(self) -> int:
        return self.processor.feature_extractor.sampling_rate

    def collator(self) -> Any:
        return make_collator(self.collator_class, self.processor, self.whisper)

    def transcribe(self, waveforms: list[np.ndarray], batch_size: int) -> list[str]:
        return transcribe_waveforms(self, waveforms, batch_size)

    @property
    def seconds_per_frame(self) -> float:
        """CTC: seconds per output frame; the only layout CTranslate2 runs (check_ctc_layout) strides 320 samples."""
        return 320 / self.sampling_rate

    def ctc_logits(self, inputs: dict[str, Any], lengths: list[int]) -> list[np.ndarray]:
        """Each utterance's logits (frames x symbols), heard alone: CTranslate2's encoder takes no attention mask."""
        import ctranslate2

        rows: list[Any] = [None] * len(lengths)
        for group in same_length_groups(lengths):
            audio = inputs["input_values"][group, : lengths[group[0]]].numpy()
            logits = self.model.encode(ctranslate2.StorageView.from_array(audio[:, None, :]), to_cpu=True)
            for i, row in zip(group, np.asarray(logits), strict=True):
                rows[i] = row
        return rows

    def __call__(self, inputs: dict[str, Any], lengths: list[int]) -> list[str]:
        """Texts of a batch of model inputs; ``lengths`` are the audio lengths in samples, before padding."""
        if not inputs:
            return []
        import ctranslate2

        if not self.whisper:
            return decode_ctc(self.processor.tokenizer, self.ctc_logits(inputs, lengths), self.ctc_decoder)
        refuse_long_form(inputs, self.folder)
        features = ctranslate2.StorageView.from_array(np.ascontiguousarray(inputs["input_features"].numpy()))
        languages: list[Any] = [None] * len(lengths)
        if self.decoding.detect_language:
            encoded = self.model.encode(features, to_cpu=self.device == "cpu")
            tokenizer = self.processor.tokenizer  # each utterance's languages, likeliest first
            detected = self.model.detect_language(encoded)
            languages = [tokenizer.convert_tokens_to_ids(ranked[0][0]) for ranked in detected]
        decoding = self.decoding
        prompt_length = len(decoding.prompt) + decoding.detect_language
        results = self.model.generate(
            features,
            [decoding.prompt_with(language) for language in languages],
            beam_size=decoding.num_beams,
            # CTranslate2 decodes min(max_length / 2, max_length - prompt) tokens after the prompt
            max_length=max(2 * decoding.max_new_tokens, decoding.max_new_tokens + prompt_length),
            suppress_tokens=list(decoding.suppress) or [],
            suppress_blank=True,  # the converted config's suppress_ids_begin: the begin_suppress_tokens
        )
        ids = [result.sequences_ids[0] for result in results]
        return self.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
