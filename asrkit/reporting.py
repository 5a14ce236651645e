"""What a validation shows: its scores and a few reference/prediction pairs in the log, a table of sample
predictions in every logger, and at the first validation a few clips to listen to, with their references.

Scalars reach every Lightning logger through ``module.log``. Text and audio have no common logger API, so
:func:`log_text_table` and :func:`log_audio_clips` write them in each tracker's own form: TensorBoard's text
and audio summaries, W&B tables and ``wandb.Audio``, MLflow text and WAV artifacts. A logger of another kind
gets the scalars only, which the log says once.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import soundfile
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger

log = logging.getLogger(__name__)

TABLE_TAG = "val/predictions"
AUDIO_TAG = "val/audio"


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or "*(empty)*"


def scores_text(scores: dict[str, float]) -> str:
    """``WER 12.34 % (raw 13.00 %), CER 5.67 %``; other metrics (pre-training) by name."""
    if "wer" in scores:
        return f"WER {scores['wer']:.2f} % (raw {scores['wer_raw']:.2f} %), CER {scores['cer']:.2f} %"
    return ", ".join(f"{name} {value:.4g}" for name, value in scores.items() if name not in ("step", "num_samples"))


def scores_by_set(scores: dict[str, float]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Validation scores split into the primary set's (``wer``, ...) and each extra set's (``<name>/wer``, ...:
    ``data.extra_validation``), by name."""
    primary = {key: value for key, value in scores.items() if "/" not in key}
    extra: dict[str, dict[str, float]] = {}
    for key, value in scores.items():
        if "/" in key:
            name, metric = key.split("/", 1)
            extra.setdefault(name, {})[metric] = value
    return primary, dict(sorted(extra.items()))


def markdown_table(rows: list[tuple[int, str, str]]) -> str:
    """``| index | reference | prediction |`` rows, as TensorBoard's text plugin renders Markdown."""
    lines = ["| index | reference | prediction |", "|---|---|---|"]
    lines += [f"| {index} | {_markdown_cell(ref)} | {_markdown_cell(hyp)} |" for index, ref, hyp in rows]
    return "\n".join(lines)


def log_text_table(logger: Logger, rows: list[tuple[int, str, str]], step: int) -> bool:
    """Sample predictions of one validation as a table in ``logger``; False for a logger kind with no text."""
    if isinstance(logger, TensorBoardLogger):
        logger.experiment.add_text(TABLE_TAG, markdown_table(rows), global_step=step)
    elif isinstance(logger, WandbLogger):
        data = [[index, ref, hyp] for index, ref, hyp in rows]
        logger.log_text(key=TABLE_TAG, columns=["index", "reference", "prediction"], data=data, step=step)
    elif isinstance(logger, MLFlowLogger):
        text = markdown_table(rows) + "\n"
        logger.experiment.log_text(logger.run_id, text, f"val_predictions/step_{step:07d}.md")
    else:
        return False
    return True


def log_audio_clips(logger: Logger, clips: list[dict[str, Any]], step: int) -> bool:
    """Validation clips (``audio``, ``sampling_rate``, ``reference``, ``index``) in ``logger``; False for a logger
    kind with no audio."""
    if isinstance(logger, TensorBoardLogger):
        for clip in clips:
            audio = np.clip(np.asarray(clip["audio"], dtype=np.float32), -1.0, 1.0)
            tag = f"{AUDIO_TAG}/{clip['index']}"
            logger.experiment.add_audio(tag, audio[None, :], global_step=step, sample_rate=clip["sampling_rate"])
            logger.experiment.add_text(f"{tag}/reference", _markdown_cell(clip["reference"]), global_step=step)
    elif isinstance(logger, WandbLogger):
        logger.log_audio(
            key=AUDIO_TAG,
            audios=[np.asarray(clip["audio"], dtype=np.float32) for clip in clips],
            step=step,
            sample_rate=[clip["sampling_rate"] for clip in clips],
            caption=[f"{clip['index']}: {clip['reference']}" for clip in clips],
        )
    elif isinstance(logger, MLFlowLogger):
        with tempfile.TemporaryDirectory(prefix="asrkit-clips-") as folder:
            lines = ["| index | file | reference |", "|---|---|---|"]
            for clip in clips:
                name = f"{clip['index']:06d}.wav"
                soundfile.write(Path(folder) / name, clip["audio"], clip["sampling_rate"])
                lines.append(f"| {clip['index']} | {name} | {_markdown_cell(clip['reference'])} |")
            (Path(folder) / "references.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
            logger.experiment.log_artifacts(logger.run_id, folder, "val_audio")
    else:
        return False
    return True


def finish_runs(loggers: list[Logger]) -> None:
    """End the tracker runs that stay open after Lightning finalises them: a W&B run (wandb.finish), which the
    next job of a ``-m`` sweep in the same process would otherwise log into."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger._experiment is not None:
            logger.experiment.finish()


class ValidationReport(L.Callback):
    """After every validation of a fit: its scores and ``print_pairs`` reference/prediction pairs in the log,
    the first ``table_rows`` predictions (the same utterances each time, by index) as a table in every logger,
    and at the first validation ``audio_clips`` validation clips with their references.

    ``history`` keeps the scores of every validation with its optimizer step (saved in checkpoints, so a
    resumed run keeps the earlier ones): the end-of-run summary finds the best step there.
    """

    def __init__(self, print_pairs: int = 3, table_rows: int = 8, audio_clips: int = 4) -> None:
        if min(print_pairs, table_rows, audio_clips) < 0:
            raise ValueError("validation_report: print_pairs, table_rows and audio_clips must be >= 0")
        self.print_pairs, self.table_rows, self.audio_clips = print_pairs, table_rows, audio_clips
        self.history: list[dict[str, float]] = []
        self.clips_logged = False
        self._unsupported: set[str] = set()

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "clips_logged": self.clips_logged}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history, self.clips_logged = list(state["history"]), state["clips_logged"]

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        step = trainer.global_step
        scores = {key[4:]: float(value) for key, value in trainer.callback_metrics.items() if key.startswith("val/")}
        self.history = [entry for entry in self.history if entry["step"] != step] + [{"step": step, **scores}]
        if not trainer.is_global_zero:
            return
        predictions = (getattr(module, "predictions", None) or {}).get("val") or []
        self._print(step, scores, predictions)
        for logger in trainer.loggers:
            if predictions and self.table_rows and not log_text_table(logger, predictions[: self.table_rows], step):
                self._say_unsupported(logger)
        if predictions and self.audio_clips and not self.clips_logged:
            clips = trainer.datamodule.examples("validation", self.audio_clips) if trainer.datamodule else []
            for logger in trainer.loggers:
                if clips and not log_audio_clips(logger, clips, step):
                    self._say_unsupported(logger)
            self.clips_logged = True

    def _print(self, step: int, scores: dict[str, float], predictions: list[tuple[int, str, str]]) -> None:
        primary, extra = scores_by_set(scores)
        log.info("validation at step %d: %s", step, scores_text(primary))
        for name, set_scores in extra.items():  # data.extra_validation's sets
            log.info("  %s: %s", name, scores_text(set_scores))
        for index, reference, prediction in predictions[: self.print_pairs]:
            log.info("  %d  reference:  %s", index, reference)
            log.info("  %s  prediction: %s", " " * len(str(index)), prediction)

    def _say_unsupported(self, logger: Logger) -> None:
        kind = type(logger).__name__
        if kind not in self._unsupported:
            self._unsupported.add(kind)
            log.warning("%s logs scalars only: sample predictions and audio clips go to TensorBoard, W&B, MLflow", kind)
