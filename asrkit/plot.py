"""``python -m asrkit.plot <run or sweep dir> [--out DIR]``: PNG curves of a run or a sweep, from its TensorBoard logs.

- A run dir (``<run>/tensorboard``, as ``python -m asrkit`` writes it) gives ``curves.png``: the training loss, and
  the validation WER and CER (or, for pre-training, the validation loss), against optimizer steps.
- A sweep dir (``<sweep>/<job>/``, as ``python -m asrkit -m`` writes it; the rows of its ``summary.csv``) gives
  ``sweep_wer.png``, each job's best validation WER and test WER labelled by its swept overrides, and
  ``sweep_curves.png``, every job's validation WER curve on one plot.

The files go to ``--out`` (default ``<dir>/plots``). matplotlib is the ``plot`` extra; figures are drawn on the Agg
canvas (no display, no pyplot state).

Steps are TensorBoard's, which count the optimizer updates applied to the weights measured: the training loss of
the k-th step is at k - 1 (it is computed before its update), a validation after 200 steps at 200, as its
checkpoint's name says (asrkit logs validation scores at ``global_step``: :mod:`asrkit.models.steps`).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from asrkit.extras import require
from asrkit.sweep import summary_rows

LOSS_CURVES = (("train/loss", "training loss", "-"), ("val/loss", "validation loss", "o-"))
ERROR_CURVES = (("val/wer", "validation WER", "o-"), ("val/cer", "validation CER", "s--"))
DPI = 120


def read_scalars(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of ``<run_dir>/tensorboard`` as (optimizer step, value) pairs in step order; a step logged twice
    (a resumed run repeats the steps after its checkpoint) keeps the value logged last."""
    events = EventAccumulator(str(Path(run_dir) / "tensorboard"), size_guidance={"scalars": 0})  # 0: keep all
    events.Reload()
    scalars = {}
    for tag in events.Tags()["scalars"]:
        by_step = {event.step: event.value for event in sorted(events.Scalars(tag), key=lambda e: e.wall_time)}
        scalars[tag] = sorted(by_step.items())
    return scalars


