"""The CTC demo as a user runs it: normalised test WER <= 25%, CER <= 8%, and an export that transcribes."""

from __future__ import annotations

from pathlib import Path

import pytest

from asrkit.metrics import error_rates
from tests.conftest import run_asrkit_command, transcribe_demo_test_files


@pytest.mark.slow
@pytest.mark.demo
def test_demo_ctc_learns_the_bundled_speech_and_exports_a_working_model(tmp_path: Path) -> None:
    output, results = run_asrkit_command(tmp_path, "experiment=demo_ctc", f"model.vocab_cache_dir={tmp_path}/vocab")
    assert "test before training: WER" in output and "test after training: WER" in output
    assert results["test_before"]["wer"] > 90, "a random model should not already transcribe"
    assert results["test"]["wer"] <= 25.0 and results["test"]["cer"] <= 8.0, results["test"]
    assert results["test"]["num_samples"] == 100

    references, hypotheses = transcribe_demo_test_files(tmp_path / "export")
    assert error_rates(references, hypotheses)["wer"] <= 35.0  # the export, outside asrkit, transcribes


@pytest.mark.slow
def test_a_shortened_demo_ctc_learns(tmp_path: Path) -> None:
    """CI's guard on the demo command (the whole demo is `-m demo`): half its steps already learns.

    CTC first learns to output blanks only (CER 100 %); on 2026-12-03 the 600-step demo's validation CER was
    14 % at step 300, and a run cut to 200 steps was still on that plateau at its best checkpoint."""
    output, results = run_asrkit_command(
        tmp_path,
        "experiment=demo_ctc",
        f"model.vocab_cache_dir={tmp_path}/vocab",
        "trainer.max_steps=300",
        "trainer.val_check_interval=150",
        "callbacks.periodic_checkpoint.every_n_train_steps=150",
        "test_before_training=false",
        "export=false",
    )
    assert results["test"]["cer"] <= 40.0, results["test"]  # from 100 % (blanks) or worse
