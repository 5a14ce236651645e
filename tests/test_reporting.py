"""What a run shows while it runs and at its end: the step progress bar, the validation report in the log and in
TensorBoard, W&B (offline) and MLflow (a local SQLite store), read back from what each wrote, and the summary."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import soundfile
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from asrkit.config import asset_path
from asrkit.progress import StepProgressBar
from asrkit.train import train
from tests.conftest import TINY_RUN, compose_config, logged_messages
from tests.wandb_records import history

DEMO_VALIDATION = Path(asset_path("demo_speech")) / "validation"
VALIDATIONS = [2, 4]  # TINY_RUN: 4 optimizer steps, validating every 2


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A tiny run logging to TensorBoard, W&B (offline) and MLflow, with the progress bar on: its dir, its
    metrics.json, what it printed to stdout and what it logged."""
    run_dir = tmp_path_factory.mktemp("run")
    overrides = [o for o in TINY_RUN if o != "trainer.enable_progress_bar=false"]
    overrides += ["logger=[tensorboard,wandb,mlflow]", "logger.wandb.offline=true"]
    printed = io.StringIO()
    with logged_messages() as messages, pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setenv("WANDB_SILENT", "true")
        train(compose_config(overrides, run_dir))
    return SimpleNamespace(
        dir=run_dir, metrics=json.loads((run_dir / "metrics.json").read_text()), stdout=printed.getvalue(), log=messages
    )


