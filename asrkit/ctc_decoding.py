"""CTC decoders over per-utterance logits: greedy (as training), or pyctcdecode's beam search with hotwords and a
KenLM n-gram language model (``decoder=beam``, ``beam.*``, ``lm.*`` of :mod:`asrkit.evaluate` and
:mod:`asrkit.transcribe`).

A decoder takes one array of logits or log-probabilities per utterance, *already cut to that utterance's frames*
(frames x symbols: :func:`asrkit.models.ctc.utterance_logits` of a batch, or the logits of a long recording
stitched from chunks), so every producer of CTC outputs shares it. The beam decoder's alphabet is the tokenizer's
vocabulary in id order with the substitutions ``Wav2Vec2ProcessorWithLM`` checks for (:func:`ctc_labels`): the
pad token is the blank, the word delimiter ``|`` a space, the unknown token pyctcdecode's ``⁇`` (written back as
the tokenizer's own unknown token, so scores treat it as in greedy decoding).

``lm.path``: ``auto`` uses the checkpoint's own ``language_model/`` (an export written by
``python -m asrkit.lm ... export=...``) when it has one, else no LM; ``null`` never uses one; a file is an ARPA
or KenLM binary model (a binary one's words are read from ``unigrams.txt`` beside it, as ``asrkit.lm`` writes).
``lm.alpha``/``lm.beta`` null: the LM's own weights (the export's ``attrs.json``, else pyctcdecode's 0.5 / 1.5).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from asrkit.extras import require
from asrkit.models.ctc import greedy_decode

log = logging.getLogger(__name__)

DECODERS = ("greedy", "beam")
LM_DIR = "language_model"  # where Wav2Vec2ProcessorWithLM (pyctcdecode's save_to_dir) keeps the LM of an export
LM_FILES = ("attrs.json", "unigrams.txt")  # in LM_DIR beside the KenLM model file
UNK_LABEL = "⁇"  # pyctcdecode's unknown token


@dataclass(frozen=True)
class DecodingOptions:
    """The decoder settings of a config: ``decoder``, ``beam.{width,hotwords,hotword_weight}``, ``lm.*``."""

    decoder: str
    width: int
    hotwords: tuple[str, ...]
    hotword_weight: float
    lm_path: str | None
    alpha: float | None
    beta: float | None

    @classmethod
    def from_config(cls, cfg: DictConfig) -> DecodingOptions:
        """Read and check the keys; a wrong one is a one-line error naming it."""
        beam, lm = cfg.beam, cfg.lm
        options = cls(
            decoder=str(cfg.decoder),
            width=beam.width,
            hotwords=tuple(str(word) for word in beam.hotwords or ()),
            hotword_weight=float(beam.hotword_weight),
            lm_path=None if lm.path is None else str(lm.path),
            alpha=None if lm.alpha is None else float(lm.alpha),
            beta=None if lm.beta is None else float(lm.beta),
        )
        if options.decoder not in DECODERS:
            raise ValueError(f"decoder={options.decoder}: one of {', '.join(DECODERS)}")
        if not isinstance(options.width, int) or options.width < 1:
            raise ValueError(f"beam.width={options.width}: a whole number of beams, at least 1")
        if options.decoder == "greedy":  # lm.path=auto (the default) just finds nothing to use
            beam_only = {"beam.hotwords": options.hotwords, "lm.alpha": options.alpha, "lm.beta": options.beta}
            beam_only["lm.path"] = options.lm_path if options.lm_path != "auto" else None
            given = [key for key, value in beam_only.items() if value not in (None, ())]
            if given:
                raise ValueError(f"{given[0]} is used by beam search only: add decoder=beam")
        return options

    def check_model(self, kind: str, checkpoint: str) -> None:
        """Beam search over CTC outputs only: a sequence-to-sequence model has its own (``num_beams``)."""
        if self.decoder == "beam" and kind != "ctc":
            raise ValueError(
                f"decoder=beam: beam search over CTC outputs, but checkpoint={checkpoint} is a sequence-to-sequence "
                "model: use num_beams (and decoder=greedy)"
            )


def ctc_labels(tokenizer: Any, vocab_size: int) -> list[str]:
    """pyctcdecode's alphabet for output ids ``0..vocab_size-1``: the pad token (the CTC blank) is ``""``, the word
    delimiter ``" "``, the unknown token ``⁇``, every other token as the tokenizer writes it."""
    vocabulary = {index: token for token, index in tokenizer.get_vocab().items()}
    missing = [index for index in range(vocab_size) if index not in vocabulary]
    if missing:
        raise ValueError(f"the model has {vocab_size} outputs, but its tokenizer has no symbol for id {missing[0]}")
    special = {
        tokenizer.pad_token: "",
        getattr(tokenizer, "word_delimiter_token", None): " ",
        tokenizer.unk_token: UNK_LABEL,
    }
    return [special.get(vocabulary[index], vocabulary[index]) for index in range(vocab_size)]


def _log_probs(logits: torch.Tensor | np.ndarray) -> np.ndarray:
    return torch.log_softmax(torch.as_tensor(logits).detach().float().cpu(), dim=-1).numpy()


@dataclass(frozen=True)
class LanguageModelFiles:
    """A KenLM model and what pyctcdecode needs beside it."""

    model: Path
    unigrams: list[str] | None  # None: read from the ARPA file (a binary's words are otherwise unknown)
    alpha: float
    beta: float


def language_model_files(options: DecodingOptions, checkpoint: str | None) -> LanguageModelFiles | None:
    """The language model ``lm.path`` names (see the module's docstring), or None for beam search without one."""
    from pyctcdecode.constants import DEFAULT_ALPHA, DEFAULT_BETA

    weights = {"alpha": DEFAULT_ALPHA, "beta": DEFAULT_BETA}
    if options.lm_path is None or options.decoder != "beam":
        model = None
    elif options.lm_path == "auto":
        folder = Path(checkpoint or "") / LM_DIR
        model = next((p for p in sorted(folder.glob("*")) if p.name not in LM_FILES), None) if folder.is_dir() else None
        if model is not None:
            attrs = json.loads((folder / "attrs.json").read_text()) if (folder / "attrs.json").is_file() else {}
            weights |= {key: attrs[key] for key in weights if key in attrs}
            log.info("lm.path=auto: the language model of the checkpoint, %s", model)
    else:
        model = Path(options.lm_path)
        if not model.is_file():
            raise FileNotFoundError(f"lm.path={options.lm_path}: no such file (an ARPA or KenLM binary n-gram model)")
    if model is None:
        for key in ("alpha", "beta"):
            if getattr(options, key) is not None:
                raise ValueError(f"lm.{key}={getattr(options, key)} but there is no language model: set lm.path")
        return None
    unigrams_file = model.parent / "unigrams.txt"
    unigrams = None
    if model.suffix != ".arpa" and unigrams_file.is_file():
        unigrams = [word for word in unigrams_file.read_text(encoding="utf-8").split("\n") if word]
    weights |= {key: getattr(options, key) for key in weights if getattr(options, key) is not None}
    return LanguageModelFiles(model, unigrams, float(weights["alpha"]), float(weights["beta"]))


class CTCDecoder:
    """Texts of per-utterance CTC logits (frames x symbols each): greedy, or pyctcdecode's beam search."""

    def __init__(
        self, tokenizer: Any, vocab_size: int, options: DecodingOptions, checkpoint: str | None = None
    ) -> None:
        self.tokenizer = tokenizer
        self.options = options
        self.language_model = language_model_files(options, checkpoint)
        self.beam_search = None
        if options.decoder == "beam":
            require("pyctcdecode", "decoder=beam")
            if self.language_model is not None:
                require("kenlm", "lm.path")
            from pyctcdecode import build_ctcdecoder

            lm = self.language_model
            self.beam_search = build_ctcdecoder(
                ctc_labels(tokenizer, vocab_size),
                kenlm_model_path=None if lm is None else str(lm.model),
                unigrams=None if lm is None else lm.unigrams,
                **({} if lm is None else {"alpha": lm.alpha, "beta": lm.beta}),
            )
            described = "no language model" if lm is None else f"{lm.model} (alpha {lm.alpha}, beta {lm.beta})"
            log.info("CTC beam search: %d beams, %d hotwords, %s", options.width, len(options.hotwords), described)

    @property
    def summary(self) -> dict[str, Any]:
        """What decodes (for metrics.json): the decoder, and for beam search its width, hotwords and LM."""
        if self.beam_search is None:
            return {"decoder": "greedy"}
        lm = self.language_model
        return {
            "decoder": "beam",
            "width": self.options.width,
            "hotwords": list(self.options.hotwords),
            "hotword_weight": self.options.hotword_weight,
            "lm": None if lm is None else {"path": str(lm.model), "alpha": lm.alpha, "beta": lm.beta},
        }

    def __call__(self, logits: Sequence[torch.Tensor | np.ndarray]) -> list[str]:
        """One text per utterance of ``logits`` (each already cut to the utterance's frames)."""
        if self.beam_search is None:
            return greedy_decode(self.tokenizer, logits)
        return [text for text, _ in self.timed(logits, seconds_per_frame=0.0)]

    def timed(
        self, logits: Sequence[torch.Tensor | np.ndarray], seconds_per_frame: float
    ) -> list[tuple[str, list[dict[str, Any]]]]:
        """Beam search only: each utterance's text and its words timed by the best beam's frames
        (``{"start", "end", "word"}``, frames times ``seconds_per_frame``), for subtitles."""
        if self.beam_search is None:
            raise ValueError("CTCDecoder.timed: greedy decoding is timed by asrkit.longform.ctc_words")
        unknown = self.tokenizer.unk_token or UNK_LABEL
        results = []
        for row in logits:  # the best beam, as transformers' pipeline and Wav2Vec2ProcessorWithLM take it
            text, _, word_frames, *_ = self.beam_search.decode_beams(
                _log_probs(row),
                beam_width=self.options.width,
                hotwords=list(self.options.hotwords) or None,
                hotword_weight=self.options.hotword_weight,
            )[0]
            words = [
                {
                    "start": start * seconds_per_frame,
                    "end": end * seconds_per_frame,
                    "word": word.replace(UNK_LABEL, unknown),
                }
                for word, (start, end) in word_frames
            ]
            results.append((text.replace(UNK_LABEL, unknown), words))
        return results
