"""What the exported-model runtimes share: the marker of an asrkit export, Whisper's decoding settings read as
transformers reads them, the collator and batch loop of :class:`asrkit.recognizer.Recognizer`, and the refusals
they both make."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from transformers import AutoProcessor, GenerationConfig
from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

EXPORT_MARKER = "asrkit_export.json"  # written by asrkit.export: source, format, family, quantization, versions, graphs


@dataclass(frozen=True)
class WhisperDecoding:
    """Greedy Whisper decoding as ``WhisperForConditionalGeneration.generate`` does it for audio within the window.

    ``prompt``: ``<|startoftranscript|>``, then (multilingual) the language and task tokens, then
    ``<|notimestamps|>``; without a language it is detected per utterance (``language_ids``) and put in
    ``prompt[1]``. ``max_new_tokens``: generate's ``max_length`` counts only the generated tokens (Whisper's
    ``_set_max_new_tokens_and_length`` adds the prompt), capped by the decoder's positions; ``<|endoftext|>``
    counts among them. ``suppress`` is masked at every step, ``begin_suppress`` at the first generated one.
    """

    prompt: tuple[int, ...]
    detect_language: bool
    language_ids: tuple[int, ...]
    suppress: tuple[int, ...]
    begin_suppress: tuple[int, ...]
    eos: int
    max_new_tokens: int
    num_beams: int

    @classmethod
    def read(
        cls,
        folder: str | Path,
        max_target_positions: int,
        language: str | None,
        task: str | None,
        num_beams: int | None,
        generation_max_length: int | None,
    ) -> WhisperDecoding:
        """Settings from the export's generation_config.json, overridden by evaluate/transcribe's options."""
        generation = GenerationConfig.from_pretrained(folder)
        prompt = [generation.decoder_start_token_id]
        language_ids = tuple(sorted((generation.lang_to_id or {}).values()))
        multilingual = getattr(generation, "is_multilingual", bool(language_ids))
        forced = dict(generation.forced_decoder_ids or [])  # old checkpoints: {position: token}
        if multilingual:
            language = language or getattr(generation, "language", None)
            if language is not None:
                prompt.append(_language_token(generation.lang_to_id, language))
            elif forced.get(1) is not None:
                prompt.append(forced[1])
            task = task or getattr(generation, "task", None) or "transcribe"
            prompt.append(generation.task_to_id[task])
        elif language not in (None, "en") or task not in (None, "transcribe"):
            raise ValueError(f"language={language}, task={task}: the export is an English-only Whisper")
        prompt.append(generation.no_timestamps_token_id)
        detect = multilingual and len(prompt) == 3
        max_length = generation_max_length or generation.max_length or max_target_positions
        prompt_length = len(prompt) + detect
        return cls(
            prompt=tuple(prompt),
            detect_language=detect,
            language_ids=language_ids,
            suppress=tuple(generation.suppress_tokens or ()),
            begin_suppress=tuple(generation.begin_suppress_tokens or ()),
            eos=int(generation.eos_token_id),
            max_new_tokens=min(max_length, max_target_positions - prompt_length),
            num_beams=int(num_beams or generation.num_beams or 1),
        )

    def prompt_with(self, language_id: int | None) -> list[int]:
        """The prompt of one utterance: the detected language's token in place when there was none."""
        if not self.detect_language or language_id is None:
            return list(self.prompt)
        return [self.prompt[0], language_id, *self.prompt[1:]]


def _language_token(lang_to_id: dict[str, int], language: str) -> int:
    """``hi``, ``hindi`` or ``<|hi|>`` -> the token id, as transformers accepts a language."""
    code = language.strip("<|>").lower()
    code = TO_LANGUAGE_CODE.get(code, code)
    token = f"<|{code}|>"
    if code not in LANGUAGES or token not in lang_to_id:
        raise ValueError(f"language={language}: not one of this Whisper's languages ({', '.join(sorted(lang_to_id))})")
    return lang_to_id[token]


def refuse_long_form(inputs: dict[str, Any], folder: str | Path) -> None:
    """Audio past Whisper's window needs transformers' long-form decoding, which the exported runtimes lack."""
    if inputs.get("long_form"):
        raise ValueError(
            f"checkpoint={folder}: {len(inputs['long_form']['rows'])} utterance(s) longer than Whisper's input "
            "window; exported Whisper models decode audio within the window only (evaluate the PyTorch export)"
        )


def exported_settings(folder: str | Path) -> dict[str, Any]:
    """What asrkit.export recorded in the folder's marker (empty for a folder converted elsewhere)."""
    marker = Path(folder) / EXPORT_MARKER
    return json.loads(marker.read_text()) if marker.is_file() else {}


def load_processor(folder: str | Path) -> Any:
    """The processor saved beside the converted model (feature extractor and tokenizer of the source)."""
    return AutoProcessor.from_pretrained(folder)


def make_collator(collator_class: type, processor: Any, whisper: bool) -> Any:
    """The collator :class:`asrkit.recognizer.Recognizer` makes (``collator_class``, its FeatureCollator, handed
    in by :func:`asrkit.recognizer.load_recognizer`): Whisper's window features, or CTC waveforms."""
    extractor = processor.feature_extractor
    window = float(extractor.chunk_length) if whisper else None
    return collator_class(extractor, processor.tokenizer, window, waveforms=not whisper)


def transcribe_waveforms(recognizer: Any, waveforms: list[np.ndarray], batch_size: int) -> list[str]:
    """The text of each waveform, ``batch_size`` per call of ``recognizer`` (a PyTorch one or an export's)."""
    collator, texts = recognizer.collator(), []
    for start in range(0, len(waveforms), batch_size):
        chunk = waveforms[start : start + batch_size]
        batch = collator([{"index": i, "audio": audio, "reference": ""} for i, audio in enumerate(chunk)])
        texts += [text.strip() for text in recognizer(batch["inputs"], batch["lengths"])]
    return texts


def ctc_decoder(decoding: Any, kind: str, tokenizer: Any, vocab_size: int, folder: str | Path) -> Any:
    """``decoder=beam`` over an export's CTC logits (:class:`asrkit.ctc_decoding.CTCDecoder`), None for greedy; a
    Whisper export refuses it, as a PyTorch one does (``decoding``: the evaluate/transcribe config's options)."""
    if decoding is None:
        return None
    decoding.check_model(kind, str(folder))
    if kind != "ctc" or decoding.decoder != "beam":
        return None
    from asrkit.ctc_decoding import CTCDecoder

    return CTCDecoder(tokenizer, vocab_size, decoding, str(folder))


def same_length_groups(lengths: list[int]) -> list[list[int]]:
    """Rows of a batch grouped by audio length: what a runtime without an attention mask runs unpadded."""
    return [[i for i, n in enumerate(lengths) if n == length] for length in sorted(set(lengths))]
