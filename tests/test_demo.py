"""The README's first command, as a user runs it: the demo must learn (normalised test WER <= 40%)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from asrkit.metrics import error_rates
from tests.conftest import transcribe_demo_test_files


@pytest.mark.slow
@pytest.mark.demo
def test_demo_learns_the_bundled_speech_and_exports_a_working_model(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "asrkit",
        "experiment=demo",
        f"hydra.run.dir={tmp_path}",
        "trainer.enable_progress_bar=false",
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    output = run.stdout + run.stderr  # Hydra's console log goes to stdout
    assert run.returncode == 0, output[-3000:]
    assert "test before training: WER" in output and "test after training: WER" in output

    results = json.loads((tmp_path / "metrics.json").read_text())
    assert results["test_before"]["wer"] > 90, "a random model should not already transcribe"
    assert results["test"]["wer"] <= 40.0, results["test"]
    assert results["test"]["num_samples"] == 100

    references, hypotheses = transcribe_demo_test_files(tmp_path / "export")
    assert error_rates(references, hypotheses)["wer"] <= 50.0  # the export, outside asrkit, transcribes
