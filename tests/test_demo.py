"""The README's first command, as a user runs it: the demo must learn (normalised test WER <= 40%)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from asrkit.metrics import error_rates
from tests.conftest import run_asrkit_command, transcribe_demo_test_files


@pytest.mark.slow
@pytest.mark.demo
def test_demo_learns_the_bundled_speech_and_exports_a_working_model(tmp_path: Path) -> None:
    output, results = run_asrkit_command(tmp_path, "experiment=demo")
    assert "test before training: WER" in output and "test after training: WER" in output
    assert results["test_before"]["wer"] > 90, "a random model should not already transcribe"
    assert results["test"]["wer"] <= 40.0, results["test"]
    assert results["test"]["num_samples"] == 100

    references, hypotheses = transcribe_demo_test_files(tmp_path / "export")
    assert error_rates(references, hypotheses)["wer"] <= 50.0  # the export, outside asrkit, transcribes

    # what the run showed: TensorBoard's scalars, predictions tables and clips; the summary; the card
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"tensors": 0, "audio": 0, "scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/grad_norm", "val/wer", "val/wer_raw", "val/cer", "train/skipped_nonfinite"} <= scalars
    assert "throughput/samples_per_second" in scalars and any(tag.startswith("lr-") for tag in scalars)
    assert [event.step for event in events.Scalars("val/wer")] == [200, 400, 600]
    assert [table.step for table in events.Tensors("val/predictions/text_summary")] == [200, 400, 600]
    assert len([tag for tag in events.Tags()["audio"] if tag.startswith("val/audio/")]) == 4
    summary = results["summary"]
    assert summary["best"]["wer"] == min(event.value for event in events.Scalars("val/wer"))
    assert summary["test"] == results["test"] and summary["global_step"] == 600
    assert re.search(rf"best val/wer +{summary['best']['wer']:.2f} at step {summary['best']['step']}:", output)
    assert ModelCard.load(tmp_path / "export" / "README.md").data.eval_results
