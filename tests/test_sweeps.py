"""Sweeps: `python -m asrkit -m ...` job dirs, the summary (asrkit/sweep.py), failed jobs, Optuna search."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from asrkit.__main__ import _require_sweeper
from asrkit.sweep import write_summary
from tests.conftest import TINY_RUN

# TINY_RUN, shorter still: one validation and four test utterances per job, no periodic checkpoint, no export.
SHORTER = {
    "trainer.max_steps": "2",
    "data.max_eval_samples": "4",
    "model.generation_max_length": "16",
    "callbacks.periodic_checkpoint": "null",
    "export": "false",
}
SWEEP_RUN = [o for o in TINY_RUN if not o.startswith(tuple(SHORTER))] + [f"{k}={v}" for k, v in SHORTER.items()]


def _sweep(overrides: list[str], sweep_dir: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "asrkit", "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"]
    env = os.environ | {"HYDRA_FULL_ERROR": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)


def _rows(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "summary.csv", newline="") as file:
        return list(csv.DictReader(file))


def _fake_job(sweep_dir: Path, job: str, overrides: list[str], **files: dict) -> None:
    (sweep_dir / job / ".hydra").mkdir(parents=True)
    (sweep_dir / job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    for name, content in files.items():
        (sweep_dir / job / f"{name}.json").write_text(json.dumps(content))


def test_summary_ranks_jobs_by_validation_wer_and_shows_what_was_swept(tmp_path: Path) -> None:
    def metrics(val: float, test: float) -> dict:
        return {"best_val_wer": val, "global_step": 4, "test": {"wer": test, "wer_raw": test, "cer": 1.0}}

    _fake_job(tmp_path, "0", ["experiment=demo", "optimizer.lr=1e-3"], metrics=metrics(30.0, 31.0))
    _fake_job(tmp_path, "1", ["experiment=demo", "optimizer.lr=2e-3"], failure={"error": "ValueError: bad"})
    _fake_job(tmp_path, "2", ["experiment=demo", "optimizer.lr=3e-3"])  # still running, or killed
    _fake_job(tmp_path, "10", ["experiment=demo", "optimizer.lr=4e-3"], metrics=metrics(20.0, 22.0))

    write_summary(tmp_path)
    rows = _rows(tmp_path)
    assert [(r["job"], r["status"], r["optimizer.lr"]) for r in rows] == [
        ("10", "completed", "4e-3"),
        ("0", "completed", "1e-3"),
        ("1", "failed", "2e-3"),
        ("2", "incomplete", "3e-3"),
    ]
    assert rows[0]["best_val_wer"] == "20.0" and rows[0]["test_wer"] == "22.0" and rows[0]["global_step"] == "4"
    assert rows[2]["error"] == "ValueError: bad" and rows[2]["best_val_wer"] == ""
    assert "experiment" not in rows[0]  # shared by every job: listed once above the table
    markdown = (tmp_path / "summary.md").read_text()
    assert "`experiment=demo`" in markdown
    assert "| 10 | completed | 4e-3 | 20.00 | 22.00 |" in markdown


@pytest.mark.slow
def test_grid_sweep_writes_a_job_dir_per_combination_and_a_summary(tmp_path: Path) -> None:
    done = _sweep([*SWEEP_RUN, "optimizer=adamw,adafactor", "optimizer.lr=1e-3,3e-3"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    jobs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert jobs == ["0", "1", "2", "3"]
    assert all((tmp_path / job / "metrics.json").is_file() for job in jobs)
    rows = _rows(tmp_path)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"completed"}
    combinations = {(r["optimizer"], r["optimizer.lr"]) for r in rows}
    assert combinations == {(o, lr) for o in ("adamw", "adafactor") for lr in ("0.001", "0.003")}
    wers = [float(r["best_val_wer"]) for r in rows]
    assert wers == sorted(wers)
    for row in rows:  # each row is that job's own metrics.json
        metrics = json.loads((tmp_path / row["job"] / "metrics.json").read_text())
        assert float(row["test_cer"]) == pytest.approx(metrics["test"]["cer"])
        assert int(row["global_step"]) == metrics["global_step"] == 2
    table = [line for line in (tmp_path / "summary.md").read_text().splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 4  # header and one row per job


@pytest.mark.slow
def test_a_failing_job_is_marked_failed_and_the_sweep_goes_on(tmp_path: Path) -> None:
    # the second job raises inside training, when the module builds its schedule
    done = _sweep([*SWEEP_RUN, "optimizer.scheduler.shape=bogus,linear"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    rows = _rows(tmp_path)
    assert [(r["job"], r["status"]) for r in rows] == [("1", "completed"), ("0", "failed")]
    assert "optimizer.scheduler.shape='bogus'" in rows[1]["error"]
    failure = json.loads((tmp_path / "0" / "failure.json").read_text())
    assert "Traceback" in failure["traceback"] and "build_scheduler" in failure["traceback"]
    assert (tmp_path / "1" / "metrics.json").is_file()


def test_a_single_run_still_raises(tmp_path: Path) -> None:
    # a single run stops at the same error, and writes no failure marker
    command = [sys.executable, "-m", "asrkit", "experiment=demo", "lang=xx", f"hydra.run.dir={tmp_path}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "lang='xx'" in done.stderr
    assert not (tmp_path / "failure.json").exists()


@pytest.mark.slow
def test_optuna_search_composes_and_runs_two_trials(tmp_path: Path) -> None:
    search = ["hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.n_startup_trials=2"]
    done = _sweep(["hparams_search=demo_optuna", *SWEEP_RUN, *search], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    rows = _rows(tmp_path)
    assert len(rows) == 2 and {r["status"] for r in rows} == {"completed"}
    assert all(3e-4 <= float(r["optimizer.lr"]) <= 3e-3 for r in rows)
    results = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(min(float(r["best_val_wer"]) for r in rows))


def test_hparams_search_without_the_optuna_plugin_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "hydra_plugins.hydra_optuna_sweeper", None)  # as if not installed
    _require_sweeper(["-m", "optimizer.lr=1e-3,2e-3"])  # a plain sweep does not need it
    with pytest.raises(SystemExit, match=r"pip install 'asrkit\[sweep\]'"):
        _require_sweeper(["-m", "hparams_search=demo_optuna", "experiment=demo"])