def _figure(width: float, height: float) -> Any:
    require("matplotlib", "python -m asrkit.plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _step_axis(axes: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    axes.set_xlabel("optimizer step")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 2.5, 5, 10]))
    axes.set_xlim(left=0)
    axes.grid(alpha=0.3)


def _draw(axes: Any, scalars: dict[str, list[tuple[int, float]]], curves: tuple[tuple[str, str, str], ...]) -> None:
    for tag, label, style in curves:
        if scalars.get(tag):
            steps, values = zip(*scalars[tag], strict=True)
            axes.plot(steps, values, style, label=label, markersize=4, linewidth=1.2)
    _step_axis(axes)
    axes.legend()


def _read_metrics(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}  # a run still training, or killed


def _run_title(run_dir: Path) -> str:
    test = _read_metrics(run_dir).get("test") or {}
    if "wer" not in test:
        return str(run_dir)
    return f"{run_dir}: test WER {test['wer']:.1f} %, CER {test['cer']:.1f} % (normalised, best checkpoint)"


def plot_run(run_dir: str | Path, out: str | Path) -> list[Path]:
    """``curves.png`` in ``out``: loss, and validation WER/CER where the run has them, against optimizer steps."""
    run_dir, out = Path(run_dir), Path(out)
    scalars = read_scalars(run_dir)
    if not any(scalars.get(tag) for tag, _, _ in LOSS_CURVES + ERROR_CURVES):
        raise ValueError(f"{run_dir / 'tensorboard'}: no train/loss, val/loss, val/wer or val/cer scalars")
    has_errors = any(scalars.get(tag) for tag, _, _ in ERROR_CURVES)
    figure = _figure(11 if has_errors else 6, 4.2)
    axes = figure.subplots(1, 2 if has_errors else 1, squeeze=False, sharex=True)[0]
    _draw(axes[0], scalars, LOSS_CURVES)
    axes[0].set(ylabel="loss", title="Loss")
    if has_errors:
        _draw(axes[1], scalars, ERROR_CURVES)
        axes[1].set(ylabel="% (normalised)", title="Validation error rates")
        axes[1].set_ylim(bottom=0)
    figure.suptitle(_run_title(run_dir), fontsize=10)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "curves.png"
    figure.savefig(path, dpi=DPI)
    return [path]


def _label(row: dict[str, Any], swept: list[str]) -> str:
    overrides = " ".join(f"{key}={row[key]}" for key in swept) or " ".join(row["overrides"])
    return f"{row['job']}: {overrides}" if overrides else f"job {row['job']}"


def _bars(rows: list[dict[str, Any]], swept: list[str], title: str, path: Path) -> None:
    figure = _figure(10, 1.2 + 0.6 * len(rows))
    axes = figure.subplots()
    positions = range(len(rows))
    for offset, key, label in ((-0.2, "best_val_wer", "best validation WER"), (0.2, "test_wer", "test WER")):
        values = [row[key] for row in rows]
        bars = axes.barh([p + offset for p in positions], [v or 0.0 for v in values], height=0.4, label=label)
        axes.bar_label(bars, labels=["" if v is None else f"{v:.1f}" for v in values])
    for position, row in zip(positions, rows, strict=True):
        if row["status"] != "completed":
            axes.text(0, position, f"  {row['status']}", va="center", color="firebrick")
    axes.set_yticks(list(positions), [textwrap.fill(_label(row, swept), 40) for row in rows])
    axes.invert_yaxis()  # the best job (the summary's first row) on top
    axes.set(xlabel="WER % (normalised)", title=title)
    axes.grid(axis="x", alpha=0.3)
    axes.legend()
    figure.savefig(path, dpi=DPI)


def _curves(sweep_dir: Path, rows: list[dict[str, Any]], swept: list[str], title: str, path: Path) -> bool:
    figure = _figure(9, 5)
    axes = figure.subplots()
    drawn = False
    for row in sorted(rows, key=lambda row: row["job"]):
        job_dir = sweep_dir / row["job"]
        curve = read_scalars(job_dir).get("val/wer") if (job_dir / "tensorboard").is_dir() else None
        if curve:
            steps, values = zip(*curve, strict=True)
            axes.plot(steps, values, "o-", markersize=4, label=textwrap.shorten(_label(row, swept), 60))
            drawn = True
    if drawn:
        _step_axis(axes)
        axes.set(ylabel="validation WER % (normalised)", title=title)
        axes.set_ylim(bottom=0)
        axes.legend(fontsize=8)
        figure.savefig(path, dpi=DPI)
    return drawn


def plot_sweep(sweep_dir: str | Path, out: str | Path) -> list[Path]:
    """``sweep_wer.png`` (each job's best validation and test WER) and ``sweep_curves.png`` (every job's validation
    WER curve, where any job logged one) in ``out``."""
    sweep_dir, out = Path(sweep_dir), Path(out)
    rows, shared, swept = summary_rows(sweep_dir)
    title = textwrap.fill(f"Sweep {sweep_dir}" + (f" ({' '.join(shared)})" if shared else ""), 90)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "sweep_wer.png"]
    _bars(rows, swept, title, written[0])
    if _curves(sweep_dir, rows, swept, title, out / "sweep_curves.png"):
        written.append(out / "sweep_curves.png")
    return written


def plot(directory: str | Path, out: str | Path | None = None) -> list[Path]:
    """The plots of a run dir or a sweep dir (told apart by what they hold) into ``out``; the files written."""
    directory = Path(directory)
    out = Path(out) if out is not None else directory / "plots"
    if not directory.is_dir():
        raise ValueError(f"{directory}: no such directory")
    if (directory / "tensorboard").is_dir():
        return plot_run(directory, out)
    if (directory / ".hydra").is_dir():
        raise ValueError(f"{directory}: a run without TensorBoard logs (tensorboard/); it ran with another logger")
    if summary_rows(directory)[0]:
        return plot_sweep(directory, out)
    raise ValueError(f"{directory}: neither a run dir (tensorboard/) nor a sweep dir (<job>/.hydra/overrides.yaml)")


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(prog="python -m asrkit.plot", description=__doc__.split("\n")[0])
    parser.add_argument("directory", type=Path, help="a run dir (outputs/...) or a sweep dir (multirun/...)")
    parser.add_argument("--out", type=Path, help="where the PNG files go (default: <directory>/plots)")
    args = parser.parse_args(argv)
    try:
        written = plot(args.directory, args.out)
    except (ImportError, ValueError) as error:
        sys.exit(f"python -m asrkit.plot: {error}")
    for path in written:
        print(path)
    return written


if __name__ == "__main__":
    main()