@pytest.fixture(scope="module")
def events(run: SimpleNamespace) -> EventAccumulator:
    accumulator = EventAccumulator(str(run.dir / "tensorboard"), size_guidance={"tensors": 0, "audio": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def _validation_rows(count: int) -> list[dict[str, str]]:
    with open(DEMO_VALIDATION / "metadata.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))[:count]


def _scalars(events: EventAccumulator, tag: str) -> dict[int, float]:
    return {event.step: event.value for event in events.Scalars(tag)}


def test_tensorboard_holds_the_scalars_of_training_and_validation(events: EventAccumulator) -> None:
    tags = set(events.Tags()["scalars"])
    expected = {"train/loss", "train/grad_norm", "train/skipped_nonfinite", "val/wer", "val/wer_raw", "val/cer"}
    assert expected <= tags
    assert {"throughput/samples_per_second", "throughput/audio_seconds_per_second"} <= tags
    assert any(tag.startswith("lr-") for tag in tags), tags
    assert sorted(_scalars(events, "val/wer")) == VALIDATIONS
    assert all(value > 0 for value in _scalars(events, "train/grad_norm").values())


def test_tensorboard_holds_a_predictions_table_at_every_validation(events: EventAccumulator) -> None:
    tables = events.Tensors("val/predictions/text_summary")
    assert [table.step for table in tables] == VALIDATIONS
    for table in tables:  # the same first 8 validation utterances each time, with that validation's predictions
        lines = table.tensor_proto.string_val[0].decode().splitlines()
        assert lines[0] == "| index | reference | prediction |"
        cells = [line.strip("|").split(" | ") for line in lines[2:]]
        assert [(int(c[0]), c[1].strip()) for c in cells] == [(n, r["text"]) for n, r in enumerate(_validation_rows(8))]


def test_tensorboard_holds_validation_clips_with_references_at_the_first_validation(events: EventAccumulator) -> None:
    clips = sorted(tag for tag in events.Tags()["audio"] if tag.startswith("val/audio/"))
    assert clips == [f"val/audio/{n}" for n in range(4)]
    for n, tag in enumerate(clips):
        (event,) = events.Audio(tag)  # logged once, at the first validation
        assert event.step == VALIDATIONS[0] and event.sample_rate == 16000
        decoded, rate = soundfile.read(io.BytesIO(event.encoded_audio_string))
        original, _ = soundfile.read(DEMO_VALIDATION / _validation_rows(4)[n]["file_name"])
        assert rate == 16000 and len(decoded) == len(original)
        (reference,) = events.Tensors(f"{tag}/reference/text_summary")
        assert reference.tensor_proto.string_val[0].decode() == _validation_rows(4)[n]["text"]


def test_the_log_prints_each_validation_with_three_reference_prediction_pairs(run: SimpleNamespace) -> None:
    reports = [line for line in run.log if line.startswith("validation at step")]
    assert [int(re.search(r"step (\d+)", line).group(1)) for line in reports] == VALIDATIONS
    assert all(re.search(r"WER [\d.]+ % \(raw [\d.]+ %\), CER [\d.]+ %", line) for line in reports)
    assert sum("reference:" in line for line in run.log) == 3 * len(VALIDATIONS)
    assert sum("prediction:" in line for line in run.log) == 3 * len(VALIDATIONS)


def test_one_progress_bar_counts_the_job_in_optimizer_steps(run: SimpleNamespace) -> None:
    assert "4/4 steps" in run.stdout and "Epoch " not in run.stdout
    last_bar = [part for part in re.split(r"[\r\n]", run.stdout) if "4/4 steps" in part][-1]
    assert re.search(r"loss=[\d.]+", last_bar) and re.search(r"lr=[\d.e+-]+", last_bar), last_bar
    assert "samples/s=" in last_bar


def test_a_resumed_bar_starts_at_the_checkpoint_step() -> None:
    bar = StepProgressBar()
    printed = io.StringIO()
    trainer = SimpleNamespace(
        global_step=6, estimated_stepping_batches=10, progress_bar_metrics={}, optimizers=[], callbacks=[]
    )
    with contextlib.redirect_stdout(printed):
        bar.on_train_start(trainer, None)
        trainer.global_step = 7
        bar.on_train_batch_end(trainer, None, None, None, 0)
        bar.on_train_end(trainer, None)
    assert "6/10 steps" in printed.getvalue() and "7/10 steps" in printed.getvalue()


def test_wandb_offline_run_holds_the_same_scalars_table_and_audio(run: SimpleNamespace, events) -> None:
    (run_file,) = run.dir.glob("wandb/offline-run-*/run-*.wandb")
    rows = history(run_file)
    wer = {row["trainer/global_step"]: row["val/wer"] for row in rows if "val/wer" in row}
    assert wer == pytest.approx(_scalars(events, "val/wer"))
    assert any("train/grad_norm" in row for row in rows)
    tables = [row for row in rows if row.get("val/predictions/_type") == "table-file"]
    assert len(tables) == len(VALIDATIONS) and all(row["val/predictions/nrows"] == 8 for row in tables)
    table = json.loads((run_file.parent / "files" / tables[-1]["val/predictions/path"]).read_text())
    assert table["columns"] == ["index", "reference", "prediction"] and len(table["data"]) == 8
    (audio,) = [row for row in rows if row.get("val/audio/_type") == "audio"]
    assert audio["val/audio/count"] == 4 and audio["val/audio/sampleRates"] == [16000] * 4


def test_mlflow_store_holds_the_same_scalars_tables_and_clips(run: SimpleNamespace, events) -> None:
    client = MlflowClient(f"sqlite:///{run.dir / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "asrkit"]
    (mlflow_run,) = client.search_runs([experiment.experiment_id])
    wer = {m.step: m.value for m in client.get_metric_history(mlflow_run.info.run_id, "val/wer")}
    assert wer == pytest.approx(_scalars(events, "val/wer"))
    artifacts = run.dir / "mlartifacts" / mlflow_run.info.run_id / "artifacts"
    assert sorted(p.name for p in (artifacts / "val_predictions").iterdir()) == [
        f"step_{step:07d}.md" for step in VALIDATIONS
    ]
    assert len(list((artifacts / "val_audio").glob("*.wav"))) == 4
    assert float(mlflow_run.data.params["optimizer/lr"]) > 0  # the hyper-parameters too


def test_the_printed_summary_and_metrics_json_agree(run: SimpleNamespace, events) -> None:
    summary = run.metrics["summary"]
    wer = _scalars(events, "val/wer")
    best_step = min(wer, key=lambda step: (wer[step], step))
    assert summary["best"]["step"] == best_step and summary["best"]["wer"] == pytest.approx(wer[best_step])
    assert summary["test"] == run.metrics["test"] and summary["global_step"] == 4
    assert summary["samples_seen"] == 4 * 16 and summary["audio_hours_seen"] > 0
    assert summary["peak_memory"]["rss_gib"] > 0.1 and summary["wall_seconds"] > 0
    assert Path(summary["paths"]["export"]).is_dir() and Path(summary["paths"]["logs (tensorboard)"]).is_dir()
    start = run.log.index("summary of the run")
    printed = dict(line.strip().split("  ", 1) for line in run.log[start + 1 : start + 20] if line.startswith("  "))
    printed = {name.strip(): value.strip() for name, value in printed.items()}
    assert printed["best val/wer"].startswith(f"{summary['best']['wer']:.2f} at step {best_step}:")
    assert f"WER {summary['test']['wer']:.2f} %" in printed["test"]
    assert f"CER {summary['test']['cer']:.2f} %" in printed["test"]
    assert f"({summary['wall_seconds']:.1f} s)" in printed["wall time"]
    assert printed["samples/s"].startswith(f"{summary['samples_per_second']:.2f}")
    assert printed["audio seen"] == f"{summary['audio_hours_seen']:.4f} h in 64 utterances"
    assert printed["peak memory"].startswith(f"{summary['peak_memory']['rss_gib']:.2f} GiB")
    assert printed["export"] == summary["paths"]["export"]


@pytest.mark.parametrize(("logger", "package"), [("wandb", "wandb"), ("mlflow", "mlflow")])
def test_a_tracker_whose_package_is_missing_is_a_one_line_error_naming_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logger: str, package: str
) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # what `import wandb` meets where it is not installed
    with pytest.raises(ImportError, match=rf"^logger\.{logger} needs the {package} package .*asrkit\[{logger}\]") as e:
        train(compose_config([*TINY_RUN, f"logger=[tensorboard,{logger}]"], tmp_path))
    assert "\n" not in str(e.value)
    assert not (tmp_path / "checkpoints").exists()  # stopped before anything ran
