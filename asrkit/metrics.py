"""Word and character error rates, raw and normalised, shared by every model family."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jiwer
import torch

from asrkit.data.text import text_normalizer

# What a tokenizer's unknown token (``[UNK]``) in a hypothesis is scored as: a character that matches no
# reference character and, unlike the bracketed token, which the normalisers drop as an annotation, does
# not split the word it stands in ("wor[UNK]d" is one wrong word, not two).
UNKNOWN_CHARACTER = "\ue000"  # a private-use code point: kept by every normaliser


def error_rates(
    references: Sequence[str], hypotheses: Sequence[str], normalizer: str = "basic", unknown: str | None = None
) -> dict[str, float]:
    """WER on the raw strings, WER and CER after the ``normalizer`` (:func:`asrkit.data.text.text_normalizer`:
    ``basic`` or ``english``), all in percent. ``unknown`` is the recogniser's unknown token, if it has one.

    Pairs whose reference is empty after normalisation are left out of the normalised scores
    (a WER over an empty reference is undefined); ``num_samples`` counts the pairs that remain.
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if unknown:
        hypotheses = [h.replace(unknown, UNKNOWN_CHARACTER) for h in hypotheses]
    normalize = text_normalizer(normalizer)
    raw = [(r, h) for r, h in zip(references, hypotheses, strict=True) if r.strip()]
    pairs = [(normalize(r), normalize(h)) for r, h in zip(references, hypotheses, strict=True)]
    pairs = [(r, h) for r, h in pairs if r]
    if not raw or not pairs:
        raise ValueError("error rates need at least one non-empty reference")
    refs, hyps = zip(*pairs, strict=True)
    return {
        "wer_raw": 100.0 * jiwer.wer([r for r, _ in raw], [h for _, h in raw]),
        "wer": 100.0 * jiwer.wer(list(refs), list(hyps)),
        "cer": 100.0 * jiwer.cer(list(refs), list(hyps)),
        "num_samples": float(len(pairs)),
    }


def gather_predictions(module: Any, predictions: list[tuple[int, str, str]]) -> list[tuple[int, str, str]]:
    """All ranks' ``(index, reference, hypothesis)`` triples, each dataset index once, in index order.

    A distributed sampler pads the last batches with repeated examples; keying on the index
    removes those repeats so that every rank scores exactly the evaluation set.
    """
    trainer = getattr(module, "_trainer", None)
    if trainer is not None and trainer.world_size > 1:
        gathered: list[Any] = [None] * trainer.world_size
        torch.distributed.all_gather_object(gathered, predictions)
        predictions = [item for part in gathered for item in part]
    return sorted({index: (index, ref, hyp) for index, ref, hyp in predictions}.values())


def log_error_rates(
    module: Any,
    predictions: list[tuple[int, str, str]],
    stage: str,
    normalizer: str = "basic",
    unknown: str | None = None,
) -> list[tuple[int, str, str]]:
    """Gather every rank's ``(index, reference, hypothesis)`` triples, log ``{stage}/wer``, ``wer_raw``,
    ``cer`` and ``num_samples`` (every rank logs the same gathered scores) and return the triples."""
    gathered = gather_predictions(module, predictions)
    if not gathered:
        return gathered
    scores = error_rates([p[1] for p in gathered], [p[2] for p in gathered], normalizer, unknown)
    for name, value in scores.items():
        module.log(f"{stage}/{name}", value, prog_bar=name == "wer")
    return gathered


def write_predictions(path: str | Path, predictions: Sequence[tuple[int, str, str]]) -> None:
    """A JSON object per line: ``id`` (the utterance's index in its split), ``reference``, ``hypothesis``."""
    with open(path, "w", encoding="utf-8") as f:
        for index, reference, hypothesis in predictions:
            row = {"id": index, "reference": reference, "hypothesis": hypothesis}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
