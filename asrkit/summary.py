"""The end-of-run summary: one table in the log, and the same numbers under ``summary`` in ``metrics.json``.

The best validation score and the step it was reached at (from :class:`asrkit.reporting.ValidationReport`'s
history), the test scores, the wall time of this process, steady-state samples/s, the audio trained on
(all of the run, a resumed one included), the peak memory, and where the export and the logs are.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger

from asrkit.reporting import scores_by_set, scores_text

GIB = 1024**3


def peak_memory(trainer: L.Trainer) -> dict[str, float | None]:
    """Peak resident memory of this process (not its DataLoader workers) and the accelerator's peak allocation,
    in GiB (None where there is no accelerator memory to read)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    rss = kib / GIB if sys.platform == "darwin" else kib / 1024**2
    device = trainer.strategy.root_device
    allocated = None
    if device.type == "cuda":
        allocated = torch.cuda.max_memory_allocated(device) / GIB
    elif device.type == "hpu":
        allocated = torch.hpu.max_memory_allocated(device) / GIB
    return {"rss_gib": rss, "device_gib": allocated}


def log_locations(loggers: list[Logger]) -> dict[str, str]:
    """Where each logger wrote: TensorBoard's event dir, W&B's run dir, MLflow's tracking URI and run id."""
    places = {}
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            places["tensorboard"] = str(logger.log_dir)
        elif isinstance(logger, WandbLogger):
            places["wandb"] = str(logger.experiment.dir)
        elif isinstance(logger, MLFlowLogger):
            places["mlflow"] = f"{logger._tracking_uri} (run {logger.run_id})"
        else:
            places[type(logger).__name__] = str(logger.log_dir or logger.save_dir or "")
    return places


def best_validation(history: list[dict[str, float]], metric: str) -> dict[str, float] | None:
    """The validation with the lowest ``metric`` (``val/wer``) and all its scores, its ``step`` included."""
    key = metric.removeprefix("val/")
    scored = [entry for entry in history if key in entry]
    return min(scored, key=lambda entry: (entry[key], entry["step"])) if scored else None


def run_summary(
    results: dict[str, Any],
    history: list[dict[str, float]],
    metric: str,
    seen: dict[str, float],
    wall_seconds: float,
    memory: dict[str, float | None],
    paths: dict[str, Any],
) -> dict[str, Any]:
    """The summary's numbers (what :func:`summary_lines` prints and ``metrics.json`` keeps)."""
    return {
        "optimized_metric": metric,
        "best": best_validation(history, metric),
        "test": results.get("test"),
        "global_step": results["global_step"],
        "wall_seconds": wall_seconds,
        "samples_per_second": results.get("throughput", {}).get("samples_per_second"),
        "samples_seen": seen.get("samples", 0.0),
        "audio_hours_seen": seen.get("audio_seconds", 0.0) / 3600,
        "peak_memory": memory,
        "paths": paths,
    }


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min {seconds:02d} s" if hours else f"{minutes} min {seconds:02d} s"


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The summary as the log prints it: one ``name  value`` row per line."""
    best, test, memory = summary["best"], summary["test"], summary["peak_memory"]
    speed = summary["samples_per_second"]
    metric = summary["optimized_metric"]
    best_text, extra = "no validation ran", {}
    if best:
        primary, extra = scores_by_set(best)
        best_text = f"{best[metric.removeprefix('val/')]:.2f} at step {int(best['step'])}: {scores_text(primary)}"
    test_text = f"{scores_text(test)} on {int(test.get('num_samples', 0))} utterances" if test else "no test split"
    memory_text = f"{memory['rss_gib']:.2f} GiB resident (main process)"
    if memory["device_gib"] is not None:
        memory_text += f", {memory['device_gib']:.2f} GiB on the device"
    rows = [
        ("optimizer steps", f"{summary['global_step']}"),
        (f"best {metric}", best_text),
        *((f"  {name} then", scores_text(scores)) for name, scores in extra.items()),  # data.extra_validation
        ("test", test_text),
        ("wall time", f"{_duration(summary['wall_seconds'])} ({summary['wall_seconds']:.1f} s)"),
        ("samples/s", f"{speed:.2f} (steady state, all ranks)" if speed else "not measured (too few steps)"),
        ("audio seen", f"{summary['audio_hours_seen']:.4f} h in {int(summary['samples_seen'])} utterances"),
        ("peak memory", memory_text),
        *((name, str(place)) for name, place in summary["paths"].items()),
    ]
    width = max(len(name) for name, _ in rows)
    return ["summary of the run", *(f"  {name.ljust(width)}  {value}" for name, value in rows)]


def run_paths(out: Path, exported: bool, loggers: list[Logger]) -> dict[str, Any]:
    """The run dir's parts a user opens next: the export, the checkpoints, metrics.json and each logger's place."""
    paths: dict[str, Any] = {"run": str(out)}
    if exported:
        paths["export"] = str(out / "export")
    paths["checkpoints"] = str(out / "checkpoints")
    paths["metrics"] = str(out / "metrics.json")
    return paths | {f"logs ({name})": place for name, place in log_locations(loggers).items()}
