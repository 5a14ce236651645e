"""``python -m asrkit.evaluate checkpoint=... [data=...] [lang=...]``: error rates and speed of any model.

``checkpoint`` is a hub id (``openai/whisper-small``), a ``save_pretrained`` directory (an asrkit export), or
a Lightning checkpoint of an asrkit run (``.ckpt``), loaded by :mod:`asrkit.recognizer` (which also decodes).

The data is any ``conf/data`` option, read by the training datamodule (same splits, filters, streaming and
mixing) and scored by :func:`asrkit.metrics.error_rates`, as in training. The run directory receives
``metrics.json`` and ``predictions.jsonl`` (``id``: the utterance's index in the evaluated split,
``reference``, ``hypothesis``).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from asrkit import metrics
from asrkit.config import CONFIG_DIR, register_resolvers
from asrkit.data.text import resolve_normalizer
from asrkit.recognizer import load_recognizer

log = logging.getLogger(__name__)


def _left_out_line(left_out: dict[str, Any] | None) -> str:
    if left_out is None:
        return "left out     not counted while streaming (the log has each drop reason's count)"
    reasons = ", ".join(f"{reason}: {count}" for reason, count in left_out["reasons"].items())
    return f"left out     {left_out['utterances']} utterances, {left_out['hours']:.3f} h" + (
        f" ({reasons})" if reasons else ""
    )


def _report(scores: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"checkpoint   {scores['checkpoint']}",
            f"data         {scores['data']}, split {scores['split']}: {scores['num_samples']:.0f} utterances, "
            f"{scores['audio_seconds'] / 3600:.3f} h of audio ({scores['num_skipped']} dropped when read)",
            _left_out_line(scores["left_out"]),
            *([f"decoding     {json.dumps(scores['decoding'], ensure_ascii=False)}"] if "decoding" in scores else []),
            f"WER raw         {scores['wer_raw']:.2f} %",
            f"WER normalised  {scores['wer']:.2f} % ({scores['normalizer']} normaliser)",
            f"CER normalised  {scores['cer']:.2f} %",
            f"speed           {scores['audio_seconds_per_second']:.2f} audio seconds per wall-clock second "
            f"(real-time factor, wall / audio: {scores['real_time_factor']:.4f})",
        ]
    )


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Transcribe one split, print and return the scores; write metrics.json and predictions.jsonl."""
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not cfg.split:
        raise ValueError("split=null: name the split of the data config to evaluate (e.g. split=test)")
    with tempfile.TemporaryDirectory(prefix="asrkit-export-") as workdir:
        recognizer = load_recognizer(cfg, workdir, cfg.evaluation.dtype)
    # one split scored; training's extra validation sets are not read
    datamodule = instantiate(cfg.data, collator=recognizer.collator(), test_split=cfg.split, extra_validation=None)
    datamodule.setup("test")

    predictions: list[tuple[int, str, str]] = []
    audio_seconds, skipped = 0.0, 0
    start, cpu_start = time.perf_counter(), time.process_time()
    for batch in datamodule.test_dataloader(longest_first=True):  # less padding; predictions are put back in order
        batch = datamodule.on_before_batch_transfer(batch, 0)  # what reading dropped (silence...) joins left_out
        hypotheses = recognizer(batch["inputs"], batch["lengths"])
        predictions += zip(batch["indices"], batch["references"], hypotheses, strict=True)
        audio_seconds += batch["audio_seconds"]
        skipped += batch["num_skipped"]
    wall_seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    if not predictions:
        raise ValueError(f"split {cfg.split} of data.path={cfg.data.path}: no utterance was transcribed")
    predictions.sort()

    data_name = f"{cfg.data.path}" + (f" ({cfg.data.name})" if cfg.data.get("name") else "")
    scores: dict[str, Any] = {"checkpoint": str(cfg.checkpoint), "data": data_name, "split": str(cfg.split)}
    normalizer = resolve_normalizer(cfg.evaluation.normalizer, cfg.evaluation.language)
    scores |= {"normalizer": normalizer, "dtype": str(cfg.evaluation.dtype)}
    if recognizer.kind == "ctc":  # greedy, or beam search with its width, hotwords and LM (decoder=beam)
        scores["decoding"] = recognizer.ctc_decoder.summary if recognizer.ctc_decoder else {"decoder": "greedy"}
    unknown = recognizer.processor.tokenizer.unk_token if recognizer.kind == "ctc" else None
    references, hypotheses = [p[1] for p in predictions], [p[2] for p in predictions]
    scores |= metrics.error_rates(references, hypotheses, normalizer, unknown)
    left_out = datamodule.excluded.get("test")  # None when streaming: the stream logs its drop counts
    scores |= {
        "left_out": left_out,  # what the data config's drop rule kept out (eval filters, empty transcripts)
        "num_skipped": skipped,
        "audio_seconds": audio_seconds,
        "wall_seconds": wall_seconds,  # reading, decoding, features and the model, not loading them
        "cpu_seconds": cpu_seconds,  # the same loop's CPU time, all threads of this process (DataLoader workers not)
        "audio_seconds_per_second": audio_seconds / wall_seconds,
        "real_time_factor": wall_seconds / audio_seconds,
    }
    metrics.write_predictions(out / "predictions.jsonl", predictions)
    (out / "metrics.json").write_text(json.dumps(scores, indent=2) + "\n")
    print(_report(scores) + f"\npredictions  {out / 'predictions.jsonl'}")
    return scores


@hydra.main(config_path=CONFIG_DIR, config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


def cli() -> None:
    register_resolvers()
    main()


if __name__ == "__main__":
    cli()
