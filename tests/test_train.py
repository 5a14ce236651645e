"""Whole runs of the real loop on the tiny random-init Whisper and the bundled speech."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import soundfile
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import pipeline

from asrkit.config import asset_path
from asrkit.train import _optimized, train
from tests.conftest import TINY_RUN, compose_config


def _logged_steps(run_dir: Path, tag: str) -> list[int]:
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return [event.step for event in events.Scalars(tag)]


def test_short_run_writes_checkpoints_metrics_and_an_export_that_transcribes(tmp_path: Path) -> None:
    train(compose_config(TINY_RUN, tmp_path))

    checkpoints = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints and any(name.startswith("best-step") for name in checkpoints)
    results = json.loads((tmp_path / "metrics.json").read_text())
    assert results["global_step"] == 4
    assert set(results["test"]) == {"wer_raw", "wer", "cer", "num_samples"} and results["test"]["num_samples"] == 8
    assert results["best_val_wer"] >= 0 and Path(results["best_checkpoint"]).is_file()
    assert results["evaluation"] == {"dtype": "float32", "normalizer": "basic"}  # lang=hi
    assert results["left_out"]["test"] == {"utterances": 0, "hours": 0.0, "reasons": {}}
    heard = [json.loads(line) for line in (tmp_path / "test_predictions.jsonl").read_text().splitlines()]
    assert [row["id"] for row in heard] == list(range(8))
    assert all(set(row) == {"id", "reference", "hypothesis"} for row in heard)
    assert results["throughput"]["samples_per_second"] > 0
    assert results["throughput"]["audio_seconds_per_second"] > 0
    assert _logged_steps(tmp_path, "train/loss")  # TensorBoard got the training curve
    assert "val/wer" in EventAccumulator(str(tmp_path / "tensorboard")).Reload().Tags()["scalars"]

    export = tmp_path / "export"
    card = (export / "README.md").read_text()
    assert "Optimizer steps: 4" in card and "after training" in card and "basic normaliser" in card
    recognizer = pipeline("automatic-speech-recognition", model=str(export))
    audio, rate = soundfile.read(Path(asset_path("demo_speech")) / "test" / "test_0000.flac", dtype="float32")
    text = recognizer({"raw": audio, "sampling_rate": rate})["text"]
    assert isinstance(text, str)
    assert recognizer.model.generation_config.language == "hi"


def test_resume_continues_at_the_saved_global_step(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    train(compose_config(TINY_RUN + ["export=false", "data.test_split=null"], first))
    last = first / "checkpoints" / "last.ckpt"
    assert last.is_file()

    resumed = TINY_RUN + ["export=false", "data.test_split=null", "trainer.max_steps=7", f"resume={last}"]
    train(compose_config(resumed, second))
    assert json.loads((second / "metrics.json").read_text())["global_step"] == 7
    steps = _logged_steps(second, "train/loss")
    assert steps and min(steps) >= 4, f"the resumed run logged steps {steps}: it restarted from scratch"


def test_metrics_count_each_drop_reason_of_each_split(tmp_path: Path) -> None:
    """data/dropped/<split>/<reason> in metrics.json: unreadable, empty and over-long examples, counted apart."""
    data = tmp_path / "speech"
    shutil.copytree(asset_path("demo_speech"), data)
    with open(data / "train" / "metadata.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    (data / "train" / rows[0]["file_name"]).write_bytes(b"not audio" * 100)
    rows[0]["duration"] = ""  # so its header is read: it has none
    rows[1]["text"] = ""
    rows[2]["duration"] = "4.5"  # the demo window is 3 s
    with open(data / "train" / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    run = tmp_path / "run"
    train(compose_config(TINY_RUN + [f"data.data_dir={data}", "export=false", "trainer.max_steps=2"], run))
    dropped = json.loads((run / "metrics.json").read_text())["data"]["dropped"]
    assert dropped["train"] == {"unreadable audio": 1, "empty transcript": 1, "duration outside [0.0, 3.0] s": 1}
    assert dropped["validation"] == dropped["test"] == {}


def test_optimized_metric_picks_what_train_returns_and_a_wrong_name_names_the_key(tmp_path: Path) -> None:
    short = TINY_RUN + ["export=false", "data.test_split=null", "trainer.max_steps=2"]
    best = train(compose_config([*short, "optimized_metric=val/cer"], tmp_path / "cer"))
    results = json.loads((tmp_path / "cer" / "metrics.json").read_text())
    assert best == results["best_val_cer"] and "best_val_wer" not in results  # the best checkpoint kept CER too

    with pytest.raises(ValueError, match=r"^optimized_metric='val/wre': .*no such metric.*'val/wer'") as error:
        train(compose_config([*short, "optimized_metric=val/wre"], tmp_path / "typo"))
    assert "\n" not in str(error.value)


def test_optimized_metric_must_be_what_the_best_checkpoint_kept() -> None:
    assert _optimized({"best_checkpoint": "best.ckpt", "best_val_loss": 3.5}, "val/loss") == 3.5
    assert _optimized({"best_checkpoint": None}, "val/wer") is None  # no validation ran
    with pytest.raises(ValueError, match=r"optimized_metric='val/cer': the best checkpoint kept best_val_wer"):
        _optimized({"best_checkpoint": "best.ckpt", "best_val_wer": 20.0}, "val/cer")
