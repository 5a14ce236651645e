"""The README's first command, as a user runs it: the demo must learn (normalised test WER <= 40%)."""

from __future__ import annotations

from pathlib import Path

import pytest

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
