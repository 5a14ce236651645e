"""The export's model card: what was trained from what, on what, how, its test scores, the command that reproduces
it, and Hub metadata (``model-index``) that huggingface_hub reads back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from huggingface_hub import ModelCard

from asrkit.model_card import write_model_card
from tests.conftest import compose_config

SCORES = {"wer_raw": 16.48, "wer": 15.93, "cer": 12.71, "num_samples": 100.0}


def _export(run_dir: Path, model_type: str, architecture: str, transcribes: bool = True) -> Path:
    """An export dir as far as the card reads it: config.json, and a tokenizer where the model transcribes."""
    export = run_dir / "export"
    export.mkdir(parents=True)
    (export / "config.json").write_text(json.dumps({"model_type": model_type, "architectures": [architecture]}))
    if transcribes:
        (export / "tokenizer_config.json").write_text("{}")
    return export


def _front_matter(card: str) -> dict[str, Any]:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_the_demo_card_says_random_init_and_carries_a_model_index_the_hub_reads(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- experiment=demo\n- optimizer.lr=0.002\n")
    export = _export(run, "whisper", "WhisperForConditionalGeneration")
    cfg = compose_config(["experiment=demo", "optimizer.lr=0.002"], run)
    results = {
        "global_step": 600,
        "best_val_wer": 14.8,
        "test_before": {"wer_raw": 302.2, "wer": 302.2, "cer": 1884.1, "num_samples": 100.0},
        "test": SCORES,
        "evaluation": {"dtype": "float32", "normalizer": "basic"},
        "summary": {  # as asrkit.summary.run_summary makes it
            "optimized_metric": "val/wer",
            "best": {"step": 400, "wer": 14.8, "wer_raw": 15.1, "cer": 11.0, "num_samples": 100.0},
            "wall_seconds": 840.5,
            "samples_per_second": 31.25,
            "samples_seen": 9600.0,
            "audio_hours_seen": 1.9,
            "paths": {"run": "/home/someone/outputs/demo1"},
        },
    }
    card_path = write_model_card(export, cfg, results)
    card = card_path.read_text()

    assert "fine-trained" not in card and "fine-tuned" not in card  # the old card's words for a random-init model
    assert "Whisper (`WhisperForConditionalGeneration`) trained with asrkit from random initialisation" in card
    assert "`audiofolder` of `asrkit/assets/demo_speech` (bundled with asrkit), split `train`" in card
    assert "Validated on split `validation`; tested on split `test` (100 utterances scored)" in card
    assert "- Language: `hi`" in card
    assert "Optimizer steps: 600" in card and "`torch.optim.AdamW`, peak lr 0.002" in card
    assert "`asrkit.optim.warmup_decay` (shape linear, warmup_steps 100" in card
    assert "16 examples per optimizer step" in card and "Precision: 32-true" in card
    assert "| after training | 16.48 | 15.93 | 12.71 |" in card and "basic normaliser" in card
    assert "Best validation `val/wer`: 14.80 at optimizer step 400" in card and "Wall time: 14.0 min" in card
    assert "31.2 examples per second" in card and "1.9 h in 9600 examples" in card
    assert "/home/someone" not in card  # local paths stay out of a published card
    assert "```bash\npython -m asrkit experiment=demo optimizer.lr=0.002\n```" in card

    metadata = _front_matter(card)
    assert metadata["language"] == ["hi"] and metadata["pipeline_tag"] == "automatic-speech-recognition"
    assert "base_model" not in metadata and "datasets" not in metadata  # nothing on the hub to point at
    data = ModelCard.load(card_path).data
    assert data.model_name == "whisper-hi-asrkit"
    assert data.eval_results, "no model-index the hub reads"
    found = {(r.metric_type, r.metric_name): r.metric_value for r in data.eval_results}
    assert found == {
        ("wer", "Test WER (basic normaliser)"): 15.93,
        ("wer", "Test WER (raw)"): 16.48,
        ("cer", "Test CER (basic normaliser)"): 12.71,
    }
    for result in data.eval_results:
        assert result.task_type == "automatic-speech-recognition"
        assert (result.dataset_name, result.dataset_type) == ("demo_speech", "audiofolder")
        assert result.dataset_split == "test"


@pytest.mark.cpu_precision
def test_a_fine_tuned_checkpoint_names_its_base_model_and_hub_dataset(tmp_path: Path) -> None:
    run = tmp_path / "run"
    export = _export(run, "whisper", "WhisperForConditionalGeneration")
    overrides = ["model=whisper_small_en", "lang=en", "hw=cpu", "hub_model_id=someone/whisper-small-en-cv"]
    cfg = compose_config(overrides, run)
    results = {"global_step": 5000, "test": SCORES, "evaluation": {"dtype": "float32", "normalizer": "english"}}
    card_path = write_model_card(export, cfg, results)
    card = card_path.read_text()

    assert "Whisper (`WhisperForConditionalGeneration`) fine-tuned with asrkit from `openai/whisper-small.en`" in card
    assert "`mozilla-foundation/common_voice_11_0` (config `en`), split `train+validation`" in card
    assert "English normaliser" in card and "Test WER (english normaliser)" in card
    assert "Not known: the run dir has no `.hydra/overrides.yaml`" in card  # not started by python -m asrkit
    metadata = _front_matter(card)
    assert metadata["base_model"] == "openai/whisper-small.en"
    assert metadata["datasets"] == ["mozilla-foundation/common_voice_11_0"]
    data = ModelCard.load(card_path).data
    assert data.model_name == "whisper-small-en-cv"  # the name of hub_model_id
    result = data.eval_results[0]
    assert (result.dataset_type, result.dataset_config, result.dataset_split) == (
        "mozilla-foundation/common_voice_11_0",
        "en",
        "test",
    )


def test_a_pre_training_export_keeps_its_own_metrics_and_has_no_model_index(tmp_path: Path) -> None:
    run = tmp_path / "run"
    export = _export(run, "wav2vec2", "Wav2Vec2ForPreTraining", transcribes=False)
    cfg = compose_config(["experiment=demo_pretrain"], run)
    losses = {"before": {"loss": 4.01, "codevector_perplexity": 31.7}, "after": {"loss": 3.58}}
    results = {"global_step": 500, "test_before": losses["before"], "test": losses["after"], "best_val_loss": 3.6}
    card = write_model_card(export, cfg, results).read_text()

    assert "wav2vec2 (`Wav2Vec2ForPreTraining`) pre-trained with asrkit from random initialisation" in card
    assert "| test | codevector_perplexity | loss |" in card and "| after training | - | 3.58 |" in card
    assert "Best validation `val/loss`: 3.60" in card
    metadata = _front_matter(card)
    assert "model-index" not in metadata and "pipeline_tag" not in metadata
    assert ModelCard.load(export / "README.md").data.eval_results is None


@pytest.mark.cpu_precision
def test_a_mix_names_its_sources_and_the_one_whose_test_split_was_scored(tmp_path: Path) -> None:
    run = tmp_path / "run"
    export = _export(run, "whisper", "WhisperForConditionalGeneration")
    cfg = compose_config(["data=mix", "hw=cpu"], run)  # FLEURS trains only (its test_split is null)
    results = {"global_step": 10, "test": SCORES, "evaluation": {"dtype": "float32", "normalizer": "basic"}}
    card_path = write_model_card(export, cfg, results)
    card = card_path.read_text()

    assert (
        "interleaved from `mozilla-foundation/common_voice_11_0` (config `hi`) (70% of examples), "
        "`google/fleurs` (config `hi_in`) (30% of examples)"
    ) in card
    assert _front_matter(card)["datasets"] == ["mozilla-foundation/common_voice_11_0", "google/fleurs"]
    result = ModelCard.load(card_path).data.eval_results[0]
    assert (result.dataset_type, result.dataset_config, result.dataset_split) == (
        "mozilla-foundation/common_voice_11_0",
        "hi",
        "test",
    )
