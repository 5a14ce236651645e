"""python -m asrkit.plot: PNG curves of a real tiny run, and of a sweep dir whose jobs logged real event files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from asrkit import plot
from asrkit.sweep import write_summary
from asrkit.train import train
from tests.conftest import TINY_RUN, compose_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run")
    train(compose_config([*TINY_RUN, "export=false"], run))
    return run


def _assert_a_real_plot(path: Path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        pixels = np.asarray(image.convert("RGB"))
    assert width >= 600 and height >= 300
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 50, "an empty canvas"  # text, axes, antialiased lines and markers
    assert (pixels < 250).any(axis=2).mean() > 0.01  # something drawn on the white


def test_a_run_plots_loss_and_validation_error_rates_against_optimizer_steps(run_dir: Path, tmp_path: Path) -> None:
    scalars = plot.read_scalars(run_dir)
    assert [step for step, _ in scalars["train/loss"]] == [0, 1, 2, 3]  # one per optimizer step, before its update
    assert [step for step, _ in scalars["val/wer"]] == [2, 4]  # after 2 and 4 optimizer steps (val_check_interval 2)
    best = json.loads((run_dir / "metrics.json").read_text())["best_val_wer"]
    assert min(value for _, value in scalars["val/wer"]) == pytest.approx(best)

    assert plot.main([str(run_dir), "--out", str(tmp_path / "plots")]) == [tmp_path / "plots" / "curves.png"]
    _assert_a_real_plot(tmp_path / "plots" / "curves.png")
    assert plot.plot(run_dir) == [run_dir / "plots" / "curves.png"]  # by default beside the run


def _job(sweep: Path, number: int, lr: str, val_wer: list[float], status: str = "completed") -> None:
    """A job dir as python -m asrkit -m leaves it: its overrides, TensorBoard events, and metrics or a failure."""
    job = sweep / str(number)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(f"- experiment=demo\n- optimizer.lr={lr}\n")
    writer = SummaryWriter(str(job / "tensorboard"))
    for step in range(6):
        writer.add_scalar("train/loss", 10.0 / (step + 1), step)
    for step, value in zip((1, 3, 5), val_wer, strict=False):
        writer.add_scalar("val/wer", value, step)
    writer.close()
    if status == "failed":
        (job / "failure.json").write_text(json.dumps({"error": "RuntimeError: boom"}))
        return
    test = {"wer": min(val_wer) + 1, "wer_raw": min(val_wer) + 2, "cer": min(val_wer) / 2}
    metrics = {"global_step": 6, "best_val_wer": min(val_wer), "test": test}
    (job / "metrics.json").write_text(json.dumps(metrics))


def test_a_sweep_plots_each_jobs_wer_and_all_validation_curves(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    _job(sweep, 0, "0.001", [90.0, 40.0, 30.0])
    _job(sweep, 1, "0.002", [80.0, 35.0, 20.0])
    _job(sweep, 2, "0.004", [120.0], status="failed")
    write_summary(sweep)  # summary.csv, as the sweep callback writes it after each job

    written = plot.main([str(sweep), "--out", str(tmp_path / "plots")])
    assert written == [tmp_path / "plots" / "sweep_wer.png", tmp_path / "plots" / "sweep_curves.png"]
    for path in written:
        _assert_a_real_plot(path)


def test_not_a_run_or_a_sweep_and_a_missing_matplotlib_are_one_line_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SystemExit, match=r"neither a run dir \(tensorboard/\) nor a sweep dir") as raised:
        plot.main([str(tmp_path)])
    assert "\n" not in str(raised.value)

    (tmp_path / "tensorboard").mkdir()
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    monkeypatch.setattr(plot, "read_scalars", lambda run_dir: {"train/loss": [(1, 1.0)]})
    with pytest.raises(SystemExit, match=r"needs the matplotlib package .*pip install 'asrkit\[plot\]'"):
        plot.main([str(tmp_path)])
