"""Word and character error rates, raw and normalised, shared by every model family."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jiwer
import torch

from asrkit.data.text import normalize_text


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """WER on the raw strings, WER and CER after :func:`normalize_text`, all in percent.

    Pairs whose reference is empty after normalisation are left out of the normalised scores
    (a WER over an empty reference is undefined); ``num_samples`` counts the pairs that remain.
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    raw = [(r, h) for r, h in zip(references, hypotheses, strict=True) if r.strip()]
    pairs = [(normalize_text(r), normalize_text(h)) for r, h in zip(references, hypotheses, strict=True)]
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


def log_error_rates(module: Any, predictions: list[tuple[int, str, str]], stage: str) -> None:
    """Gather every rank's ``(index, reference, hypothesis)`` triples and log ``{stage}/wer``, ``wer_raw``,
    ``cer`` and ``num_samples`` (every rank logs the same gathered scores)."""
    gathered = gather_predictions(module, predictions)
    if not gathered:
        return
    scores = error_rates([p[1] for p in gathered], [p[2] for p in gathered])
    for name, value in scores.items():
        module.log(f"{stage}/{name}", value, prog_bar=name == "wer")
